package job_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sagefit/sagefit/runtime/job"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

func load(t *testing.T, hps map[string]string) *sagemaker.Env {
	t.Helper()
	return loadSpec(t, sagemaker.LocalSpec{Hyperparameters: hps})
}

// loadSpec writes spec as a local job's /opt/ml and loads it.
func loadSpec(t *testing.T, spec sagemaker.LocalSpec) *sagemaker.Env {
	t.Helper()
	base := t.TempDir()
	if err := sagemaker.WriteLocal(base, spec); err != nil {
		t.Fatal(err)
	}
	env, err := sagemaker.Load(base, nil)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// A hyperparameter sagefit does not read ends the job before training, in
// one sentence naming it and the closest known name; SageMaker's own are
// accepted without a word.
func TestUnknownHyperparametersAreRefused(t *testing.T) {
	for _, c := range []struct {
		hps  map[string]string
		want string // "" when accepted
	}{
		{map[string]string{"epochs": "3", "model_dir": `"s3://b/m"`, "_tuning_objective_metric": "val_loss", "sagemaker_program": `"train.py"`}, ""},
		{map[string]string{"epoch": "5"}, `hyperparameter "epoch" (did you mean "epochs"?) is not one sagefit reads`},
		{map[string]string{"epoch": "5", "batchsize": "8"}, `hyperparameters "batchsize" (did you mean "batch_size"?) and "epoch" (did you mean "epochs"?) are not ones sagefit reads`},
		{map[string]string{"Learning_Rate": "0.1"}, `"Learning_Rate" (did you mean "learning_rate"?)`},
		{map[string]string{"jit_compile": "true"}, `compile the model with jit_compile=True and export it again`},
		{map[string]string{"JIT_COMPILE": "true"}, `hyperparameter "JIT_COMPILE": jit_compile cannot change a model already exported`},
		{map[string]string{"jit_compiled": "1"}, `hyperparameter "jit_compiled": jit_compile cannot change`},
		{map[string]string{"dropout_rate_of_my_model": "0.5"}, `hyperparameter "dropout_rate_of_my_model" is not one sagefit reads, so`},
	} {
		err := job.CheckKnown(load(t, c.hps))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%v refused: %v", c.hps, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%v: error %v, want one containing %q", c.hps, err, c.want)
		}
	}
	if _, err := job.New(load(t, map[string]string{"epoch": "5"})); err == nil || !strings.Contains(err.Error(), `did you mean "epochs"?`) {
		t.Errorf("job.New accepted an unknown hyperparameter: %v", err)
	}
}

// inter_op_threads left unset lets the fit loop choose between the pool
// and the calling thread; a count given is the pool asked for, -1 the
// calling thread (TensorFlow's meaning); below that is refused.
func TestInterOpThreadsFixWhereStepsRun(t *testing.T) {
	for _, c := range []struct {
		hps   map[string]string
		probe bool
		pool  int
	}{
		{map[string]string{}, true, 0},
		{map[string]string{"inter_op_threads": "2"}, false, 2},
		{map[string]string{"inter_op_threads": "0"}, false, 0},
		{map[string]string{"inter_op_threads": "-1"}, false, -1},
	} {
		j, err := job.New(withModelAndData(t, c.hps))
		if err != nil {
			t.Fatalf("%v: %v", c.hps, err)
		}
		if j.ProbeInline != c.probe || j.Session.InterOpThreads != c.pool {
			t.Errorf("%v: probe %v, inter-op threads %d; want %v, %d", c.hps, j.ProbeInline, j.Session.InterOpThreads, c.probe, c.pool)
		}
	}
	if _, err := job.New(withModelAndData(t, map[string]string{"inter_op_threads": "-2"})); err == nil || !strings.Contains(err.Error(), "at least -1") {
		t.Errorf("inter_op_threads -2: %v, want a refusal", err)
	}
}

