package sagemaker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Exported returns the SM_* variables of the sagemaker-training toolkit for
// this job, as sorted "KEY=value" strings to append to the environment of a
// process we start: SM_HOSTS, SM_CURRENT_HOST, SM_CURRENT_INSTANCE_TYPE,
// SM_CURRENT_INSTANCE_GROUP, SM_NETWORK_INTERFACE_NAME, SM_NUM_GPUS,
// SM_NUM_CPUS, SM_MODEL_DIR, SM_INPUT_DIR, SM_INPUT_CONFIG_DIR,
// SM_OUTPUT_DIR, SM_OUTPUT_DATA_DIR, SM_CHANNELS, SM_CHANNEL_<NAME>,
// SM_HPS, SM_HP_<NAME>, SM_FRAMEWORK_PARAMS, SM_RESOURCE_CONFIG,
// SM_INPUT_DATA_CONFIG and SM_TRAINING_ENV, plus SAGEMAKER_BASE_DIR when
// the base is not /opt/ml.
//
// Values follow the toolkit: names are upper-cased, strings are given as
// they are, everything else as compact JSON with sorted keys.
func (e *Env) Exported() []string {
	hps := e.jsonMap(e.Hyperparameters)
	framework := e.jsonMap(e.FrameworkParams)
	channels := e.ChannelNames()
	channelDirs := map[string]string{}
	for name, ch := range e.Channels {
		channelDirs[name] = ch.Dir
	}
	resource := e.resourceConfig()
	input := e.inputDataConfig()

	vars := map[string]string{
		"SM_HOSTS":                  jsonText(e.Hosts),
		"SM_CURRENT_HOST":           e.CurrentHost,
		"SM_CURRENT_INSTANCE_TYPE":  e.InstanceType,
		"SM_CURRENT_INSTANCE_GROUP": e.InstanceGroup,
		"SM_NETWORK_INTERFACE_NAME": e.NetworkInterface,
		"SM_NUM_GPUS":               strconv.Itoa(e.NumGPUs),
		"SM_NUM_CPUS":               strconv.Itoa(e.NumCPUs),
		"SM_MODEL_DIR":              e.ModelDir,
		"SM_INPUT_DIR":              e.Paths.InputDir(),
		"SM_INPUT_CONFIG_DIR":       e.Paths.ConfigDir(),
		"SM_OUTPUT_DIR":             e.Paths.OutputDir(),
		"SM_OUTPUT_DATA_DIR":        e.OutputDataDir,
		"SM_CHANNELS":               jsonText(channels),
		"SM_HPS":                    jsonText(hps),
		"SM_FRAMEWORK_PARAMS":       jsonText(framework),
		"SM_RESOURCE_CONFIG":        jsonText(resource),
		"SM_INPUT_DATA_CONFIG":      jsonText(input),
		"SM_TRAINING_ENV": jsonText(map[string]any{
			"additional_framework_parameters": framework,
			"channel_input_dirs":              channelDirs,
			"current_host":                    e.CurrentHost,
			"current_instance_group":          e.InstanceGroup,
			"current_instance_type":           e.InstanceType,
			"hosts":                           e.Hosts,
			"hyperparameters":                 hps,
			"input_config_dir":                e.Paths.ConfigDir(),
			"input_data_config":               input,
			"input_dir":                       e.Paths.InputDir(),
			"job_name":                        e.JobName,
			"model_dir":                       e.ModelDir,
			"network_interface_name":          e.NetworkInterface,
			"num_cpus":                        e.NumCPUs,
			"num_gpus":                        e.NumGPUs,
			"output_data_dir":                 e.OutputDataDir,
			"output_dir":                      e.Paths.OutputDir(),
			"resource_config":                 resource,
		}),
	}
	if e.Paths.Base != DefaultRoot {
		vars[BaseDirEnv] = e.Paths.Base
	}
	for name, dir := range channelDirs {
		vars["SM_CHANNEL_"+strings.ToUpper(name)] = dir
	}
	for name, msg := range hps {
		value := string(msg)
		var s string
		if json.Unmarshal(msg, &s) == nil {
			value = s
		}
		vars["SM_HP_"+strings.ToUpper(name)] = value
	}
	out := make([]string, 0, len(vars))
	for k, v := range vars {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// jsonMap gives each value as JSON: strings as JSON strings, anything else
// as the JSON text it was given in, so that "0.10" is not rewritten as 0.1.
func (e *Env) jsonMap(values map[string]any) map[string]json.RawMessage {
	m := make(map[string]json.RawMessage, len(values))
	for name, v := range values {
		raw, known := e.text(name, v)
		_, isString := v.(string)
		switch {
		case !isString && known && json.Valid([]byte(raw)):
			m[name] = json.RawMessage(compactJSON([]byte(raw)))
		default:
			b, err := json.Marshal(v)
			if err != nil { // NaN and ±Inf have no JSON form
				b, _ = json.Marshal(fmt.Sprint(v))
			}
			m[name] = b
		}
	}
	return m
}

func (e *Env) resourceConfig() map[string]any {
	rc := map[string]any{
		"current_host":           e.CurrentHost,
		"current_instance_type":  e.InstanceType,
		"current_group_name":     e.InstanceGroup,
		"hosts":                  e.Hosts,
		"network_interface_name": e.NetworkInterface,
	}
	if len(e.InstanceGroups) > 0 {
		rc["instance_groups"] = e.InstanceGroups
	}
	return rc
}

func (e *Env) inputDataConfig() map[string]channelConfig {
	m := make(map[string]channelConfig, len(e.Channels))
	for name, ch := range e.Channels {
		m[name] = channelConfig{
			ContentType:        ch.ContentType,
			TrainingInputMode:  string(ch.InputMode),
			S3DistributionType: string(ch.Distribution),
			RecordWrapperType:  ch.RecordWrapper,
		}
	}
	return m
}

// jsonText is v as compact JSON without HTML escaping, as Python's
// json.dumps(v, sort_keys=True, separators=(",", ":")) writes it (Go sorts
// map keys; struct fields keep their order).
func jsonText(v any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "null"
	}
	return strings.TrimSuffix(b.String(), "\n")
}
