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