// withModelAndData is a job's environment with hps, a model and a training
// channel (job.New asks that they exist, not what is in them).
func withModelAndData(t *testing.T, hps map[string]string) *sagemaker.Env {
	t.Helper()
	model := t.TempDir()
	if err := os.WriteFile(filepath.Join(model, "saved_model.pb"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return loadSpec(t, sagemaker.LocalSpec{Hyperparameters: hps, Channels: map[string]string{"model": model, "training": t.TempDir()}})
}

// Values a probe with hostile input found crashing the job (TensorFlow
// aborting on a thread count its int32 wrapped, a queue too large to make,
// an epoch counter that wrapped and never ended)
// or dropped without a word (a learning rate of 0 or NaN kept the exported
// one; NaN passed the validation_split bounds) are refused in one sentence
// that quotes what was given.
func TestValuesThatWouldCrashOrBeDroppedAreRefused(t *testing.T) {
	for _, c := range []struct{ hp, value, want string }{
		{"intra_op_threads", "2147483648", `"intra_op_threads" must be at most 4096, got 2147483648`},
		{"inter_op_threads", "4294967296", `"inter_op_threads" must be at most 4096`},
		{"prefetch", "9000000000000000000", `"prefetch" must be at most 1048576`},
		{"epochs", "9223372036854775807", `"epochs" must be at most 2147483647, got 9223372036854775807`},
		{"initial_epoch", "9223372036854775806", `"initial_epoch" must be at most 2147483647`},
		{"learning_rate", "0", `"learning_rate" must be a positive number, got "0"`},
		{"learning_rate", "NaN", `"learning_rate" must be a positive number, got "NaN"`},
		{"learning_rate", "Infinity", `"learning_rate" must be a positive number`},
		{"validation_split", "NaN", `"validation_split" must be a fraction`},
		{"steps_per_execution", "0", `"steps_per_execution" must be "auto" or an integer of at least 1, got "0"`},
		{"steps_per_execution", "true", `got "true"`},
		{"sagefit_peer_timeout", "0", `"sagefit_peer_timeout" must be a positive duration, got "0"`},
		{"sagefit_connect_timeout", "-5s", `"sagefit_connect_timeout" must be a positive duration`},
		{"sagefit_pipe_timeout", "0s", `"sagefit_pipe_timeout" must be a positive duration`},
		{"class_weight", `{"0": -1}`, `got "{\"0\": -1}"`},
		// Two names of one class: the weight kept was chosen by Go's map order.
		{"class_weight", `{"1": 2, "01": 30}`, `"class_weight" names class 1 as "01": write each class index as a plain whole number ("1"), once`},
		{"class_weight", `{"+0": 2}`, `names class 0 as "+0"`},
		// A rate a float32 variable holds as 0 or Inf.
		{"learning_rate", "1e-320", `"learning_rate" is "1e-320", which a float32 learning rate (the optimizer's) cannot hold`},
		{"learning_rate", "1e39", `cannot hold`},
		// What the SageMaker Python SDK's Estimator sends for a dict or list
		// (str() of it): refused saying so and what to give.
		{"class_weight", `{0: 1.0, 1: 5.0}`, `that is Python's text of a dict or list, not JSON (the SageMaker Python SDK's Estimator sends str() of each value): give it as json.dumps(value)`},
		{"sagefit_inputs", `{'input_layer': 'features.npy'}`, `"sagefit_inputs" must be a JSON object, got "{'input_layer': 'features.npy'}": that is Python's text`},
		{"sagefit_pipe_tensors", `['train', 'labels']`, `json.dumps(value)`},
		{"validation_freq", `[1, 'x']`, `json.dumps(value)`},
	} {
		_, err := job.New(withModelAndData(t, map[string]string{c.hp: c.value}))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s=%s: %v; want an error with %s", c.hp, c.value, err, c.want)
		}
	}
	if _, err := job.New(withModelAndData(t, map[string]string{"intra_op_threads": "4096", "learning_rate": "1e-30"})); err != nil {
		t.Errorf("the largest thread count and a tiny learning rate: %v", err)
	}
	_, err := job.New(withModelAndData(t, map[string]string{"epoch": "3"}))
	if err == nil || !strings.Contains(err.Error(), "train without it; remove or rename it") {
		t.Errorf("one unknown hyperparameter: %v; want it named as one", err)
	}
}

// A hyperparameter the job will not use as it is set up is named, one
// sentence each: nothing given is dropped without a word.
func TestUnusedHyperparametersAreNamed(t *testing.T) {
	for _, c := range []struct {
		hps   map[string]string
		world int
		want  string // "" : nothing named
	}{
		{map[string]string{"steps_per_execution": "8"}, 1, ""},
		{map[string]string{"steps_per_execution": "8"}, 2, `"steps_per_execution" is 8, but the job's 2 training processes all-reduce`},
		{map[string]string{"sagefit_peer_timeout": "30s", "sagefit_fp16_allreduce": "true"}, 1, `hyperparameters "sagefit_peer_timeout", "sagefit_fp16_allreduce" tune the all-reduce`},
		{map[string]string{"sagefit_peer_timeout": "30s"}, 2, ""},
		{map[string]string{"seed": "3", "shuffle": "false"}, 1, `"seed" orders the shuffle, and "shuffle" is false`},
		{map[string]string{"seed": "3"}, 1, ""},
		{map[string]string{"sagefit_pipe_timeout": "5m"}, 1, `"sagefit_pipe_timeout" applies to Pipe mode channels, and the job has none`},
		{map[string]string{"validation_split": "0.2", "validation_freq": "5", "epochs": "4"}, 1, `"validation_freq" validates after no epoch of 1..4`},
		{map[string]string{"validation_split": "0.2", "validation_freq": "[1, 9]", "epochs": "6", "initial_epoch": "2"}, 1, `no epoch of 3..6`},
		{map[string]string{"validation_split": "0.2", "validation_freq": "[5, 9]", "epochs": "9"}, 1, ""},
		{map[string]string{"validation_split": "0.2", "validation_freq": "3", "epochs": "2147483647"}, 1, ""},
		{map[string]string{"sagefit_inputs": `{"input_layer": "x.npy"}`}, 1, ""},
		{map[string]string{"checkpoint": "false", "checkpoint_steps": "2"}, 1, `"checkpoint" is false, which leaves out the checkpoints at epoch ends only: "checkpoint_steps"=2 still checkpoints every 2 steps`},
		{map[string]string{"checkpoint_steps": "2"}, 1, ""},
		{map[string]string{"sagefit_peer_timeout": "30s"}, 1, `hyperparameter "sagefit_peer_timeout" tunes the all-reduce`},
		{map[string]string{"checkpoint_keep": "5"}, 1, `"checkpoint_keep" keeps the newest checkpoints, and this job writes none but a stop's; to checkpoint as it trains, give the job a checkpoint config (checkpoint_s3_uri), "checkpoint"=true or "checkpoint_steps"`},
		{map[string]string{"checkpoint_keep": "5", "checkpoint_steps": "100"}, 1, ""},
		{map[string]string{"checkpoint_keep": "5", "checkpoint": "true", "epochs": "2"}, 1, ""},
		{map[string]string{"checkpoint_keep": "5", "checkpoint": "true", "epochs": "1"}, 1, `to checkpoint as it trains, set "checkpoint_steps" (its one epoch ends no epoch before the last)`},
	} {
		j, err := job.New(withModelAndData(t, c.hps))
		if err != nil {
			t.Fatalf("%v: %v", c.hps, err)
		}
		got := strings.Join(j.Unused(c.world), "\n")
		if c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("%v on %d processes: named %q, want %q", c.hps, c.world, got, c.want)
		}
	}
	// A job with a checkpoint config that turns epoch checkpoints off.
	env := withModelAndData(t, map[string]string{"checkpoint_keep": "5", "checkpoint": "false"})
	env.CheckpointS3URI = "s3://bucket/checkpoints"
	j, err := job.New(env)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(j.Unused(1), "\n"), `to checkpoint as it trains, set "checkpoint"=true or "checkpoint_steps"`; !strings.Contains(got, want) {
		t.Errorf("checkpoint_keep with a checkpoint config: named %q, want %q", got, want)
	}
}

