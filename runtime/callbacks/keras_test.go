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
