package fit_test

import (
	"encoding/json"
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/sagefit/sagefit/runtime/fit"
)

// timing.json's schema and values hold together: every documented field
// is there under its name, counts add up, times are positive and ordered
// (never how large they are: no timed assertions).
func TestTimingSchema(t *testing.T) {
	trainDir := t.TempDir()
	writeChannel(t, trainDir, 100, 0) // batch 24: 5 steps, the last of 4 rows
	for _, world := range []int{1, 2} {
		before := time.Now()
		ranks := make([]*rank, world)
		for i := range ranks {
			ranks[i] = &rank{job: newJob(3, 24/world, ""), model: newLinear(), train: openChannel(t, trainDir, false)}
		}
		runRanks(t, ranks)
		after := time.Now()
		for i, r := range ranks {
			if r.err != nil {
				t.Fatalf("world %d rank %d: %v", world, i, r.err)
			}
			checkTiming(t, r.timing, world, before, after)
		}
	}
}

// A job stopped in its first epoch ended none, and its timing.json says
// so with empty lists; its start-up and steps per call are known all the
// same (they were zeros, and the lists null, which a harness's len() fails
// on).
func TestTimingOfAJobStoppedInItsFirstEpoch(t *testing.T) {
	dir := t.TempDir()
	writeChannel(t, dir, 96, 0)
	before := time.Now()
	r := &rank{job: newJob(3, 16, t.TempDir()), model: newLinear(), train: openChannel(t, dir, false)}
	r.model.onStep = sigtermAt(r, 2)
	runRanks(t, []*rank{r})
	var in *fit.Interrupted
	if !errors.As(r.err, &in) || in.Epoch != 1 {
		t.Fatalf("%v, want a stop in epoch 1", r.err)
	}
	tm := r.timing
	st := tm.Startup
	if st.FirstCallSteps != 1 || st.FirstStepSeconds <= 0 || st.ToFirstStepSeconds <= 0 || time.Unix(0, int64(st.ProcessStartUnix*1e9)).After(before) {
		t.Errorf("startup %+v, want the first step's", st)
	}
	if tm.StepsPerCall != 1 || tm.StepsPerEpoch != 0 {
		t.Errorf("steps per call %d, per epoch %d; want 1 and 0 (no epoch ended)", tm.StepsPerCall, tm.StepsPerEpoch)
	}
	doc := asJSON(t, tm)
	for _, k := range []string{"epochs", "epoch_seconds", "input_wait_seconds"} {
		if l, ok := doc[k].([]any); !ok || len(l) != 0 {
			t.Errorf("%s = %v, want []", k, doc[k])
		}
	}
}

