package job_test

import (
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
