package sagemaker

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
)

// SageMaker's own hyperparameters (the "sagemaker_" keys the SageMaker
// Python SDK adds), by what sagefit makes of them. None changes the job;
// those that ask for something are named in a warning, not dropped.
var (
	// sdkRecords describe the job (its name, region, estimator class):
	// nothing to do.
	sdkRecords = []string{"sagemaker_job_name", "sagemaker_region", "sagemaker_estimator_class_name",
		"sagemaker_estimator_module", "sagemaker_instance_type", "sagemaker_container_log_level"}
	// sdkScript name a framework estimator's training script.
	sdkScript = []string{"sagemaker_program", "sagemaker_submit_directory", "sagemaker_requirements"}
	// sdkDistribution ask a framework container for its way of training on
	// several processes or hosts, or for the Training Compiler.
	sdkDistribution = []string{"sagemaker_mpi_enabled", "sagemaker_mpi_num_of_processes_per_host",
		"sagemaker_mpi_custom_mpi_options", "sagemaker_additional_mpi_options", "sagemaker_use_mpi",
		"sagemaker_parameter_server_enabled", "sagemaker_multi_worker_mirrored_strategy_enabled",
		"sagemaker_distributed_dataparallel_enabled", "sagemaker_distributed_dataparallel_custom_mpi_options",
		"sagemaker_torch_distributed_enabled", "sagemaker_pytorch_ddp_enabled", "sagemaker_pytorch_xla_multi_worker_enabled",
		"sagemaker_process_slots_per_host", "sagemaker_num_processes", "sagemaker_distribution_instance_groups",
		"sagemaker_training_compiler_enabled", "sagemaker_training_compiler_debug_mode"}
)

// readVariables are the SM_ environment variables sagefit reads (the
// sagemaker-training toolkit's names; SageMaker itself sets none in a
// training image, a job's Environment may): a name ending in _ stands for
// every name it begins.
var readVariables = []string{"SM_HOSTS", "SM_CURRENT_HOST", "SM_HP_", "SM_CHANNELS", "SM_CHANNEL_",
	"SM_MODEL_DIR", "SM_OUTPUT_DATA_DIR", "SM_NUM_GPUS", "SM_NUM_CPUS"}

// Warnings says, a sentence each, what the job's configuration asks for
// that sagefit does not do or that replaces another setting: SM_HP_
// variables over hyperparameters.json, SageMaker's own hyperparameters
// (FrameworkWarnings), SM_ variables it does not read.
func (e *Env) Warnings() []string {
	out := slices.Concat(e.Overrides, e.FrameworkWarnings())
	if e.debugHook != "" {
		out = append(out, e.debugHook)
	}
	if len(e.unreadVariables) > 0 {
		out = append(out, fmt.Sprintf("environment variables %s are not read: sagefit reads SM_HOSTS, SM_CURRENT_HOST, SM_HP_<NAME>, SM_CHANNELS, SM_CHANNEL_<NAME>, SM_MODEL_DIR, SM_OUTPUT_DATA_DIR, SM_NUM_GPUS and SM_NUM_CPUS, and the rest of the job from %s",
			strings.Join(e.unreadVariables, ", "), filepath.Join(e.Paths.Base, "input", "config")))
	}
	return out
}

// unreadSM lists the SM_ variables of environ that sagefit does not read.
func unreadSM(environ []string) []string {
	var out []string
	for _, kv := range environ {
		k, _, _ := cutEnv(kv)
		if !strings.HasPrefix(k, "SM_") || slices.Contains(out, k) {
			continue
		}
		if !slices.ContainsFunc(readVariables, func(r string) bool {
			if prefix, ok := strings.CutSuffix(r, "_"); ok && prefix != "" {
				return strings.HasPrefix(k, r) && len(k) > len(r) // SM_HP_ alone names nothing
			}
			return k == r
		}) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// defaultLogLevel is the sagemaker_container_log_level the SDK sends when
// none is asked for (Python's logging.INFO).
const defaultLogLevel = 20

// FrameworkWarnings says, a sentence each, which of SageMaker's own
// hyperparameters (FrameworkParams) ask for something sagefit does not do:
// a training script to run, another way to distribute training, a log
// level, or a name it does not know. Records of the job (its name, region,
// estimator) and requests turned off (false, 0, empty) say nothing.
func (e *Env) FrameworkWarnings() []string {
	var out, unknown []string
	for _, name := range slices.Sorted(maps.Keys(e.FrameworkParams)) {
		v := e.FrameworkParams[name]
		raw := e.shown(name, v)
		switch {
		case name == "sagemaker_container_log_level":
			if f, ok := v.(float64); !ok || f != defaultLogLevel {
				out = append(out, fmt.Sprintf("hyperparameter %q is %s, and sagefit has no log levels: it writes its epoch lines to stdout and its warnings to stderr", name, raw))
			}
		case slices.Contains(sdkRecords, name):
		case slices.Contains(sdkScript, name):
			if !off(v) {
				out = append(out, fmt.Sprintf("hyperparameter %q is %s, and sagefit runs no training script: it trains the model exported with sagefit.export, as its hyperparameters say; the script (a framework estimator's entry_point) does not run", name, raw))
			}
		case slices.Contains(sdkDistribution, name):
			if !off(v) {
				out = append(out, fmt.Sprintf("hyperparameter %q is %s, and sagefit does not use it: every host of the job trains in sagefit's own all-reduce ring (one process per GPU: sagefit_processes_per_host)", name, raw))
			}
		default:
			unknown = append(unknown, fmt.Sprintf("%q", name))
		}
	}
	switch len(unknown) {
	case 0:
	case 1:
		out = append(out, fmt.Sprintf("hyperparameter %s is not a SageMaker setting sagefit knows, and is not read", unknown[0]))
	default:
		out = append(out, fmt.Sprintf("hyperparameters %s are not SageMaker settings sagefit knows, and are not read", strings.Join(unknown, ", ")))
	}
	return out
}

// off says whether a setting's value asks for nothing: false, zero, an
// empty string, list or object, or null.
func off(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case bool:
		return !v
	case float64:
		return v == 0
	case string:
		return v == "" || strings.EqualFold(v, "false")
	case []any:
		return len(v) == 0
	case map[string]any:
		return len(v) == 0
	}
	return false
}
