package main_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sagefit/sagefit/runtime/fit"
)

// A real job's timing.json: the schema's version, start-up in order
// (process start, Go's init, the model loaded, the first step ended, all
// within the run as this test saw it), one entry per epoch, one step per
// call (auto still probing after 8 steps); and `sagefit
// inspect` prints it. No timed assertions: only order and sums.
func TestTimingJSON(t *testing.T) {
	base := seedJob(t, map[string]string{"epochs": "2", "batch_size": "50"})
	before := time.Now()
	cmd := exec.Command(binary, "train")
	cmd.Env = append(os.Environ(), "SAGEMAKER_BASE_DIR="+base)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	after := time.Now()
	path := filepath.Join(base, "output", "data", "timing.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var tm fit.Timing
	if err := json.Unmarshal(raw, &tm); err != nil {
		t.Fatal(err)
	}
	if tm.Version != 1 || tm.Hosts != 1 || tm.BatchSize != 50 || tm.StepsPerEpoch != 4 || tm.StepsPerCall != 1 || tm.Examples != 200 || len(tm.Epochs) != 2 || tm.AfterFirstEpoch == nil {
		t.Fatalf("timing.json: %s", raw)
	}
	s := tm.Startup
	unix := func(f float64) time.Time { return time.Unix(0, int64(f*1e9)) }
	// The kernel's start time has 10 ms ticks: allow that much before the test's clock.
	if unix(s.ProcessStartUnix).Before(before.Add(-20*time.Millisecond)) || unix(s.FirstStepEndUnix).After(after) ||
		!(s.LibrariesSeconds > 0 && s.ModelLoadSeconds > 0 && s.LibrariesSeconds+s.ModelLoadSeconds < s.ToFirstStepSeconds && s.FirstStepSeconds > 0) {
		t.Errorf("start-up out of order (test ran %v..%v): %+v", before, after, s)
	}
	if e := tm.Epochs[1]; e.Steps != 4 || e.Examples != 200 || e.StepSeconds.P50 <= 0 || e.StepSeconds.P50 > e.StepSeconds.Max {
		t.Errorf("epoch 2: %+v", e)
	}

	out, err := exec.Command(binary, "inspect", path).CombinedOutput()
	if err != nil {
		t.Fatalf("inspect timing.json: %v\n%s", err, out)
	}
	for _, want := range []string{"(version 1): 1 training process(es), batch 50, 4 steps in the last epoch, 1 per call", "start-up ", "steps ended on TensorFlow's default executor", "epoch 2 ", "after epoch 1 ", "examples/s"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("inspect timing.json lacks %q:\n%s", want, out)
		}
	}
	// --json prints the file, as it does a model's contract (it printed
	// the tables).
	out, err = exec.Command(binary, "inspect", "--json", path).Output()
	if err != nil || strings.TrimSpace(string(out)) != strings.TrimSpace(string(raw)) {
		t.Errorf("inspect --json timing.json: %v\n%s", err, out)
	}
}

// sagefit inspect says what executor "auto" weighed and what came of it:
// moved, a move that failed, a move one process did not find worth, not
// worth it.
func TestInspectSaysWhyStepsDidNotMove(t *testing.T) {
	for _, c := range []struct {
		executor string
		weighed  fit.ExecutorWeighing
		want     string
	}{
		{"single_threaded", fit.ExecutorWeighing{StepSeconds: 80e-6, StepsLeft: 5000, Worth: true, Move: true}, "steps ended on TensorFlow's single_threaded executor; auto weighed 5000 steps left at 80.0µs each: worth the move"},
		{"default", fit.ExecutorWeighing{StepSeconds: 80e-6, StepsLeft: 5000, Worth: true, Move: true}, "worth the move, which failed (see the job's log)"},
		{"default", fit.ExecutorWeighing{StepSeconds: 80e-6, StepsLeft: 5000, Worth: true}, "worth the move on rank 0, not on every process"},
		{"default", fit.ExecutorWeighing{StepSeconds: 80e-6, StepsLeft: 50}, "auto weighed 50 steps left at 80.0µs each: not worth the move"},
	} {
		out := inspectTiming(t, fit.Timing{Version: fit.TimingVersion, Executor: c.executor, ExecutorWeighed: &c.weighed})
		if !strings.Contains(out, c.want) {
			t.Errorf("executor %s, weighed %+v: inspect says\n%s\nwant %q", c.executor, c.weighed, out, c.want)
		}
	}
}

