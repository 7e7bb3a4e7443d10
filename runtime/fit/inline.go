package fit

import (
	"fmt"
	"slices"
	"time"

	"github.com/sagefit/sagefit/runtime/job"
)

// Where a session call runs its ops (Inliner): in TensorFlow's inter-op
// pool, or in the calling thread. A step of many small ops loses more to
// waking the pool's threads for each op than it gains from running ops
// side by side (the seed MLP: about 80 µs a step in the calling thread
// against 140 µs in the pool); convolutions and large updates are faster
// in the pool (the small CNN, MobileNetV2 and the Embedding model up to
// 17% slower without it). So, unless the job fixed it (inter_op_threads
// given: N, the pool; -1, always the calling thread), train calls after the
// first few are timed both ways and the rest run the faster way. The
// numbers are the same either way: the same kernels run on the same inputs.
//
// The calls are timed in pairs, one way each, the pairs taking turns (pool,
// pool, calling thread, calling thread, pool, ...), and only the second
// call of each pair counts: the first of a pair after a switch pays for it
// (the pool's threads have parked while the calling thread ran), which
// alternating call by call charged to the pool. Each way is judged by its
// fastest call: what noise adds (other processes, the runtime) only ever
// slows a call down.
const (
	inlineWarmCalls  = 3  // not timed: the first traces, the next still warm up
	inlineProbeCalls = 24 // timed: 12 pairs, 6 counted each way
)

// inlineMargin is how much faster the calling thread must be to be chosen:
// the pool is TensorFlow's default, and a few timings are noisy. Measured
// (make bench, fastest calls, calling thread over pool): the CNN,
// MobileNetV2 and the Embedding model 0.96-1.32 in 42 runs, the LSTM
// 0.55-0.98, the seed MLP 0.43-0.83 (one XLA run 1.10).
const inlineMargin = 0.95

// Once chosen, the probe times both ways again after a while, and again
// after each choice: this VM slows one way or the other for stretches of
// hundreds of calls (timing the seed MLP's calls both ways for 400 calls,
// the calling thread's fastest per 48 calls went from 104 to 177 µs and
// stayed, or from 208 back to 94 µs), so a choice made in such a stretch
// held for the rest of the job (the pool chosen for the seed MLP in about
// 1 job in 12 here: its steps 1.7x slower to the end). The wait is at least
// inlineReprobeMin, and inlineReprobeFactor times the probe's own span,
// so a probe costs at most about 0.5% of the time it covers: half its
// calls run the slower way, which at worst takes twice as long.
//
// Several processes wait inlineReprobeCalls train steps instead, the same
// on every process: a call's time there includes the all-reduce, which
// waits for the slowest process, so the processes must time the same way
// at the same calls, as in the first probe, or each one's timing would be
// the others' (a process timing the calling thread alone would wait for
// the others' pool steps, and never find it faster).
var (
	inlineReprobeMin    = time.Second
	inlineReprobeFactor = time.Duration(100)
	inlineReprobeCalls  = 100 * inlineProbeCalls
)

// inlineState is what the probe has learnt.
type inlineState struct {
	calls     int                // train calls seen since the probe (re)started, the warm-up's included
	times     [2][]time.Duration // per step, counted calls: [0] in the pool, [1] in the calling thread
	done      bool               // chosen: the finding is in the timing (InlineTiming)
	since     time.Time          // the first timed call of this probe ended
	again     time.Time          // when to time both ways again, once chosen (one process)
	againStep int                // the train step after which to time again (several processes)
}

