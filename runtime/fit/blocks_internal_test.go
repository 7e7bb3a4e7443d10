package fit

import (
	"testing"
	"time"
)

// TestAutoStepsMakesCallsOfTheTargetTime: "auto" takes the smallest power
// of two (at most 64) whose call lasts the target, from the median step.
func TestAutoStepsMakesCallsOfTheTargetTime(t *testing.T) {
	us, ms := time.Microsecond, time.Millisecond
	for _, c := range []struct {
		steps []time.Duration
		call  time.Duration
		want  int
	}{
		{[]time.Duration{200 * us, 210 * us, 190 * us, 5000 * us}, 2 * ms, 16}, // median 210 µs; an outlier ignored
		{[]time.Duration{30 * us}, callTime, 64},                               // capped
		{[]time.Duration{4500 * us}, 2 * ms, 1},
		{[]time.Duration{4500 * us}, callTime, 16}, // 8 steps: 36 ms, 16: 72 ms
		{[]time.Duration{6 * ms}, callTime, 16},
		{[]time.Duration{80 * ms}, callTime, 1},
		{[]time.Duration{15 * ms}, callTime, 4},
		{[]time.Duration{30 * ms}, callTime, 1}, // 2 steps per call save too little
		{[]time.Duration{1500 * us}, 2 * ms, 1},
	} {
		if got := autoSteps(c.steps, c.call); got != c.want {
			t.Errorf("autoSteps(%v, %v) = %d, want %d", c.steps, c.call, got, c.want)
		}
	}
}