// sagefit inspect names a first call of several steps (steps_per_execution
// given) as such: its time is the block's.
func TestInspectNamesAFirstBlock(t *testing.T) {
	out := inspectTiming(t, fit.Timing{Version: fit.TimingVersion, Startup: fit.Startup{FirstStepSeconds: 2.5, FirstStepEndUnix: 1.8e9, FirstCallSteps: 8}})
	if want := "first call (8 steps) 2.50 s"; !strings.Contains(out, want) {
		t.Errorf("inspect says\n%s\nwant %q", out, want)
	}
}

// sagefit inspect says where steps ended running their ops, and how often
// the probe timed both ways and switched.
func TestInspectSaysWhereStepsRan(t *testing.T) {
	out := inspectTiming(t, fit.Timing{Version: fit.TimingVersion, Inline: &fit.InlineTiming{CallingThread: true, PoolStepSeconds: 150e-6, CallingThreadStepSeconds: 90e-6, Probes: 3, Switches: 1}})
	want := "steps ended running their ops in the calling thread (timed both ways 3 time(s), 1 switch(es); the last time: 150.0µs in the pool, 90.0µs in the calling thread)"
	if !strings.Contains(out, want) {
		t.Errorf("inspect says\n%s\nwant %q", out, want)
	}
}

// The row of the epochs after a run's first names that first: a resumed
// or initial_epoch run's is not epoch 1 (it read "after epoch 1" always).
func TestInspectNamesTheRunsFirstEpoch(t *testing.T) {
	out := inspectTiming(t, fit.Timing{Version: fit.TimingVersion, Epochs: []fit.EpochTiming{{Epoch: 3}, {Epoch: 4}, {Epoch: 5}}, AfterFirstEpoch: &fit.Span{}})
	if !strings.Contains(out, "after epoch 3 ") || strings.Contains(out, "after epoch 1") {
		t.Errorf("inspect says\n%s\nwant a row \"after epoch 3\"", out)
	}
}

// A job stopped before a step ended says so (it printed a negative time to
// the first step), and the averagings of BatchNormalization statistics a
// job of several hosts timed are shown (they were left out).
func TestInspectStartUpWithoutAStepAndAveragings(t *testing.T) {
	out := inspectTiming(t, fit.Timing{Version: fit.TimingVersion, Startup: fit.Startup{LibrariesSeconds: 0.4, ModelLoadSeconds: 0.2}, AverageSeconds: []float64{0.0565, 0.001}})
	for _, want := range []string{"no train step ended: 0.40 s to Go's init (libraries), 0.20 s model load", "averaged over the hosts 2 time(s): 56.50ms, 1.00ms"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect says\n%s\nwant %q", out, want)
		}
	}
	if strings.Contains(out, "-0.") {
		t.Errorf("inspect says a negative time:\n%s", out)
	}
}

// TestInspectOtherJSON: a JSON file that is no timing.json (the job's
// history.json, an array) is refused saying so; a history.json was called
// "timing.json version 0".
func TestInspectOtherJSON(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"history.json": `{"loss": [0.69, 0.68], "accuracy": [0.5, 0.52]}`,
		"list.json":    `[1, 2]`,
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(binary, "inspect", path)
		out, err := cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "is not a timing.json sagefit wrote") {
			t.Errorf("inspect %s: %v\n%s", name, err, out)
		}
	}
	// An older sagefit's, from before the schema's versions, is named so.
	old := filepath.Join(dir, "old.json")
	if err := os.WriteFile(old, []byte(`{"epoch_seconds": [1.5, 1.2], "input_wait_seconds": [0, 0]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command(binary, "inspect", old).CombinedOutput(); !strings.Contains(string(out), "is an older sagefit's timing.json") {
		t.Errorf("inspect of an older timing.json: %s", out)
	}
	// A missing .json is a missing file, not a SavedModel without
	// saved_model.pb.
	cmd := exec.Command(binary, "inspect", filepath.Join(dir, "timing.json"))
	if out, _ := cmd.CombinedOutput(); cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "no such file") {
		t.Errorf("inspect of a missing timing.json: %s", out)
	}
}

// inspectTiming writes tm as a timing.json and returns what sagefit
// inspect says of it.
func inspectTiming(t *testing.T, tm fit.Timing) string {
	t.Helper()
	raw, err := json.Marshal(tm)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "timing.json")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binary, "inspect", path).CombinedOutput()
	if err != nil {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	return string(out)
}
