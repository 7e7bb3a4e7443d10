package fit

import (
	"testing"
	"time"
)

// TestAutoStepsMakesCallsOfTheTargetTime: "auto" takes the smallest power
// of two (at most 64) whose call lasts the target, from the median step;
// an XLA-compiled model's larger per-call cost asks for longer calls.
func TestAutoStepsMakesCallsOfTheTargetTime(t *testing.T) {
	us := time.Microsecond
	for _, c := range []struct {
		steps []time.Duration
		call  time.Duration
		want  int
	}{
		{[]time.Duration{200 * us, 210 * us, 190 * us, 5000 * us}, callTime, 16}, // median 210 µs; an outlier ignored
		{[]time.Duration{30 * us}, callTime, 64},                                 // capped
		{[]time.Duration{4500 * us}, callTime, 1},
		{[]time.Duration{4500 * us}, xlaCallTime, 16}, // 8 steps: 36 ms, 16: 72 ms
		{[]time.Duration{160 * us}, xlaCallTime, 64},
		{[]time.Duration{300 * time.Millisecond}, xlaCallTime, 1},
	} {
		if got := autoSteps(c.steps, c.call); got != c.want {
			t.Errorf("autoSteps(%v, %v) = %d, want %d", c.steps, c.call, got, c.want)
		}
	}
}