// sagefit_inputs names files of File and FastFile channels: in a job that
// reads Pipe channels only it is named, not dropped (a probe found even a
// name of no model tensor passed without a word).
func TestFileOverridesInAPipeJobAreNamed(t *testing.T) {
	model := t.TempDir()
	if err := os.WriteFile(filepath.Join(model, "saved_model.pb"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	env := loadSpec(t, sagemaker.LocalSpec{
		Hyperparameters: map[string]string{"sagefit_inputs": `{"bogus": "nothing.npy"}`},
		Channels:        map[string]string{"model": model, "training": t.TempDir()},
		InputModes:      map[string]string{"training": "Pipe"},
	})
	j, err := job.New(env)
	if err != nil {
		t.Fatal(err)
	}
	want := `hyperparameter "sagefit_inputs" names the files of File and FastFile mode channels, and this job reads its data from Pipe mode channels only`
	if got := strings.Join(j.Unused(1), "\n"); !strings.Contains(got, want) {
		t.Errorf("unused: %q, want %q", got, want)
	}
}

// A model channel holding an archive (a previous job's model.tar.gz) is
// told to unpack it, not that it holds no SavedModel.
func TestModelArchiveIsNamed(t *testing.T) {
	model := t.TempDir()
	if err := os.WriteFile(filepath.Join(model, "model.tar.gz"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := job.New(loadSpec(t, sagemaker.LocalSpec{Channels: map[string]string{"model": model, "training": t.TempDir()}}))
	if err == nil || !strings.Contains(err.Error(), "holds model.tar.gz but no saved_model.pb") || !strings.Contains(err.Error(), "unpack it") {
		t.Errorf("err = %v", err)
	}
}

// A channel the job does not read (a test set for an evaluate after
// training, a spare) is named, one sentence, with what the job reads.
func TestUnreadChannelsAreNamed(t *testing.T) {
	model := t.TempDir()
	if err := os.WriteFile(filepath.Join(model, "saved_model.pb"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		channels []string
		hps      map[string]string
		want     string // "" : nothing named
	}{
		{[]string{"training", "validation"}, nil, ""},
		{[]string{"training", "test"}, nil, `channel "test" is not read: this job reads "model" (the model), "training" (training data) (hyperparameters "sagefit_train_channel", "sagefit_validation_channel" and "sagefit_model_channel" choose other channels); sagefit evaluates no test set after training: evaluate the model it writes`},
		{[]string{"train", "training", "validation"}, nil, `channel "train" is not read: this job reads "model" (the model), "training" (training data), "validation" (validation data)`},
		{[]string{"train", "eval"}, map[string]string{"sagefit_validation_channel": "eval"}, ""},
		// The model's path given: its channel hyperparameter is named, and
		// the model channel's sentence does not point at it.
		{[]string{"training"}, map[string]string{"sagefit_model": model, "sagefit_model_channel": "foo"},
			`"sagefit_model_channel" names the channel the model is read from, and "sagefit_model" gives the model's path, which is read instead` + "\n" +
				`channel "model" is not read: this job reads "training" (training data) (hyperparameters "sagefit_train_channel" and "sagefit_validation_channel" choose other channels)`},
	} {
		channels := map[string]string{"model": model}
		for _, name := range c.channels {
			channels[name] = t.TempDir()
		}
		j, err := job.New(loadSpec(t, sagemaker.LocalSpec{Hyperparameters: c.hps, Channels: channels}))
		if err != nil {
			t.Fatalf("%v: %v", c.channels, err)
		}
		got := strings.Join(j.Unused(1), "\n")
		if c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("channels %v: named %q, want %q", c.channels, got, c.want)
		}
	}
}

// A validation channel named by its hyperparameter must be there, even
// named as the default: the job trained without validation, without a
// word, where any other name was refused.
func TestNamedValidationChannelMustExist(t *testing.T) {
	for _, name := range []string{"validation", "eval"} {
		_, err := job.New(withModelAndData(t, map[string]string{"sagefit_validation_channel": name}))
		want := fmt.Sprintf(`hyperparameter "sagefit_validation_channel" names channel %q, but the job has channels`, name)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %s", name, err, want)
		}
	}
}

// Empty names are refused as every other empty hyperparameter is: a probe
// found an empty sagefit_train_channel or sagefit_model taken for unset.
func TestEmptyChannelAndModelNamesRefused(t *testing.T) {
	for hp, want := range map[string]string{
		"sagefit_train_channel": `hyperparameter "sagefit_train_channel" names channel "", but the job has channels`,
		"sagefit_model":         `hyperparameter "sagefit_model" is empty; give the training SavedModel's path, or leave it out to read the "model" channel`,
	} {
		_, err := job.New(withModelAndData(t, map[string]string{hp: ""}))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s empty: %v, want %s", hp, err, want)
		}
	}
}

// A model channel in Pipe mode, which SageMaker streams and does not lay
// out as files, is refused; locally its folder was read and the mode
// dropped without a word.
func TestModelChannelInPipeModeRefused(t *testing.T) {
	model := t.TempDir()
	if err := os.WriteFile(filepath.Join(model, "saved_model.pb"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := job.New(loadSpec(t, sagemaker.LocalSpec{Channels: map[string]string{"model": model, "training": t.TempDir()},
		InputModes: map[string]string{"model": "Pipe"}}))
	want := `the model channel "model" is in Pipe mode, which streams records through a FIFO; sagefit loads the SavedModel from its files: give the channel File or FastFile mode`
	if err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}
}
