package callbacks

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/sagefit/sagefit/model"
)

// TensorBoard makes the validation events file at its first validation
// record, as Keras makes its writer: a job without validation data wrote
// an empty one (a probe).
func TestTensorBoardValidationFileOnlyWithValidation(t *testing.T) {
	for _, validates := range []bool{false, true} {
		dir := t.TempDir()
		spec := model.CallbackSpec{Class: "TensorBoard", Config: json.RawMessage(`{"log_dir": "", "update_freq": "epoch"}`)}
		s, err := New([]model.CallbackSpec{spec}, Options{Writer: true, TensorBoardDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.TrainBegin(); err != nil {
			t.Fatal(err)
		}
		logs := Logs{{Name: "loss", Value: 0.5}}
		if validates {
			logs = append(logs, model.Metric{Name: "val_loss", Value: 0.6})
		}
		if _, err := s.EpochEnd(0, &logs, rate(0.1)); err != nil {
			t.Fatal(err)
		}
		if err := s.TrainEnd(rate(0.1)); err != nil {
			t.Fatal(err)
		}
		for sub, want := range map[string]bool{"train": true, "validation": validates} {
			files, _ := filepath.Glob(filepath.Join(dir, sub, "events.out.tfevents.*"))
			if got := len(files) == 1; got != want {
				t.Errorf("validation data %v: %s events files %v, want one: %v", validates, sub, files, want)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "validation")); validates != (err == nil) {
			t.Errorf("validation data %v: validation folder: %v", validates, err)
		}
	}
}