func checkTiming(t *testing.T, tm fit.Timing, world int, before, after time.Time) {
	t.Helper()
	if tm.Version != fit.TimingVersion || fit.TimingVersion != 1 {
		t.Errorf("version %d, want %d (1)", tm.Version, fit.TimingVersion)
	}
	if tm.Hosts != world || tm.BatchSize != 24/world || tm.StepsPerEpoch != 5 || tm.StepsPerCall != 1 || tm.Examples != 100 {
		t.Errorf("header %+v", tm)
	}
	if len(tm.Epochs) != 3 || len(tm.EpochSeconds) != 3 || len(tm.InputSeconds) != 3 {
		t.Fatalf("%d epochs, %d epoch_seconds, %d input_wait_seconds; want 3 each", len(tm.Epochs), len(tm.EpochSeconds), len(tm.InputSeconds))
	}
	for i, e := range tm.Epochs {
		if e.Epoch != i+1 || e.Steps != 5 || e.Examples != 100 {
			t.Errorf("epoch %d: number %d, %d steps, %d examples; want %d, 5, 100 (every process's rows)", i+1, e.Epoch, e.Steps, e.Examples, i+1)
		}
		if e.Seconds != tm.EpochSeconds[i] || e.InputWaitSeconds != tm.InputSeconds[i] {
			t.Errorf("epoch %d: %v s, %v s waiting; the arrays say %v, %v", i+1, e.Seconds, e.InputWaitSeconds, tm.EpochSeconds[i], tm.InputSeconds[i])
		}
		checkSpan(t, "epoch", e.Span, world)
	}
	checkSpan(t, "overall", tm.Overall, world)
	if tm.Overall.Steps != 15 || tm.Overall.Examples != 300 {
		t.Errorf("overall: %d steps, %d examples; want 15, 300", tm.Overall.Steps, tm.Overall.Examples)
	}
	if sum := tm.EpochSeconds[0] + tm.EpochSeconds[1] + tm.EpochSeconds[2]; !near(tm.Overall.Seconds, sum) {
		t.Errorf("overall %v s, epochs sum to %v s", tm.Overall.Seconds, sum)
	}
	if s := tm.AfterFirstEpoch; s == nil {
		t.Error("no after_first_epoch with 3 epochs")
	} else {
		checkSpan(t, "after first epoch", *s, world)
		if s.Steps != 10 || s.Examples != 200 || !near(s.Seconds, tm.EpochSeconds[1]+tm.EpochSeconds[2]) {
			t.Errorf("after first epoch: %+v", *s)
		}
	}
	st := tm.Startup
	start := time.Unix(0, int64(st.ProcessStartUnix*1e9))
	end := time.Unix(0, int64(st.FirstStepEndUnix*1e9))
	if start.After(before) || end.Before(before) || end.After(after) || st.LibrariesSeconds < 0 {
		t.Errorf("startup %+v: process start and first step end out of order with the test's %v..%v", st, before, after)
	}
	if gap := st.ProcessStartUnix + st.ToFirstStepSeconds + st.FirstStepSeconds - st.FirstStepEndUnix; st.FirstStepSeconds <= 0 || st.ToFirstStepSeconds <= 0 || math.Abs(gap) > 1e-5 {
		t.Errorf("startup %+v: to first step + first step is not the first step's end", st)
	}
	if st.FirstCallSteps != 1 { // this job's steps run one per call
		t.Errorf("startup: first call of %d steps, want 1", st.FirstCallSteps)
	}

	// The names are the schema: decode the JSON as a harness would.
	doc := asJSON(t, tm)
	hasKeys(t, "timing.json", doc, "version", "hosts", "batch_size", "steps_per_epoch", "steps_per_call", "examples", "startup", "epochs", "overall", "after_first_epoch", "epoch_seconds", "input_wait_seconds")
	hasKeys(t, "startup", doc["startup"].(map[string]any), "process_start_unix", "libraries_seconds", "model_load_seconds", "to_first_step_seconds", "first_step_seconds", "first_step_end_unix", "first_call_steps")
	epoch := doc["epochs"].([]any)[0].(map[string]any)
	spanKeys := []string{"seconds", "steps", "examples", "examples_per_second", "step_seconds", "input_wait_seconds", "input_wait_share", "allreduce_seconds", "allreduce_share"}
	hasKeys(t, "epochs[0]", epoch, append(spanKeys, "epoch")...)
	hasKeys(t, "overall", doc["overall"].(map[string]any), spanKeys...)
	hasKeys(t, "step_seconds", epoch["step_seconds"].(map[string]any), "total", "mean", "p50", "p90", "p99", "max")
}

func checkSpan(t *testing.T, what string, s fit.Span, world int) {
	t.Helper()
	d := s.StepSeconds
	if !(d.P50 > 0 && d.P50 <= d.P90 && d.P90 <= d.P99 && d.P99 <= d.Max) {
		t.Errorf("%s: step percentiles out of order: %+v", what, d)
	}
	if !near(d.Mean*float64(s.Steps), d.Total) || d.Total > s.Seconds || d.Mean > d.Max {
		t.Errorf("%s: step total %v s over %d steps (mean %v) in %v s", what, d.Total, s.Steps, d.Mean, s.Seconds)
	}
	if !near(s.ExamplesPerSecond, float64(s.Examples)/s.Seconds) {
		t.Errorf("%s: %v examples/s, %d examples in %v s", what, s.ExamplesPerSecond, s.Examples, s.Seconds)
	}
	if s.InputWaitSeconds < 0 || s.InputWaitSeconds > d.Total || !near(s.InputWaitShare, s.InputWaitSeconds/d.Total) {
		t.Errorf("%s: input wait %v s (share %v) of %v s", what, s.InputWaitSeconds, s.InputWaitShare, d.Total)
	}
	switch {
	case world == 1 && (s.AllReduceSeconds != 0 || s.AllReduceShare != 0):
		t.Errorf("%s: one process all-reduced for %v s", what, s.AllReduceSeconds)
	case world > 1 && (s.AllReduceSeconds <= 0 || s.AllReduceSeconds > d.Total || !near(s.AllReduceShare, s.AllReduceSeconds/d.Total)):
		t.Errorf("%s: all-reduce %v s (share %v) of %v s", what, s.AllReduceSeconds, s.AllReduceShare, d.Total)
	}
}

// asJSON is tm as a harness decodes timing.json.
func asJSON(t *testing.T, tm fit.Timing) map[string]any {
	t.Helper()
	raw, err := json.Marshal(tm)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

func hasKeys(t *testing.T, what string, m map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			t.Errorf("%s has no %q (has %v)", what, k, slices.Sorted(func(yield func(string) bool) {
				for k := range m {
					if !yield(k) {
						return
					}
				}
			}))
		}
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*max(1, math.Abs(a), math.Abs(b)) }
