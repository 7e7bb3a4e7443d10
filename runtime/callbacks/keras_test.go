package callbacks

import (
	"bytes"
	"encoding/json"
	"math"
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
	if got := log.String(); !strings.Contains(got, "TerminateOnNaN: batch 3: invalid loss (NaN), terminating training") {
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
