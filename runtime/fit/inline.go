package fit

import (
	"fmt"
	"time"
)

// Where a session call runs its ops (Inliner): in TensorFlow's inter-op
// pool, or in the calling thread. A step of many small ops loses more to
// waking the pool's threads for each op than it gains from running ops
// side by side (the seed MLP: about 80 µs a step in the calling thread
// against 140 µs in the pool); convolutions and large updates are faster
// in the pool (the small CNN and the Embedding model about 15% slower
// without it). So, unless the job fixed it (inter_op_threads -1: always in
// the calling thread), the first train calls after the first are timed
// both ways in turns and the rest run the faster way. The numbers are the
// same either way: the same kernels run on the same inputs.

// inlineProbeCalls are the train calls timed, half each way.
const inlineProbeCalls = 12

// inlineMargin is how much faster the calling thread must be to be chosen:
// the pool is TensorFlow's default, and a few timings are noisy.
const inlineMargin = 0.9

// inlineState is what the probe has learnt.
type inlineState struct {
	warm  bool               // the first call (traces, warms up) has run
	times [2][]time.Duration // per step: [0] in the pool, [1] in the calling thread
	done  bool
	on    bool // the calling thread was chosen
}

// inliner is the model when the probe still has calls to time, else nil.
func (f *Loop) inliner() Inliner {
	if f.inline.done || f.Job.Session.InterOpThreads < 0 {
		return nil
	}
	in, ok := f.Model.(Inliner)
	if !ok {
		return nil
	}
	return in
}

// inlineProbing reports whether train calls are still being timed both
// ways (steps_per_execution "auto" times its steps after that).
func (f *Loop) inlineProbing() bool { return f.inliner() != nil }

// beforeTrainCall sets where the next train call runs while the probe
// times calls: the pool and the calling thread in turns.
func (f *Loop) beforeTrainCall() {
	in := f.inliner()
	if in == nil || !f.inline.warm {
		return
	}
	n := len(f.inline.times[0]) + len(f.inline.times[1])
	in.SetInline(n%2 == 1)
}

// afterTrainCall records a train call's time per step (counted: false for
// a call that traced, the first of its kind) and, once the probe has its
// calls, chooses.
func (f *Loop) afterTrainCall(per time.Duration, counted bool) {
	in := f.inliner()
	if in == nil {
		return
	}
	if !f.inline.warm {
		f.inline.warm = true
		return
	}
	if !counted {
		return
	}
	n := len(f.inline.times[0]) + len(f.inline.times[1])
	f.inline.times[n%2] = append(f.inline.times[n%2], per)
	if n+1 < inlineProbeCalls {
		return
	}
	f.inline.done = true
	pool, inline := median(f.inline.times[0]), median(f.inline.times[1])
	f.inline.on = chooseInline(pool, inline)
	in.SetInline(f.inline.on)
	f.timing.Inline = &InlineTiming{CallingThread: f.inline.on, PoolStepSeconds: pool.Seconds(), InlineStepSeconds: inline.Seconds()}
	if f.inline.on {
		fmt.Fprintf(f.Log, "sagefit: train steps run their ops in the calling thread, not TensorFlow's inter-op pool: %s per step against %s (median of %d each)\n",
			round(inline), round(pool), len(f.inline.times[1]))
	}
}

// chooseInline says whether steps of median inline in the calling thread
// beat steps of median pool in the pool by the margin.
func chooseInline(pool, inline time.Duration) bool {
	return float64(inline) < inlineMargin*float64(pool)
}

func round(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return d.Round(time.Microsecond)
	}
	return d.Round(100 * time.Microsecond)
}
