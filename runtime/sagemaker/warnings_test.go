package sagemaker

import (
	"strings"
	"testing"
)

// TestFrameworkWarnings: SageMaker's own hyperparameters that ask for
// something sagefit does not do are named (they were accepted without a
// word: a framework estimator's script that never ran, MPI asked for);
// what the SDK sends for every job, and requests turned off, say nothing.
func TestFrameworkWarnings(t *testing.T) {
	for _, tt := range []struct {
		name string
		hps  string
		want []string // a warning each, by a phrase in it
	}{
		{"what the SDK sends for every job", `{"sagemaker_job_name": "\"j\"", "sagemaker_region": "\"eu-west-1\"",
			"sagemaker_container_log_level": "20", "sagemaker_estimator_class_name": "\"Estimator\"",
			"sagemaker_estimator_module": "\"sagemaker.estimator\""}`, nil},
		{"requests turned off", `{"sagemaker_mpi_enabled": "false", "sagemaker_distributed_dataparallel_enabled": "false"}`, nil},
		{"a script", `{"sagemaker_program": "\"train.py\"", "sagemaker_submit_directory": "\"s3://b/src.tar.gz\""}`,
			[]string{`"sagemaker_program" is "train.py", and sagefit runs no training script`, `"sagemaker_submit_directory" is "s3://b/src.tar.gz", and sagefit runs no training script`}},
		{"a way to distribute", `{"sagemaker_mpi_enabled": "true", "sagemaker_distributed_dataparallel_enabled": "true"}`,
			[]string{`"sagemaker_distributed_dataparallel_enabled" is true, and sagefit does not use it`, `"sagemaker_mpi_enabled" is true, and sagefit does not use it`}},
		{"a log level", `{"sagemaker_container_log_level": "10"}`, []string{`"sagemaker_container_log_level" is 10, and sagefit has no log levels`}},
		{"unknown names", `{"sagemaker_progam": "\"train.py\"", "sagemaker_zzz": "1"}`,
			[]string{`hyperparameters "sagemaker_progam", "sagemaker_zzz" are not SageMaker settings sagefit knows`}},
		{"an unknown name", `{"sagemaker_progam": "\"train.py\""}`,
			[]string{`hyperparameter "sagemaker_progam" is not a SageMaker setting sagefit knows, and is not read`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			writeFiles(t, base, map[string]string{"input/config/hyperparameters.json": tt.hps})
			e, err := Load(base, noGPUs)
			if err != nil {
				t.Fatal(err)
			}
			got := e.FrameworkWarnings()
			if len(got) != len(tt.want) {
				t.Fatalf("warnings %q, want %d", got, len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("warning %d is %q, want it to say %q", i, got[i], w)
				}
			}
		})
	}
}

// TestDebuggerHookConfigIsNamed: a DebugHookConfig that asks for tensor
// collections (the SDK adds those of the Debugger rules a job is given) is
// named, as sagefit runs no Debugger hook; the SDK's default for every job,
// an S3 path alone, and a job without Debugger say nothing. Where the job
// has no TensorBoardOutputConfig, the event files stay in output/tensorboard.
func TestDebuggerHookConfigIsNamed(t *testing.T) {
	for _, tt := range []struct {
		name, config string
		want         string
	}{
		{"no Debugger", "", ""},
		{"the SDK's default", `{"LocalPath": "/opt/ml/output/tensors", "S3OutputPath": "s3://b/o", "CollectionConfigurations": []}`, ""},
		{"rules' collections", `{"S3OutputPath": "s3://b/o", "HookParameters": {"save_interval": "100"},
			"CollectionConfigurations": [{"CollectionName": "losses"}, {"CollectionName": "gradients", "CollectionParameters": {"save_interval": "500"}}]}`,
			"input/config/debughookconfig.json asks SageMaker Debugger's hook to save [losses gradients save_interval=100]: sagefit runs no Debugger hook"},
		// Read for the warning only: its shape does not fail the job.
		{"a shape not expected", `{"CollectionConfigurations": {}}`,
			`input/config/debughookconfig.json has the wrong shape: field "CollectionConfigurations" holds an object where a list belongs; sagefit runs no SageMaker Debugger hook`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			files := map[string]string{}
			if tt.config != "" {
				files["input/config/debughookconfig.json"] = tt.config
			}
			writeFiles(t, base, files)
			e, err := Load(base, noGPUs)
			if err != nil {
				t.Fatal(err)
			}
			if e.TensorBoardOutput || e.TensorBoardDir != (Paths{Base: base}).TensorBoardDir() {
				t.Errorf("without a TensorBoardOutputConfig: TensorBoardOutput %v, TensorBoardDir %s", e.TensorBoardOutput, e.TensorBoardDir)
			}
			got := strings.Join(e.Warnings(), "\n")
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("warnings %q, want %q", got, tt.want)
			}
		})
	}
}

// TestUnreadVariablesAreNamed: an SM_ variable sagefit does not read (the
// toolkit's SM_HPS, SM_OUTPUT_DIR) is named, where it was dropped beside the
// SM_HP_ and SM_MODEL_DIR variables that are read.
func TestUnreadVariablesAreNamed(t *testing.T) {
	base := t.TempDir()
	environ := append([]string{"SM_HPS={\"epochs\": 2}", "SM_OUTPUT_DIR=/elsewhere", "SM_HP_EPOCHS=3", "SM_HP_=4",
		"SM_CHANNEL_TRAINING=" + base, "SM_MODEL_DIR=" + base, "SM_OUTPUT_DIR=/again", "SMX=1"}, noGPUs...)
	e, err := Load(base, environ)
	if err != nil {
		t.Fatal(err)
	}
	got := e.Warnings()
	if len(got) != 1 || !strings.HasPrefix(got[0], "environment variables SM_HPS, SM_HP_, SM_OUTPUT_DIR are not read: ") {
		t.Errorf("warnings %q, want one naming SM_HPS, SM_HP_ (no name) and SM_OUTPUT_DIR", got)
	}
}
