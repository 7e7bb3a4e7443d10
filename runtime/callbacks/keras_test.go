package callbacks

import (
	"bytes"
	"encoding/json"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sagefit/sagefit/model"
)

// TerminateOnNaN ends training at a batch whose loss is NaN or infinite and
// says so, as Keras prints "Batch N: Invalid loss, terminating training";
// before, the job ended early with nothing saying why.
func TestTerminateOnNaNSaysWhy(t *testing.T) {
	var log bytes.Buffer
	s, err := New([]model.CallbackSpec{{Class: "TerminateOnNaN", Config: json.RawMessage(`{}`)}}, Options{Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	if stop, err := s.BatchEnd(2, Logs{{Name: "loss", Value: 0.5}}); stop || err != nil {
		t.Fatalf("a finite loss: stop %v, %v", stop, err)
	}
	if log.Len() != 0 {
		t.Fatalf("a finite loss logged %q", log.String())
	}
	stop, err := s.BatchEnd(3, Logs{{Name: "loss", Value: math.NaN()}})
	if !stop || err != nil {
		t.Fatalf("a NaN loss: stop %v, %v; want a stop", stop, err)
	}
	if got := log.String(); !strings.Contains(got, "TerminateOnNaN: train step 3 of the job: invalid loss (NaN), terminating training") {
		t.Errorf("logged %q", got)
	}
}

// A CSVLogger whose file sagefit writes itself, or another CSVLogger does,
// is refused: it overwrote history.json's place, or two loggers
// interleaved their rows in one file.
func TestCSVLoggerFileTaken(t *testing.T) {
	o := Options{OutputDataDir: t.TempDir(), Writer: true, Taken: []string{"history.json"}}
	csv := func(name string) model.CallbackSpec {
		return model.CallbackSpec{Class: "CSVLogger", Config: json.RawMessage(`{"filename": "` + name + `"}`)}
	}
	for _, specs := range [][]model.CallbackSpec{
		{csv("history.json")},
		{csv("log.csv"), csv("sub/log.csv")},
	} {
		_, err := New(specs, o)
		if err == nil || !strings.Contains(err.Error(), "is written by sagefit or by another CSVLogger already") {
			t.Errorf("%s: %v", specs, err)
		}
	}
	if _, err := New([]model.CallbackSpec{csv("a.csv"), csv("b.csv")}, o); err != nil {
		t.Errorf("two loggers of two files: %v", err)
	}
}

// A callback watching a metric the epoch logs lack (val_loss without
// validation data) is named in a warning, once, as Keras warns; the
// warning was never written (no writer was handed to it).
func TestMissingMonitorIsNamed(t *testing.T) {
	var log bytes.Buffer
	s, err := New([]model.CallbackSpec{
		{Class: "EarlyStopping", Config: json.RawMessage(`{"monitor": "val_loss", "mode": "min", "patience": 1}`)},
		{Class: "ReduceLROnPlateau", Config: json.RawMessage(`{"monitor": "val_loss", "mode": "min", "factor": 0.5, "patience": 1}`)},
	}, Options{Writer: true, Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	for epoch := range 3 {
		logs := Logs{{Name: "loss", Value: 0.5}}
		if _, err := s.EpochEnd(epoch, &logs, rate(0.1)); err != nil {
			t.Fatal(err)
		}
	}
	for _, who := range []string{"EarlyStopping", "ReduceLROnPlateau"} {
		want := "sagefit: warning: " + who + ` watches "val_loss", which the epoch logs do not have (they have [loss`
		if n := strings.Count(log.String(), want); n != 1 {
			t.Errorf("%d warnings %q in %q, want 1", n, want, log.String())
		}
	}
}

// rate is a model of a learning rate only (what ReduceLROnPlateau reads).
type rate float64

func (r rate) ReadVariables() ([]model.Variable, error) { return nil, nil }
func (r rate) AssignVariables([]model.Variable) error   { return nil }
func (r rate) LearningRate() (float64, error)           { return float64(r), nil }
func (r rate) SetLearningRate(float64) error            { return nil }

// verbose=1 prints Keras's lines: ReduceLROnPlateau's reduction,
// EarlyStopping's stop and ModelCheckpoint's judgement of each epoch, from
// the writing process only; the exporter dropped verbose and an early stop
// went without a word (ModelCheckpoint's until later).
func TestVerboseCallbacksSayWhatKerasSays(t *testing.T) {
	specs := []model.CallbackSpec{
		{Class: "EarlyStopping", Config: json.RawMessage(`{"monitor": "loss", "mode": "min", "patience": 1, "verbose": 1}`)},
		{Class: "ReduceLROnPlateau", Config: json.RawMessage(`{"monitor": "loss", "mode": "min", "factor": 0.5, "patience": 1, "verbose": 1}`)},
		{Class: "ModelCheckpoint", Config: json.RawMessage(`{"monitor": "loss", "mode": "min", "filepath": "best.keras", "verbose": 1}`)},
	}
	for _, writer := range []bool{true, false} {
		var log bytes.Buffer
		s, err := New(specs, Options{Writer: writer, Log: &log})
		if err != nil {
			t.Fatal(err)
		}
		stopped := false
		for epoch := 0; epoch < 5 && !stopped; epoch++ {
			logs := Logs{{Name: "loss", Value: 0.5}}
			if stopped, err = s.EpochEnd(epoch, &logs, rate(0.1)); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.TrainEnd(rate(0.1)); err != nil {
			t.Fatal(err)
		}
		want := "sagefit: note: ModelCheckpoint(save_best_only=True): the model of the epoch with the best loss is the one written to the model dir; its filepath \"best.keras\" does not apply\n" +
			"\nEpoch 1: loss improved from None to 0.50000, keeping this epoch's model for the model dir\n" +
			"\nEpoch 2: ReduceLROnPlateau reducing learning rate to 0.05.\n" +
			"\nEpoch 2: loss did not improve from 0.50000\n" +
			"Epoch 2: early stopping\n"
		if !writer {
			want = ""
		}
		if log.String() != want {
			t.Errorf("writer %v: logged %q, want %q", writer, log.String(), want)
		}
	}
}

// ModelCheckpoint's lines write a NaN or infinite value as Python's
// f"{v:.5f}" does ("nan"), not as Go's %.5f ("NaN"); and as Keras 3, a
// first NaN improves on no value, which no later value improves on.
func TestModelCheckpointSaysNaNAsKeras(t *testing.T) {
	var log bytes.Buffer
	s, err := New([]model.CallbackSpec{{Class: "ModelCheckpoint", Config: json.RawMessage(`{"monitor": "loss", "mode": "min", "filepath": "m.keras", "verbose": 1}`)}},
		Options{Writer: true, Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	log.Reset() // the note that the filepath does not apply
	for epoch, loss := range []float64{math.NaN(), 0.5} {
		if _, err := s.EpochEnd(epoch, &Logs{{Name: "loss", Value: loss}}, rate(0.1)); err != nil {
			t.Fatal(err)
		}
	}
	want := "\nEpoch 1: loss improved from None to nan, keeping this epoch's model for the model dir\n\nEpoch 2: loss did not improve from nan\n"
	if log.String() != want {
		t.Errorf("logged %q, want %q", log.String(), want)
	}
}

// A checkpoint of another export (the same layers, other callbacks) is
// refused saying what it is and what to do; it said only the two counts.
func TestRestoreOfOtherCallbacksSaysWhatToDo(t *testing.T) {
	s, err := New([]model.CallbackSpec{{Class: "TerminateOnNaN", Config: json.RawMessage(`{}`)}}, Options{Log: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Restore(State{Callbacks: []json.RawMessage{}}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "holds the state of 0 callbacks and the model was exported with 1: it is another export's checkpoint") ||
		!strings.Contains(err.Error(), "give this job a checkpoint location of its own") {
		t.Errorf("restore of another export's callbacks: %v", err)
	}
}

// weights is a model of one one-byte variable, the epoch it was trained to.
type weights struct{ epoch byte }

func (w *weights) ReadVariables() ([]model.Variable, error) {
	return []model.Variable{{Spec: model.VariableSpec{Kind: model.KindModel}, Tensor: model.Tensor{Data: []byte{w.epoch}}}}, nil
}
func (w *weights) AssignVariables(v []model.Variable) error { w.epoch = v[0].Data[0]; return nil }
func (w *weights) LearningRate() (float64, error)           { return 0.1, nil }
func (w *weights) SetLearningRate(float64) error            { return nil }

// train runs five epochs whose loss falls (best at the last, epoch 4) and
// whose val_loss is best at epoch 1, then ends training.
func train(t *testing.T, specs []model.CallbackSpec, m *weights, resumeAt int) {
	t.Helper()
	s, err := New(specs, Options{Log: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	for epoch := range 5 {
		if epoch == resumeAt { // a checkpoint, and a new job resuming from it
			st, best, err := s.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			raw, err := json.Marshal(st)
			if err != nil {
				t.Fatal(err)
			}
			var back State
			if err := json.Unmarshal(raw, &back); err != nil {
				t.Fatal(err)
			}
			if s, err = New(specs, Options{Log: &bytes.Buffer{}}); err != nil {
				t.Fatal(err)
			}
			if err := s.Restore(back, best, m); err != nil {
				t.Fatal(err)
			}
		}
		m.epoch = byte(epoch)
		logs := Logs{{Name: "loss", Value: 1 - 0.1*float64(epoch)}, {Name: "val_loss", Value: []float64{0.9, 0.5, 0.7, 0.8, 0.9}[epoch]}}
		if _, err := s.EpochEnd(epoch, &logs, m); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.TrainEnd(m); err != nil {
		t.Fatal(err)
	}
}

// Each callback that keeps weights keeps its own copy (they shared one: the
// last kept in time was restored, whichever callback kept it), through a
// checkpoint too; EarlyStopping's restore in the callbacks' order, the last
// one's best being the model, as in Keras; ModelCheckpoint's best model is
// the one written, after any EarlyStopping's restore, as its note says.
func TestCallbacksKeepTheirOwnWeights(t *testing.T) {
	es := func(monitor string) model.CallbackSpec {
		return model.CallbackSpec{Class: "EarlyStopping", Config: json.RawMessage(`{"monitor": "` + monitor + `", "mode": "min", "patience": 100, "restore_best_weights": true}`)}
	}
	mc := func(monitor string) model.CallbackSpec {
		return model.CallbackSpec{Class: "ModelCheckpoint", Config: json.RawMessage(`{"monitor": "` + monitor + `", "mode": "min", "filepath": "m.keras"}`)}
	}
	for _, c := range []struct {
		name  string
		specs []model.CallbackSpec
		want  byte
	}{
		{"EarlyStopping loss, then val_loss", []model.CallbackSpec{es("loss"), es("val_loss")}, 1},
		{"EarlyStopping val_loss, then loss", []model.CallbackSpec{es("val_loss"), es("loss")}, 4},
		{"ModelCheckpoint before EarlyStopping", []model.CallbackSpec{mc("val_loss"), es("loss")}, 1},
		{"ModelCheckpoint after EarlyStopping", []model.CallbackSpec{es("loss"), mc("val_loss")}, 1},
	} {
		for _, resumeAt := range []int{-1, 3} {
			m := &weights{}
			train(t, c.specs, m, resumeAt)
			if m.epoch != c.want {
				t.Errorf("%s (resumed at epoch %d): the model is epoch %d's, want %d's", c.name, resumeAt, m.epoch, c.want)
			}
		}
	}

	// A checkpoint of a sagefit that kept one copy for all gives it to each.
	s, err := New([]model.CallbackSpec{es("loss"), es("val_loss")}, Options{Log: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	if s, err = New([]model.CallbackSpec{es("loss"), es("val_loss")}, Options{Writer: true, Log: &log}); err != nil {
		t.Fatal(err)
	}
	st := State{Callbacks: []json.RawMessage{json.RawMessage(`{"best": 0.5, "best_epoch": 2, "have_weights": true}`), json.RawMessage(`{"best": 0.5, "best_epoch": 2, "have_weights": true}`)}}
	m := &weights{epoch: 9}
	if err := s.Restore(st, []byte{2}, m); err != nil {
		t.Fatal(err)
	}
	if err := s.TrainEnd(m); err != nil || m.epoch != 2 {
		t.Errorf("restored from one shared copy: the model is epoch %d's (%v), want 2's", m.epoch, err)
	}
	if !strings.Contains(log.String(), "the checkpoint, of an older sagefit, holds one copy of kept weights for the 2 callbacks") {
		t.Errorf("no warning of the older checkpoint's one copy: %q", log.String())
	}
}

// Several ModelCheckpoint(save_best_only) callbacks: one model is written,
// and a warning says whose.
func TestSeveralModelCheckpointsAreNamed(t *testing.T) {
	var log bytes.Buffer
	_, err := New([]model.CallbackSpec{
		{Class: "ModelCheckpoint", Config: json.RawMessage(`{"monitor": "loss", "mode": "min", "filepath": "a.keras"}`)},
		{Class: "ModelCheckpoint", Config: json.RawMessage(`{"monitor": "val_accuracy", "mode": "max", "filepath": "b.keras"}`)},
	}, Options{Writer: true, Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	want := "sagefit: warning: 2 ModelCheckpoint(save_best_only=True) callbacks (monitoring loss, val_accuracy): the model dir holds one model, the best of the last one's monitor (val_accuracy); the others' best models are not written\n"
	if !strings.Contains(log.String(), want) {
		t.Errorf("logged %q, want it to hold %q", log.String(), want)
	}
}

// An epoch without ModelCheckpoint's monitor (validation_freq=2) keeps its
// model, as Keras saves it ("Can save best model only with val_loss
// available."), and the warning says so; the model dir had the last
// validated epoch's model, where Keras's file has the last epoch's.
//
// tf-keras's ModelCheckpoint skips such an epoch ("Can save best model only
// with val_loss available, skipping."): the last validated epoch's.
func TestModelCheckpointKeepsAnEpochWithoutItsMonitor(t *testing.T) {
	for _, tfKeras := range []bool{false, true} {
		var log bytes.Buffer
		s, err := New([]model.CallbackSpec{{Class: "ModelCheckpoint", Config: json.RawMessage(`{"monitor": "val_loss", "mode": "min", "filepath": "m.keras"}`)}},
			Options{Writer: true, Log: &log, TFKeras: tfKeras})
		if err != nil {
			t.Fatal(err)
		}
		m := &weights{}
		for epoch := range 3 {
			m.epoch = byte(epoch)
			logs := Logs{{Name: "loss", Value: 0.5}}
			if epoch == 1 {
				logs = append(logs, model.Metric{Name: "val_loss", Value: 0.4})
			}
			if _, err := s.EpochEnd(epoch, &logs, m); err != nil {
				t.Fatal(err)
			}
		}
		want, said := byte(2), `as Keras saves the model of such an epoch ("Can save best model only with val_loss available."), it is kept for the model dir, in place of any EarlyStopping's restored weights`
		if tfKeras {
			want, said = 1, "such epochs are skipped, as in Keras"
		}
		if err := s.TrainEnd(m); err != nil || m.epoch != want {
			t.Errorf("tf-keras %v: the model is epoch %d's (%v), want %d's", tfKeras, m.epoch, err, want)
		}
		if !strings.Contains(log.String(), said) {
			t.Errorf("tf-keras %v: logged %q, want it to hold %q", tfKeras, log.String(), said)
		}
	}
}

// twoKinds is a model of a one-byte weight and a one-byte optimizer slot.
type twoKinds struct{ weight, slot byte }

func (m *twoKinds) ReadVariables() ([]model.Variable, error) {
	return []model.Variable{
		{Spec: model.VariableSpec{Kind: model.KindModel}, Tensor: model.Tensor{Data: []byte{m.weight}}},
		{Spec: model.VariableSpec{Kind: model.KindOptimizer}, Tensor: model.Tensor{Data: []byte{m.slot}}},
	}, nil
}
func (m *twoKinds) AssignVariables(v []model.Variable) error {
	m.weight, m.slot = v[0].Data[0], v[1].Data[0]
	return nil
}
func (m *twoKinds) LearningRate() (float64, error) { return 0.1, nil }
func (m *twoKinds) SetLearningRate(float64) error  { return nil }

// EarlyStopping keeps the model's weights alone (it restores no more, as
// Keras's set_weights), ModelCheckpoint every variable: a checkpoint holds
// each as kept (here 1 and 2 bytes), and a resumed job restores both.
func TestKeptWeightsHoldWhatTheyRestore(t *testing.T) {
	specs := []model.CallbackSpec{
		{Class: "EarlyStopping", Config: json.RawMessage(`{"monitor": "loss", "mode": "min", "patience": 100, "restore_best_weights": true}`)},
		{Class: "ModelCheckpoint", Config: json.RawMessage(`{"monitor": "val_loss", "mode": "min", "filepath": "m.keras"}`)},
	}
	s, err := New(specs, Options{Log: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	m := &twoKinds{}
	epoch := func(e int, loss, val float64) {
		m.weight, m.slot = byte(e), byte(100+e)
		if _, err := s.EpochEnd(e, &Logs{{Name: "loss", Value: loss}, {Name: "val_loss", Value: val}}, m); err != nil {
			t.Fatal(err)
		}
	}
	epoch(0, 0.9, 0.5) // ModelCheckpoint's best
	epoch(1, 0.8, 0.9) // EarlyStopping's best
	st, best, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(best, []byte{1, 0, 100}) || !slices.Equal(st.Kept, []int{0, 1}) {
		t.Fatalf("kept %v of %v, want EarlyStopping's weight (1) then ModelCheckpoint's weight and slot (0, 100)", best, st.Kept)
	}
	if s, err = New(specs, Options{Log: &bytes.Buffer{}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Restore(st, best, m); err != nil {
		t.Fatal(err)
	}
	epoch(2, 0.85, 0.95)
	if err := s.TrainEnd(m); err != nil || m.weight != 0 || m.slot != 100 {
		t.Errorf("the model after training: weight %d slot %d (%v), want ModelCheckpoint's epoch 0 (0, 100)", m.weight, m.slot, err)
	}
}

// EarlyStopping alone: its copy is the model's weight (one byte here), and
// its restore leaves the optimizer's slot as training left it.
func TestEarlyStoppingKeepsTheModelsWeights(t *testing.T) {
	specs := []model.CallbackSpec{{Class: "EarlyStopping", Config: json.RawMessage(`{"monitor": "loss", "mode": "min", "patience": 100, "restore_best_weights": true}`)}}
	s, err := New(specs, Options{Log: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	m := &twoKinds{}
	for e, loss := range []float64{0.5, 0.9} {
		m.weight, m.slot = byte(e), byte(100+e)
		if _, err := s.EpochEnd(e, &Logs{{Name: "loss", Value: loss}}, m); err != nil {
			t.Fatal(err)
		}
	}
	st, best, err := s.Snapshot()
	if err != nil || !bytes.Equal(best, []byte{0}) {
		t.Fatalf("kept %v (%v), want the weight of epoch 0 alone", best, err)
	}
	if s, err = New(specs, Options{Log: &bytes.Buffer{}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Restore(st, best, m); err != nil {
		t.Fatal(err)
	}
	if err := s.TrainEnd(m); err != nil || m.weight != 0 || m.slot != 101 {
		t.Errorf("weight %d slot %d (%v), want epoch 0's weight and the last slot (0, 101)", m.weight, m.slot, err)
	}
}

// TestJobTensorBoardKeepsNoStateInCheckpoints: the TensorBoard callback a
// job's TensorBoardOutputConfig adds is not the export's: a checkpoint of
// the export's callbacks resumes with the config given or not (a job given
// it refused every checkpoint written without it, as another export's).
func TestJobTensorBoardKeepsNoStateInCheckpoints(t *testing.T) {
	specs := []model.CallbackSpec{{Class: "EarlyStopping", Config: json.RawMessage(`{"monitor": "loss", "mode": "min", "patience": 100}`)}}
	var log bytes.Buffer
	with, err := New(specs, Options{Log: &log, Writer: true, TensorBoardDir: t.TempDir(), JobTensorBoard: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "the job has a TensorBoardOutputConfig and the model no TensorBoard callback") {
		t.Errorf("no note of the added callback: %q", log.String())
	}
	without, err := New(specs, Options{Log: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]*Set{{with, without}, {without, with}} {
		st, best, err := pair[0].Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Callbacks) != 1 {
			t.Errorf("the checkpoint holds %d callbacks' state, want the export's 1", len(st.Callbacks))
		}
		if err := pair[1].Restore(st, best, &twoKinds{}); err != nil {
			t.Errorf("restore across the TensorBoardOutputConfig: %v", err)
		}
	}
	// The model's own TensorBoard is not doubled.
	own := append(slices.Clone(specs), model.CallbackSpec{Class: "TensorBoard", Config: json.RawMessage(`{"log_dir": "tb", "update_freq": "epoch"}`)})
	s, err := New(own, Options{Log: &bytes.Buffer{}, JobTensorBoard: true})
	if err != nil || len(s.list) != 2 || s.exported != 2 {
		t.Errorf("with the model's own TensorBoard: %d callbacks, %d exported (%v), want 2 and 2", len(s.list), s.exported, err)
	}
}

// seeded is a model of a one-byte weight, a one-byte seed state (a model
// variable that is not a weight) and a one-byte optimizer slot.
type seeded struct{ weight, seed, slot byte }

func (m *seeded) ReadVariables() ([]model.Variable, error) {
	return []model.Variable{
		{Spec: model.VariableSpec{Kind: model.KindModel}, Tensor: model.Tensor{Data: []byte{m.weight}}},
		{Spec: model.VariableSpec{Kind: model.KindModel, NotWeight: true}, Tensor: model.Tensor{Data: []byte{m.seed}}},
		{Spec: model.VariableSpec{Kind: model.KindOptimizer}, Tensor: model.Tensor{Data: []byte{m.slot}}},
	}, nil
}
func (m *seeded) AssignVariables(v []model.Variable) error {
	m.weight, m.seed, m.slot = v[0].Data[0], v[1].Data[0], v[2].Data[0]
	return nil
}
func (m *seeded) LearningRate() (float64, error) { return 0.1, nil }
func (m *seeded) SetLearningRate(float64) error  { return nil }

// TestKeptWeightsOfAnOlderLayoutResume: EarlyStopping keeps the model's
// weights, not its seed state; a checkpoint of a runtime that kept the seed
// state too (before NotWeight) resumes, read in its layout, and the restore
// still leaves the seed state as training left it.
func TestKeptWeightsOfAnOlderLayoutResume(t *testing.T) {
	specs := []model.CallbackSpec{{Class: "EarlyStopping", Config: json.RawMessage(`{"monitor": "loss", "mode": "min", "patience": 100, "restore_best_weights": true}`)}}
	s, err := New(specs, Options{Log: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	m := &seeded{weight: 1, seed: 50, slot: 101}
	if _, err := s.EpochEnd(0, &Logs{{Name: "loss", Value: 0.5}}, m); err != nil {
		t.Fatal(err)
	}
	st, best, err := s.Snapshot()
	if err != nil || !bytes.Equal(best, []byte{1}) {
		t.Fatalf("kept %v (%v), want the weight alone", best, err)
	}
	for name, bytes := range map[string][]byte{"this layout": {1}, "the older layout": {1, 50}} {
		s, err := New(specs, Options{Log: &strings.Builder{}})
		if err != nil {
			t.Fatal(err)
		}
		m := &seeded{weight: 2, seed: 70, slot: 102}
		if err := s.Restore(st, bytes, m); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := s.TrainEnd(m); err != nil || m.weight != 1 || m.seed != 70 || m.slot != 102 {
			t.Errorf("%s: weight %d seed %d slot %d (%v), want the kept weight and the seed and slot as training left them (1, 70, 102)", name, m.weight, m.seed, m.slot, err)
		}
	}
}

// CSVLogger writes to the job's output data folder under its file name; a
// filename with a folder says where the file goes instead (the exporter
// kept the base name alone, and the folder was dropped without a word).
func TestCSVLoggerSaysWhereItWrites(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ filename, want string }{
		{"log.csv", ""},
		{"/tmp/runs/log.csv", "sagefit: note: CSVLogger writes " + filepath.Join(dir, "log.csv") + " (in output.tar.gz), not /tmp/runs/log.csv\n"},
		// Exported on Windows.
		{`C:\\runs\\log.csv`, "sagefit: note: CSVLogger writes " + filepath.Join(dir, "log.csv") + ` (in output.tar.gz), not C:\runs\log.csv` + "\n"},
	} {
		var log bytes.Buffer
		spec := model.CallbackSpec{Class: "CSVLogger", Config: json.RawMessage(`{"filename": "` + c.filename + `", "separator": ",", "append": false}`)}
		if _, err := New([]model.CallbackSpec{spec}, Options{Writer: true, OutputDataDir: dir, Log: &log}); err != nil {
			t.Fatal(err)
		}
		if log.String() != c.want {
			t.Errorf("filename %q: logged %q, want %q", c.filename, log.String(), c.want)
		}
	}
}
