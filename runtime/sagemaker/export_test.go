package sagemaker

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func environMap(environ []string) map[string]string {
	m := map[string]string{}
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

func TestExported(t *testing.T) {
	base := t.TempDir()
	writeFiles(t, base, map[string]string{
		"input/config/hyperparameters.json": `{"epochs": "10", "lr": "0.10", "optimizer": "adam", "layers": "[64, 32]",
  "quoted": "\"5\"", "sagemaker_program": "\"train.py\""}`,
		"input/config/resourceconfig.json":  `{"current_host": "algo-2", "hosts": ["algo-1", "algo-2"], "current_instance_type": "ml.p3.2xlarge", "network_interface_name": "eth0"}`,
		"input/config/inputdataconfig.json": `{"train": {"TrainingInputMode": "Pipe", "S3DistributionType": "ShardedByS3Key", "RecordWrapperType": "None"}}`,
	})
	e, err := Load(base, []string{"SM_NUM_GPUS=1", "SM_NUM_CPUS=8"})
	if err != nil {
		t.Fatal(err)
	}
	exported := e.Exported()
	if !slices.IsSorted(exported) {
		t.Errorf("Exported is not sorted: %q", exported)
	}
	got := environMap(exported)
	p := e.Paths
	want := map[string]string{
		"SAGEMAKER_BASE_DIR":        base,
		"SM_HOSTS":                  `["algo-1","algo-2"]`,
		"SM_CURRENT_HOST":           "algo-2",
		"SM_CURRENT_INSTANCE_TYPE":  "ml.p3.2xlarge",
		"SM_CURRENT_INSTANCE_GROUP": "homogeneousCluster",
		"SM_NETWORK_INTERFACE_NAME": "eth0",
		"SM_NUM_GPUS":               "1",
		"SM_NUM_CPUS":               "8",
		"SM_MODEL_DIR":              p.ModelDir(),
		"SM_INPUT_DIR":              p.InputDir(),
		"SM_INPUT_CONFIG_DIR":       p.ConfigDir(),
		"SM_OUTPUT_DIR":             p.OutputDir(),
		"SM_OUTPUT_DATA_DIR":        p.OutputDataDir(),
		"SM_CHANNELS":               `["train"]`,
		"SM_CHANNEL_TRAIN":          p.Channel("train"),
		"SM_HPS":                    `{"epochs":10,"layers":[64,32],"lr":0.10,"optimizer":"adam","quoted":"5"}`,
		"SM_HP_EPOCHS":              "10",
		"SM_HP_LR":                  "0.10",
		"SM_HP_OPTIMIZER":           "adam",
		"SM_HP_LAYERS":              "[64,32]",
		"SM_HP_QUOTED":              "5",
		"SM_FRAMEWORK_PARAMS":       `{"sagemaker_program":"train.py"}`,
		"SM_RESOURCE_CONFIG":        `{"current_group_name":"homogeneousCluster","current_host":"algo-2","current_instance_type":"ml.p3.2xlarge","hosts":["algo-1","algo-2"],"network_interface_name":"eth0"}`,
		"SM_INPUT_DATA_CONFIG":      `{"train":{"RecordWrapperType":"None","S3DistributionType":"ShardedByS3Key","TrainingInputMode":"Pipe"}}`,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	var training map[string]any
	if err := json.Unmarshal([]byte(got["SM_TRAINING_ENV"]), &training); err != nil {
		t.Fatalf("SM_TRAINING_ENV: %v", err)
	}
	if training["current_host"] != "algo-2" || training["job_name"] != "local" || training["num_gpus"] != 1.0 {
		t.Errorf("SM_TRAINING_ENV = %v", training)
	}
	if extra := len(got) - len(want) - 1; extra != 0 {
		t.Errorf("Exported has %d variables beyond the expected ones: %q", extra, exported)
	}
}

// A process we start with Exported sees the job we see, without the files.
func TestExportedLoadsBack(t *testing.T) {
	base := t.TempDir()
	writeFiles(t, base, map[string]string{
		"input/config/hyperparameters.json": `{"epochs": "10", "lr": "0.001", "optimizer": "adam", "shuffle": "false", "layers": "[64, 32]"}`,
		"input/config/resourceconfig.json":  `{"current_host": "algo-3", "hosts": ["algo-1", "algo-2", "algo-3"]}`,
		"input/data/train/x.npy":            "",
		"input/data/test/x.npy":             "",
	})
	e, err := Load(base, []string{"SM_NUM_GPUS=2"})
	if err != nil {
		t.Fatal(err)
	}
	child, err := Load(t.TempDir(), e.Exported())
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"Hosts", child.Hosts, e.Hosts},
		{"Rank", child.Rank, 2},
		{"Hyperparameters", child.Hyperparameters, e.Hyperparameters},
		{"Channels", child.Channels, e.Channels},
		{"ModelDir", child.ModelDir, e.ModelDir},
		{"OutputDataDir", child.OutputDataDir, e.OutputDataDir},
		{"NumGPUs", child.NumGPUs, 2},
		{"NumCPUs", child.NumCPUs, e.NumCPUs},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
}
