package job_test

import (
	"strings"
	"testing"

	"github.com/sagefit/sagefit/runtime/job"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

func load(t *testing.T, hps map[string]string) *sagemaker.Env {
	t.Helper()
	base := t.TempDir()
	if err := sagemaker.WriteLocal(base, sagemaker.LocalSpec{Hyperparameters: hps}); err != nil {
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