// inliner is the model when the probe still has calls to time, else nil.
func (f *Loop) inliner() Inliner {
	if f.inline.done || !f.Job.ProbeInline || f.Job.Executor == job.ExecutorSingleThreaded {
		return nil // single_threaded: every op runs in the calling thread anyway (single.go)
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

// probeCall is the probe's call j (from 0, after the warm-up): whether it
// runs in the calling thread, and whether its time counts.
func probeCall(j int) (inline, counted bool) {
	return (j/2)%2 == 1, j%2 == 1
}

// beforeTrainCall sets where the next train call runs while the probe
// times calls.
func (f *Loop) beforeTrainCall() {
	in := f.inliner()
	if in == nil || f.inline.calls < inlineWarmCalls {
		return
	}
	on, _ := probeCall(f.inline.calls - inlineWarmCalls)
	in.SetInline(on)
}

// afterTrainCall records a train call's time per step (fresh: false for a
// call that traced, the first of its kind, which is not counted) and, once
// the probe has its calls, chooses.
func (f *Loop) afterTrainCall(per time.Duration, fresh bool) {
	in := f.inliner()
	if in == nil {
		f.reprobeWhenDue()
		return
	}
	j := f.inline.calls - inlineWarmCalls
	f.inline.calls++
	if j < 0 {
		return
	}
	if j == 0 {
		f.inline.since = time.Now()
	}
	if on, counted := probeCall(j); counted && fresh {
		w := 0
		if on {
			w = 1
		}
		f.inline.times[w] = append(f.inline.times[w], per)
	}
	if j+1 < inlineProbeCalls || len(f.inline.times[0]) == 0 || len(f.inline.times[1]) == 0 {
		return
	}
	f.inline.done = true
	f.inline.again = time.Now().Add(max(inlineReprobeMin, inlineReprobeFactor*time.Since(f.inline.since)))
	f.inline.againStep = f.globalStep + inlineReprobeCalls
	pool, inline := slices.Min(f.inline.times[0]), slices.Min(f.inline.times[1])
	on := chooseInline(pool, inline)
	in.SetInline(on)
	was := f.timing.Inline // the choice before, nil at the first
	f.timing.Inline = &InlineTiming{CallingThread: on, PoolStepSeconds: pool.Seconds(), CallingThreadStepSeconds: inline.Seconds(), Probes: 1}
	if was != nil {
		f.timing.Inline.Probes, f.timing.Inline.Switches = was.Probes+1, was.Switches
		if was.CallingThread != on {
			f.timing.Inline.Switches++
		}
	}
	if on && was != nil && !was.CallingThread {
		f.reweighMove()
	}
	switch {
	case on && (was == nil || !was.CallingThread):
		fmt.Fprintf(f.Log, "sagefit: train steps run their ops in the calling thread, not TensorFlow's inter-op pool: %s per step against %s (the fastest of %d each)\n",
			round(inline), round(pool), len(f.inline.times[1]))
	case !on && was != nil && was.CallingThread:
		fmt.Fprintf(f.Log, "sagefit: train steps run their ops in TensorFlow's inter-op pool again: %s per step against %s in the calling thread (the fastest of %d each, timed again)\n",
			round(pool), round(inline), len(f.inline.times[0]))
	}
}

// reprobeWhenDue starts timing both ways again once the last choice is
// old enough, unless the steps move or have moved to the single-threaded
// executor (every op in the calling thread), or steps_per_execution
// "auto" is still timing its own calls. The processes of a job time at
// the same calls and choose each on its own: only the first choice is
// weighed together (single.go).
func (f *Loop) reprobeWhenDue() {
	if !f.inline.done || f.single.move || f.timing.Executor == job.ExecutorSingleThreaded {
		return
	}
	if due := f.Group != nil && f.globalStep >= f.inline.againStep || f.Group == nil && time.Now().After(f.inline.again); !due {
		return
	}
	if autoTiming := f.Job.StepsPerExecution == 0 && !f.auto.trialDone && (f.auto.probing() || f.perCall(f.Train) > 1); autoTiming {
		return
	}
	f.inline = inlineState{calls: inlineWarmCalls} // nothing to trace: no warm-up
}

// chooseInline says whether steps of inline in the calling thread beat
// steps of pool in the pool by the margin.
func chooseInline(pool, inline time.Duration) bool {
	return float64(inline) < inlineMargin*float64(pool)
}

func round(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return d.Round(time.Microsecond)
	}
	return d.Round(100 * time.Microsecond)
}
