package sagemaker

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// writeFiles writes files (path relative to base -> content) under base.
func writeFiles(t *testing.T, base string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(base, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func mkdirs(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// noGPUs keeps Load from probing the machine.
var noGPUs = []string{"SM_NUM_GPUS=0"}

func TestDefaultBase(t *testing.T) {
	tests := []struct {
		environ []string
		want    string
	}{
		{nil, "/opt/ml"},
		{[]string{"HOME=/root"}, "/opt/ml"},
		{[]string{"SAGEMAKER_BASE_DIR="}, "/opt/ml"},
		{[]string{"SAGEMAKER_BASE_DIR=/tmp/job"}, "/tmp/job"},
		{[]string{"SAGEMAKER_BASE_DIR=/a", "SAGEMAKER_BASE_DIR=/b"}, "/b"},
		{[]string{"SAGEMAKER_BASE_DIR_X=/x"}, "/opt/ml"},
	}
	for _, tt := range tests {
		if got := DefaultBase(tt.environ); got != tt.want {
			t.Errorf("DefaultBase(%q) = %q, want %q", tt.environ, got, tt.want)
		}
	}
}

func TestPaths(t *testing.T) {
	p := Paths{Base: "/opt/ml"}
	tests := []struct{ got, want string }{
		{p.InputDir(), "/opt/ml/input"},
		{p.ConfigDir(), "/opt/ml/input/config"},
		{p.DataDir(), "/opt/ml/input/data"},
		{p.Channel("train"), "/opt/ml/input/data/train"},
		{p.PipeFIFO("train", 0), "/opt/ml/input/data/train_0"},
		{p.PipeFIFO("eval", 12), "/opt/ml/input/data/eval_12"},
		{p.ModelDir(), "/opt/ml/model"},
		{p.OutputDir(), "/opt/ml/output"},
		{p.OutputDataDir(), "/opt/ml/output/data"},
		{p.FailureFile(), "/opt/ml/output/failure"},
		{p.DefaultCheckpointDir(), "/opt/ml/checkpoints"},
	}
	for i, tt := range tests {
		if tt.got != filepath.FromSlash(tt.want) {
			t.Errorf("%d: got %q, want %q", i, tt.got, tt.want)
		}
	}
}

// A job as SageMaker lays it out: two hosts, two described channels, one
// folder nobody described, a Pipe FIFO-like file, framework settings.
func TestLoadSageMakerFiles(t *testing.T) {
	base := t.TempDir()
	writeFiles(t, base, map[string]string{
		"input/config/hyperparameters.json": `{
  "epochs": "10",
  "learning_rate": "0.001",
  "optimizer": "adam",
  "quoted": "\"7\"",
  "layers": "[64, 32]",
  "extra": "{\"a\": \"b\", \"n\": 2}",
  "shuffle": "true",
  "sagemaker_program": "\"train.py\"",
  "sagemaker_region": "\"eu-west-1\""
}`,
		"input/config/resourceconfig.json": `{
  "current_host": "algo-2",
  "current_instance_type": "ml.g5.xlarge",
  "current_group_name": "homogeneousCluster",
  "hosts": ["algo-2", "algo-1"],
  "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": "ml.g5.xlarge", "hosts": ["algo-1", "algo-2"]}],
  "network_interface_name": "ethwe"
}`,
		"input/config/inputdataconfig.json": `{
  "train": {"TrainingInputMode": "File", "S3DistributionType": "ShardedByS3Key", "RecordWrapperType": "None", "ContentType": "application/x-npy"},
  "eval": {"TrainingInputMode": "Pipe", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "RecordIO"}
}`,
		"input/config/checkpointconfig.json":        `{"LocalPath": "/opt/ml/checkpoints/here", "S3Uri": "s3://bucket/ckpt"}`,
		"input/config/tensorboardoutputconfig.json": `{"LocalPath": "/opt/ml/output/tb/", "S3OutputPath": "s3://bucket/tb"}`,
		"input/data/train/x.npy":                    "",
		"input/data/extra/y.npy":                    "",
		"input/data/eval_0":                         "",
	})
	e, err := Load(base, []string{"SM_NUM_GPUS=2", "TRAINING_JOB_NAME=job-42"})
	if err != nil {
		t.Fatal(err)
	}
	p := Paths{Base: base}
	checks := []struct {
		name      string
		got, want any
	}{
		{"Hosts", e.Hosts, []string{"algo-2", "algo-1"}},
		{"CurrentHost", e.CurrentHost, "algo-2"},
		{"Rank", e.Rank, 0},
		{"NetworkInterface", e.NetworkInterface, "ethwe"},
		{"InstanceType", e.InstanceType, "ml.g5.xlarge"},
		{"InstanceGroup", e.InstanceGroup, "homogeneousCluster"},
		{"InstanceGroups", e.InstanceGroups, []InstanceGroup{{"homogeneousCluster", "ml.g5.xlarge", []string{"algo-1", "algo-2"}}}},
		{"Channels", e.Channels, map[string]Channel{
			"train": {Name: "train", Dir: p.Channel("train"), InputMode: File, Distribution: ShardedByS3Key, ContentType: "application/x-npy", RecordWrapper: "None"},
			"eval":  {Name: "eval", Dir: p.Channel("eval"), InputMode: Pipe, Distribution: FullyReplicated, RecordWrapper: "RecordIO"},
			"extra": {Name: "extra", Dir: p.Channel("extra"), InputMode: File, Distribution: FullyReplicated, RecordWrapper: "None"},
		}},
		{"ChannelNames", e.ChannelNames(), []string{"eval", "extra", "train"}},
		{"Hyperparameters", e.Hyperparameters, map[string]any{
			"epochs": 10.0, "learning_rate": 0.001, "optimizer": "adam", "quoted": "7",
			"layers": []any{64.0, 32.0}, "extra": map[string]any{"a": "b", "n": 2.0}, "shuffle": true,
		}},
		{"FrameworkParams", e.FrameworkParams, map[string]any{"sagemaker_program": "train.py", "sagemaker_region": "eu-west-1"}},
		{"NumGPUs", e.NumGPUs, 2},
		{"JobName", e.JobName, "job-42"},
		{"ModelDir", e.ModelDir, p.ModelDir()},
		{"OutputDataDir", e.OutputDataDir, p.OutputDataDir()},
		{"CheckpointDir", e.CheckpointDir, "/opt/ml/checkpoints/here"},
		{"CheckpointS3URI", e.CheckpointS3URI, "s3://bucket/ckpt"},
		{"TensorBoardDir", e.TensorBoardDir, "/opt/ml/output/tb"},
		{"TensorBoardOutput", e.TensorBoardOutput, true},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
	if e.NumCPUs < 1 {
		t.Errorf("NumCPUs = %d, want at least 1", e.NumCPUs)
	}
}

func TestLoadEmptyBase(t *testing.T) {
	base := t.TempDir()
	e, err := Load(base, noGPUs)
	if err != nil {
		t.Fatal(err)
	}
	p := Paths{Base: base}
	if !reflect.DeepEqual(e.Hosts, []string{"algo-1"}) || e.CurrentHost != "algo-1" || e.Rank != 0 {
		t.Errorf("hosts %v, current %q, rank %d; want [algo-1], algo-1, 0", e.Hosts, e.CurrentHost, e.Rank)
	}
	if len(e.Channels) != 0 || len(e.Hyperparameters) != 0 || len(e.FrameworkParams) != 0 {
		t.Errorf("channels %v, hyperparameters %v, framework %v; want none", e.Channels, e.Hyperparameters, e.FrameworkParams)
	}
	if e.JobName != "local" || e.InstanceType != "local" || e.NetworkInterface != "eth0" || e.InstanceGroup != DefaultInstanceGroup {
		t.Errorf("job %q, instance %q, interface %q, group %q", e.JobName, e.InstanceType, e.NetworkInterface, e.InstanceGroup)
	}
	if e.CheckpointDir != p.DefaultCheckpointDir() || e.CheckpointS3URI != "" {
		t.Errorf("checkpoints %q %q, want %q and none", e.CheckpointDir, e.CheckpointS3URI, p.DefaultCheckpointDir())
	}
}

func TestLoadBaseFromEnvironment(t *testing.T) {
	base := t.TempDir()
	writeFiles(t, base, map[string]string{"input/config/hyperparameters.json": `{"epochs": "3"}`})
	e, err := Load("", append([]string{"SAGEMAKER_BASE_DIR=" + base}, noGPUs...))
	if err != nil {
		t.Fatal(err)
	}
	if e.Paths.Base != base || e.Hyperparameters["epochs"] != 3.0 {
		t.Errorf("base %q, epochs %v; want %q and 3", e.Paths.Base, e.Hyperparameters["epochs"], base)
	}
}

// SM_* variables win over the files.
func TestLoadEnvironmentWins(t *testing.T) {
	base := t.TempDir()
	writeFiles(t, base, map[string]string{
		"input/config/hyperparameters.json": `{"learningRate": "0.1", "epochs": "10"}`,
		"input/config/resourceconfig.json":  `{"current_host": "algo-1", "hosts": ["algo-1"]}`,
		"input/config/inputdataconfig.json": `{"Train": {"TrainingInputMode": "FastFile"}, "test": {}}`,
	})
	environ := []string{
		`SM_HOSTS=["h1","h2","h3"]`,
		"SM_CURRENT_HOST=h3",
		"SM_CHANNELS=[\"Train\",\"more\"]",
		"SM_CHANNEL_TRAIN=/data/train",
		"SM_CHANNEL_VALIDATION=/data/val",
		"SM_HP_LEARNINGRATE=0.5",
		"SM_HP_EPOCHS=ten",
		"SM_HP_BATCH_SIZE=64",
		"SM_HP_SAGEMAKER_REGION=us-east-1",
		"SM_MODEL_DIR=/models",
		"SM_OUTPUT_DATA_DIR=/out",
		"SM_NUM_GPUS=4",
		"SM_NUM_CPUS=3",
	}
	e, err := Load(base, environ)
	if err != nil {
		t.Fatal(err)
	}
	p := Paths{Base: base}
	checks := []struct {
		name      string
		got, want any
	}{
		{"Hosts", e.Hosts, []string{"h1", "h2", "h3"}},
		{"CurrentHost", e.CurrentHost, "h3"},
		{"Rank", e.Rank, 2},
		{"Channels", e.Channels, map[string]Channel{
			"Train":      {Name: "Train", Dir: "/data/train", InputMode: FastFile, Distribution: FullyReplicated, RecordWrapper: "None"},
			"more":       {Name: "more", Dir: p.Channel("more"), InputMode: File, Distribution: FullyReplicated, RecordWrapper: "None"},
			"validation": {Name: "validation", Dir: "/data/val", InputMode: File, Distribution: FullyReplicated, RecordWrapper: "None"},
		}},
		{"Hyperparameters", e.Hyperparameters, map[string]any{"learningRate": 0.5, "epochs": "ten", "batch_size": 64.0}},
		{"FrameworkParams", e.FrameworkParams, map[string]any{"sagemaker_region": "us-east-1"}},
		{"ModelDir", e.ModelDir, "/models"},
		{"OutputDataDir", e.OutputDataDir, "/out"},
		{"NumGPUs", e.NumGPUs, 4},
		{"NumCPUs", e.NumCPUs, 3},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		environ []string
		want    string
	}{
		{
			name:  "hyperparameters not JSON",
			files: map[string]string{"input/config/hyperparameters.json": `{"epochs": x}`},
			want:  `input/config/hyperparameters.json is not valid JSON: invalid character 'x' looking for beginning of value at offset 12 (line 1, column 12)`,
		},
		{
			name:  "error on the second line",
			files: map[string]string{"input/config/inputdataconfig.json": "{\n  \"train\": {,}\n}"},
			want:  `input/config/inputdataconfig.json is not valid JSON: invalid character ',' looking for beginning of object key string at offset 15 (line 2, column 13)`,
		},
		{
			name:  "truncated file",
			files: map[string]string{"input/config/resourceconfig.json": `{"hosts": ["algo-1"`},
			want:  `input/config/resourceconfig.json is not valid JSON: unexpected end of JSON input`,
		},
		{
			name:  "hyperparameters a list",
			files: map[string]string{"input/config/hyperparameters.json": `["epochs"]`},
			want:  `input/config/hyperparameters.json has the wrong shape: the top level holds a list where an object belongs`,
		},
		{
			name:  "hosts not strings",
			files: map[string]string{"input/config/resourceconfig.json": `{"current_host": "algo-1", "hosts": [1]}`},
			want:  `input/config/resourceconfig.json has the wrong shape: field "hosts" holds a number where a string belongs`,
		},
		{
			name:  "hyperparameter twice",
			files: map[string]string{"input/config/hyperparameters.json": `{"epochs": "2", "epochs": "3"}`},
			want:  `input/config/hyperparameters.json gives "epochs" twice; keep one`,
		},
		{
			name:  "hyperparameters null",
			files: map[string]string{"input/config/hyperparameters.json": `null`},
			want:  `input/config/hyperparameters.json is null; write an object of the hyperparameters, {} for none`,
		},
		{
			name:  "hyperparameter null",
			files: map[string]string{"input/config/hyperparameters.json": `{"sagefit_model": null}`},
			want:  `input/config/hyperparameters.json gives hyperparameter "sagefit_model" the value null; give it a value, or leave it out`,
		},
		{
			name:  "hyperparameter past float64",
			files: map[string]string{"input/config/hyperparameters.json": `{"epochs": 1e400}`},
			want:  `input/config/hyperparameters.json gives hyperparameter "epochs" the value 1e400, which cannot be read: a number past float64's range?`,
		},
		{
			name:  "host name with a slash",
			files: map[string]string{"input/config/resourceconfig.json": `{"current_host": "algo-1", "hosts": ["algo-1", "../x"]}`},
			want:  `input/config/resourceconfig.json lists host name "../x", which holds '/': host names are SageMaker's algo-1, algo-2, ..., without spaces, slashes, quotes, commas, equals or number signs`,
		},
		{
			name:  "channel name a path",
			files: map[string]string{"input/config/inputdataconfig.json": `{"../../x": {"TrainingInputMode": "Pipe"}}`},
			want:  `input/config/inputdataconfig.json names channel "../../x", which is no channel name SageMaker accepts: use 1 to 64 letters, digits, '.', '-' or '_'`,
		},
		{
			name:  "no hosts",
			files: map[string]string{"input/config/resourceconfig.json": `{"current_host": "algo-1", "hosts": []}`},
			want:  `input/config/resourceconfig.json lists no hosts`,
		},
		{
			name:  "host twice",
			files: map[string]string{"input/config/resourceconfig.json": `{"current_host": "algo-1", "hosts": ["algo-1", "algo-1"]}`},
			want:  `input/config/resourceconfig.json lists host "algo-1" twice`,
		},
		{
			name:  "current host not in hosts",
			files: map[string]string{"input/config/resourceconfig.json": `{"current_host": "algo-3", "hosts": ["algo-1", "algo-2"]}`},
			want:  `current host "algo-3" is not in hosts [algo-1 algo-2]`,
		},
		{
			name:    "SM_CURRENT_HOST not in hosts",
			environ: []string{"SM_CURRENT_HOST=algo-9"},
			want:    `current host "algo-9" is not in hosts [algo-1]`,
		},
		{
			name:    "SM_HOSTS not JSON",
			environ: []string{"SM_HOSTS=algo-1,algo-2", "SM_CURRENT_HOST=algo-1"},
			want:    `SM_HOSTS is not valid JSON: invalid character 'a' looking for beginning of value at offset 1 (line 1, column 1)`,
		},
		{
			name:    "SM_HOSTS without a current host",
			environ: []string{`SM_HOSTS=["a","b"]`},
			want:    `SM_HOSTS is set, but neither SM_CURRENT_HOST nor input/config/resourceconfig.json says which of its hosts this is`,
		},
		{
			name:  "no current host",
			files: map[string]string{"input/config/resourceconfig.json": `{"hosts": ["algo-1"]}`},
			want:  `input/config/resourceconfig.json names no current_host (which of its hosts this is)`,
		},
		{
			name:  "unknown input mode",
			files: map[string]string{"input/config/inputdataconfig.json": `{"train": {"TrainingInputMode": "Stream"}}`},
			want:  `input/config/inputdataconfig.json gives channel "train" the TrainingInputMode "Stream"; it must be File, Pipe or FastFile`,
		},
		{
			name:  "unknown distribution",
			files: map[string]string{"input/config/inputdataconfig.json": `{"train": {"S3DistributionType": "Sharded"}}`},
			want:  `input/config/inputdataconfig.json gives channel "train" the S3DistributionType "Sharded"; it must be FullyReplicated or ShardedByS3Key`,
		},
		{
			name:    "SM_CHANNELS not a list",
			environ: []string{`SM_CHANNELS={"train": 1}`},
			want:    `SM_CHANNELS has the wrong shape: the top level holds an object where a list belongs`,
		},
		{
			name:    "SM_CHANNEL_ empty",
			environ: []string{"SM_CHANNEL_TRAINING="},
			want:    `SM_CHANNEL_TRAINING is empty; give the channel's folder, or leave it out`,
		},
		{
			name:    "SM_NUM_GPUS not a number",
			environ: []string{"SM_NUM_GPUS=two"},
			want:    `SM_NUM_GPUS must be a whole number of devices, got "two"`,
		},
		{
			name:    "TensorBoard LocalPath in the model folder",
			files:   map[string]string{"input/config/tensorboardoutputconfig.json": `{"LocalPath": "/x/model/1"}`},
			environ: []string{"SM_MODEL_DIR=/x/model"},
			want:    `input/config/tensorboardoutputconfig.json gives LocalPath "/x/model/1", in the model folder /x/model, whose files the trained model replaces: give a folder outside it (SageMaker's default is /opt/ml/output/tensorboard)`,
		},
		{
			name:  "relative TensorBoard LocalPath",
			files: map[string]string{"input/config/tensorboardoutputconfig.json": `{"LocalPath": "tb"}`},
			want:  `input/config/tensorboardoutputconfig.json gives LocalPath "tb"; it must be an absolute path in the container`,
		},
		{
			name:  "checkpoint config not JSON",
			files: map[string]string{"input/config/checkpointconfig.json": `LocalPath=/x`},
			want:  `input/config/checkpointconfig.json is not valid JSON: invalid character 'L' looking for beginning of value at offset 1 (line 1, column 1)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			writeFiles(t, base, tt.files)
			environ := tt.environ
			if !strings.Contains(strings.Join(environ, " "), "SM_NUM_GPUS") {
				environ = append(environ, noGPUs...)
			}
			e, err := Load(base, environ)
			if err == nil {
				t.Fatalf("Load succeeded with %+v", e)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got %s\nwant %s", err, tt.want)
			}
		})
	}
}

func TestConfigErrorUnwraps(t *testing.T) {
	base := t.TempDir()
	writeFiles(t, base, map[string]string{"input/config/hyperparameters.json": `{`})
	_, err := Load(base, noGPUs)
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Source != "input/config/hyperparameters.json" || ce.Err == nil {
		t.Fatalf("error %v (%T) is not a ConfigError naming the file with a cause", err, err)
	}
}

func TestDecodeHyperparameter(t *testing.T) {
	// What json.loads gives for each string, or the string itself.
	tests := []struct {
		raw  string
		want any
	}{
		{"10", 10.0},
		{"-3", -3.0},
		{"0.001", 0.001},
		{"1e-4", 1e-4},
		{"true", true},
		{"false", false},
		{"null", nil},
		{`"quoted"`, "quoted"},
		{`"10"`, "10"},
		{"[1, \"a\"]", []any{1.0, "a"}},
		{`{"k": [true]}`, map[string]any{"k": []any{true}}},
		{" 7 ", 7.0},
		{"adam", "adam"},
		{"True", "True"},
		{"", ""},
		{"10 epochs", "10 epochs"},
		{"{not json", "{not json"},
		{"Infinity", math.Inf(1)},
		{"-Infinity", math.Inf(-1)},
	}
	for _, tt := range tests {
		if got := decodeHyperparameter(tt.raw); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("decodeHyperparameter(%q) = %#v, want %#v", tt.raw, got, tt.want)
		}
	}
	if got, ok := decodeHyperparameter("NaN").(float64); !ok || !math.IsNaN(got) {
		t.Errorf("decodeHyperparameter(NaN) = %v, want NaN", got)
	}
}

// TestWrittenFoldersOutsideInput: event files written into a channel's
// folder failed the next job that read it (.v2 files are not data); so did
// checkpoints and a model written there (a probe): a TensorBoard or
// checkpoint LocalPath, SM_MODEL_DIR or SM_OUTPUT_DATA_DIR in the job's
// input folder is refused, and so are relative ones and checkpoints in the
// model folder, as TensorBoard's were.
func TestWrittenFoldersOutsideInput(t *testing.T) {
	for _, c := range []struct {
		file, env, want string
	}{
		{file: "tensorboardoutputconfig.json", want: `input/config/tensorboardoutputconfig.json gives LocalPath "IN", in the job's input folder`},
		{file: "checkpointconfig.json", want: `input/config/checkpointconfig.json gives LocalPath "IN", in the job's input folder`},
		{env: "SM_MODEL_DIR", want: `SM_MODEL_DIR is "IN", in the job's input folder`},
		{env: "SM_OUTPUT_DATA_DIR", want: `SM_OUTPUT_DATA_DIR is "IN", in the job's input folder`},
		{file: "checkpointconfig.json", env: "MODEL", want: `input/config/checkpointconfig.json gives LocalPath "IN", in the model folder`},
		{file: "checkpointconfig.json", env: "RELATIVE", want: `input/config/checkpointconfig.json gives LocalPath "ckpts"; it must be an absolute path in the container`},
		{env: "SM_MODEL_DIR RELATIVE", want: `SM_MODEL_DIR is "ckpts"; it must be an absolute path in the container`},
	} {
		base := t.TempDir()
		in := filepath.Join(base, "input", "data", "training", "x")
		environ := noGPUs
		switch c.env {
		case "MODEL":
			in = filepath.Join(base, "model", "ckpts")
		case "RELATIVE", "SM_MODEL_DIR RELATIVE":
			in = "ckpts"
		}
		if c.env == "SM_MODEL_DIR RELATIVE" {
			environ = append([]string{"SM_MODEL_DIR=" + in}, noGPUs...)
		} else if strings.HasPrefix(c.env, "SM_") {
			environ = append([]string{c.env + "=" + in}, noGPUs...)
		}
		if c.file != "" {
			writeFiles(t, base, map[string]string{"input/config/" + c.file: `{"LocalPath": "` + in + `"}`})
		}
		_, err := Load(base, environ)
		if want := strings.ReplaceAll(c.want, "IN", in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load: %v, want %s", err, want)
		}
	}
}

func TestCountGPUs(t *testing.T) {
	dev := t.TempDir()
	writeFiles(t, dev, map[string]string{"nvidia0": "", "nvidia1": "", "nvidiactl": "", "nvidia-uvm": "", "nvidia-modeset": ""})
	if got := countGPUs(dev, "no-such-nvidia-smi"); got != 2 {
		t.Errorf("countGPUs with nvidia0, nvidia1 = %d, want 2", got)
	}
	if got := countGPUs(t.TempDir(), "no-such-nvidia-smi"); got != 0 {
		t.Errorf("countGPUs with nothing = %d, want 0", got)
	}
}

// One rule for every lookup of sagefit's: where a key is set twice the last
// one wins (os/exec's Cmd.Env keeps the last too), set-but-empty is set, and
// a key is matched whole.
func TestLookupEnvLastWins(t *testing.T) {
	environ := []string{"SM_HOSTS=first", "SAGEFIT_WORKER=0/2", "SM_HOSTS=last", "EMPTY=", "SM_HOSTS_X=other"}
	for _, c := range []struct {
		key   string
		want  string
		isSet bool
	}{
		{"SM_HOSTS", "last", true},
		{"SAGEFIT_WORKER", "0/2", true},
		{"EMPTY", "", true},
		{"SM_HOST", "", false},
	} {
		if v, ok := LookupEnv(environ, c.key); v != c.want || ok != c.isSet {
			t.Errorf("LookupEnv(%s) = %q, %v; want %q, %v", c.key, v, ok, c.want, c.isSet)
		}
	}
}
