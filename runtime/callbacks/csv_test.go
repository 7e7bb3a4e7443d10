package callbacks

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/sagefit/sagefit/model"
)

// Floats are written as Python's repr writes them (CSVLogger's cells).
func TestPyRepr(t *testing.T) {
	for _, c := range []struct {
		v    float64
		want string
	}{
		{0.6931471824645996, "0.6931471824645996"}, {1, "1.0"}, {0.1, "0.1"}, {0.0001, "0.0001"},
		{1e-05, "1e-05"}, {1.5e-07, "1.5e-07"}, {1e15, "1000000000000000.0"}, {1e16, "1e+16"},
		{-2.5, "-2.5"}, {0, "0.0"}, {math.Copysign(0, -1), "-0.0"}, {math.NaN(), "nan"}, {math.Inf(-1), "-inf"},
	} {
		if got := pyRepr(c.v); got != c.want {
			t.Errorf("pyRepr(%v) = %q, want %q", c.v, got, c.want)
		}
	}
}

// A job resumed from a checkpoint, in a fresh output folder (a new
// container) or in the same one (a local run, with append), ends with the
// CSV file an uninterrupted job writes.
func TestCSVLoggerResumes(t *testing.T) {
	logs := func(epoch int) *Logs {
		return &Logs{{Name: "loss", Value: 1 / float64(epoch+1)}, {Name: "val_loss", Value: 2 / float64(epoch+1)}}
	}
	start := func(dir string, appendTo bool) *Set {
		t.Helper()
		spec := model.CallbackSpec{Class: "CSVLogger", Config: json.RawMessage(fmt.Sprintf(`{"filename": "log.csv", "append": %v}`, appendTo))}
		s, err := New([]model.CallbackSpec{spec}, Options{OutputDataDir: dir, Writer: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.TrainBegin(); err != nil {
			t.Fatal(err)
		}
		return s
	}
	epochs := func(s *Set, from, to int) {
		t.Helper()
		for e := from; e < to; e++ {
			if _, err := s.EpochEnd(e, logs(e), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	read := func(dir string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, "log.csv"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	whole := t.TempDir()
	epochs(start(whole, false), 0, 3)
	want := read(whole)
	if want != "epoch,loss,val_loss\r\n0,1.0,2.0\r\n1,0.5,1.0\r\n2,0.3333333333333333,0.6666666666666666\r\n" {
		t.Fatalf("uninterrupted file %q", want)
	}
	for _, c := range []struct {
		name     string
		appendTo bool
		same     bool
	}{{"fresh folder", false, false}, {"fresh folder, append", true, false}, {"same folder", false, true}, {"same folder, append", true, true}} {
		t.Run(c.name, func(t *testing.T) {
			first := t.TempDir()
			s := start(first, c.appendTo)
			epochs(s, 0, 2)
			st, _, err := s.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			st, err = roundTrip(st)
			if err != nil {
				t.Fatal(err)
			}
			second := t.TempDir()
			if c.same {
				second = first
			}
			resumed := start(second, c.appendTo)
			if err := resumed.Restore(st, nil, nil); err != nil {
				t.Fatal(err)
			}
			epochs(resumed, 2, 3)
			if got := read(second); got != want {
				t.Errorf("resumed file %q, want %q", got, want)
			}
		})
	}
}

// roundTrip passes st through JSON, as a checkpoint does.
func roundTrip(st State) (State, error) {
	raw, err := json.Marshal(st)
	if err != nil {
		return st, err
	}
	var back State
	return back, json.Unmarshal(raw, &back)
}

// TestCSVLoggerWritesTFKerasLR: a tf-keras model's ReduceLROnPlateau logs
// "lr" as the variable's float32, which the CSV holds as numpy writes it
// (0.001); a metric of the same name with no ReduceLROnPlateau reaches
// tf-keras's logs as a Python float, written as Python writes one.
func TestCSVLoggerWritesTFKerasLR(t *testing.T) {
	lr := float64(float32(0.001))
	for _, c := range []struct {
		reduce bool
		want   string
	}{{true, "0.001"}, {false, "0.0010000000474974513"}} {
		specs := []model.CallbackSpec{{Class: "CSVLogger", Config: json.RawMessage(`{"filename": "log.csv"}`)}}
		if c.reduce { // before the logger, whose row then holds its "lr"
			specs = append([]model.CallbackSpec{{Class: "ReduceLROnPlateau", Config: json.RawMessage(`{"monitor": "loss", "mode": "min", "factor": 0.5, "patience": 10}`)}}, specs...)
		}
		dir := t.TempDir()
		s, err := New(specs, Options{OutputDataDir: dir, Writer: true, TFKeras: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.TrainBegin(); err != nil {
			t.Fatal(err)
		}
		logs := &Logs{{Name: "loss", Value: 0.5}}
		if !c.reduce {
			logs = &Logs{{Name: "loss", Value: 0.5}, {Name: "lr", Value: lr}}
		}
		if _, err := s.EpochEnd(0, logs, rate(lr)); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, "log.csv"))
		if err != nil {
			t.Fatal(err)
		}
		if want := "epoch,loss,lr,val_loss,val_lr\r\n0,0.5," + c.want + ",NA,NA\r\n"; string(b) != want {
			t.Errorf("with ReduceLROnPlateau %v: %q, want %q", c.reduce, b, want)
		}
	}
}
