package fit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"time"

	"github.com/sagefit/sagefit/data"
	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/runtime/callbacks"
	"github.com/sagefit/sagefit/runtime/report"
)

// Steps per call (steps_per_execution): one process runs K train steps in
// one session call, K batches stacked, as Keras's compile(steps_per_execution=K)
// runs K steps in one tf.function call; the numbers are those of K calls.
// Several processes all-reduce every step's gradients, so they run one step
// per call. Callbacks that watch batches, checkpoints, stop requests and
// the epoch's end are honoured at block ends: a block never crosses a
// checkpoint_steps boundary, a batch TensorBoard records (update_freq) or
// the epoch's last step, and a stop asked before a block runs one step.

// autoProbeSteps are the steps timed, after the first (which traces and
// warms up), to choose K when steps_per_execution is "auto"; then
// autoTrialBlocks blocks are timed to check that K is faster per step.
// (Before its probe, the first train calls time where calls run their ops,
// inline.go, or, with the calling thread fixed, whether to move to the
// single-threaded executor, single.go.)
const (
	autoProbeSteps  = 8
	autoTrialBlocks = 3
)

// perCall is the train steps per call for channel c's pass: 1 for
// validation, for several processes and for a model without train_steps;
// else the job's steps_per_execution, or, for "auto" (0), 1 until the
// probe has timed steps and then autoSteps of their median, unless its
// trial (tryBlock) found blocks slower (1 while a callback watches every
// batch: blocks would move its batches; TensorBoard's records cut blocks
// instead, trainBlocks).
func (f *Loop) perCall(c any) int {
	if c != f.Train || f.Group != nil {
		return 1
	}
	ms, ok := f.Model.(MultiStepper)
	if !ok || !ms.MultiStep() {
		return 1
	}
	if f.Job.StepsPerExecution > 0 {
		return f.Job.StepsPerExecution
	}
	if len(f.Model.Meta().StatefulRandomOps) > 0 {
		return 1 // another traced copy of the step draws another sequence: "auto" keeps fit's
	}
	if cbs := f.Callbacks; cbs != nil {
		if cbs.WatchesEveryBatch() {
			return 1 // "auto" keeps every batch's callbacks where the user put them
		}
		if every := cbs.StepsToRecord(0); every > 0 && every < minAutoSteps {
			return 1 // TensorBoard records every few batches: blocks would be cut to them
		}
	}
	a := &f.auto
	if a.k == 0 && !a.probing() {
		a.k = autoSteps(a.probe, callTime)
		for a.k > 1 && a.k*a.batchBytes > blockBytes {
			a.k /= 2
		}
	}
	return max(a.k, 1)
}

// autoState is what steps_per_execution "auto" learns as the job trains:
// single steps timed (the probe), the K chosen from them, then blocks of
// K timed (the trial) until K is kept or given up for 1.
type autoState struct {
	k          int             // steps per call chosen (0: not yet)
	probe      []time.Duration // single train steps' times
	batchBytes int             // the largest probed batch, all tensors
	trial      []time.Duration // per-step times of blocks while K is tried
	trialDone  bool            // K kept, or gone back to 1
}

// probing reports whether the probe still times single steps.
func (a *autoState) probing() bool { return a.k == 0 && len(a.probe) < autoProbeSteps }

// probeStep records a single train step that took d on a batch of size
// bytes, while the probe runs (the first step, which traces and warms up,
// is not given).
func (a *autoState) probeStep(d time.Duration, size int) {
	if !a.probing() {
		return
	}
	a.probe = append(a.probe, d)
	a.batchBytes = max(a.batchBytes, size)
}

// batchBytes is the size of b's tensors.
func batchBytes(b model.Batch) int {
	n := 0
	for _, t := range b.Tensors {
		n += len(t)
	}
	return n
}

// callTime is how long "auto" makes one train_steps call. A call costs
// more than its feeds and fetches: between calls TensorFlow's pool threads
// park and have to be woken, an XLA program's launch handles the model's
// state buffers, and the in-graph loop runs its steps back to back.
// Measured per model (BENCHMARKS.md), examples/s against calls of about
// 2 ms: seed MLP K=64 against 16 +6%, LSTM K=64 against 4 +8%, CNN K=8
// against 1 +5%, Embedding XLA K=16 against 1 +15%. 50 ms keeps stops
// and checkpoints (which wait for a call's end) prompt and the progress
// bar moving.
const callTime = 50 * time.Millisecond

// blockBytes bounds "auto"'s blocks: K batches are stacked into one buffer
// and copied into the session's input tensors, so K is halved until K
// batches fit in 16 MiB (a job under a tight memory limit trains on 4 MiB
// batches in tests; a batch that large has steps long enough anyway).
var blockBytes = 16 << 20

// tryBlock times a block of "auto"'s K (per: its time per step) and, once
// autoTrialBlocks are timed, keeps K if its fastest block's steps were
// faster than the probe's fastest single step, or goes back to one step
// per call. A block's time is already a mean over its steps, so the
// comparison leans to one step per call unless K is plainly faster (the
// rule until this one kept K up to a quarter slower than the median single
// step). Some graphs run worse in the in-graph loop: measured here, the
// small CNN compiled with XLA took 82 ms per step at K=8 against 10 ms at
// K=1. And where steps run in the calling thread (inline.go) a call saves
// little over its feeds: in the two make bench runs since steps run there,
// K=1 ran the seed MLP 9-13% faster than K=64 in three of its four rows,
// 2% slower in the fourth, with its calls' own time per step level (the
// rest is in the loop around the call, which this trial does not see).
func (f *Loop) tryBlock(steps int, per time.Duration, seen bool) {
	a := &f.auto
	if a.trialDone || f.Job.StepsPerExecution > 0 || steps < 2 || !seen {
		return
	}
	if a.trial = append(a.trial, per); len(a.trial) < autoTrialBlocks {
		return
	}
	a.trialDone = true
	if slices.Min(a.trial) >= slices.Min(a.probe) {
		a.k = 1
	}
}

// blockSeen reports whether a block of steps has run before, and notes
// that one has now. The first block of each size traces or compiles
// train_steps for that size (an epoch's end or a checkpoint can cut a block
// short of K), so its time says nothing of the next ones.
func (f *Loop) blockSeen(steps int) bool {
	if slices.Contains(f.blockSizes, steps) {
		return true
	}
	f.blockSizes = append(f.blockSizes, steps)
	return false
}

func median(times []time.Duration) time.Duration {
	s := slices.Clone(times)
	slices.Sort(s)
	return s[len(s)/2]
}

// autoSteps chooses K from the step times: the smallest power of two, at
// most 64, whose call of that many median steps lasts call or longer, or 1
// where that is under minAutoSteps.
func autoSteps(times []time.Duration, call time.Duration) int {
	m := median(times)
	k := 1
	for k < 64 && time.Duration(k)*m < call {
		k *= 2
	}
	if k < minAutoSteps {
		return 1
	}
	return k
}

// minAutoSteps is the fewest steps per call "auto" takes other than 1. Two
// steps per call (steps of 25-50 ms) save one call's cost in two steps, well
// under 1% of such a step, while the first block of a new size traces
// train_steps as long as the first step traced train_step: MobileNetV2 at
// 46 ms per step (intra_op_threads=1 on 2 cores) took K=2 and spent 5.3 s,
// about 110 of its steps, on its first block, in a run of 96 steps.
const minAutoSteps = 4

// trainBlocks runs the train pass's steps [start, steps) in blocks of up
// to perCall steps, one call each ("auto" may go back to 1 after its
// trial).
func (f *Loop) trainBlocks(ctx context.Context, epoch int, it *data.EpochIterator, progress *report.Progress, start, steps int) (int, error) {
	ms := f.Model.(MultiStepper)
	var pending *data.Batch // a batch read but not stacked: its rows differ
	for n := start; n < steps; {
		full := f.perCall(f.Train)
		k := min(full, steps-n)
		drifts := false // cuts at global steps, which drift against the epochs'
		if cs := f.Job.CheckpointSteps; cs > 0 {
			k, drifts = min(k, cs-f.globalStep%cs), true
		}
		if f.Callbacks != nil {
			if d := f.Callbacks.StepsToRecord(f.globalStep); d > 0 {
				k, drifts = min(k, d), true // TensorBoard's update_freq: its records are single steps'
			}
		}
		if k < full && drifts {
			// Cut short where global steps and epochs have drifted apart, a
			// block may take any size, and each new size compiles
			// train_steps again under XLA: it runs its steps in powers of two
			// instead, a few sizes, each compiled once. (Cut by the epoch's end
			// alone, the last block of every epoch is one size.)
			k = 1 << (bits.Len(uint(k)) - 1)
		}
		if f.stop.Err() != nil {
			k = 1 // a stop asked before the block: one step, as without blocks, not K (and no K-step compile)
		}
		asked := time.Now()
		var bs []*data.Batch
		for len(bs) < k {
			b := pending
			pending = nil
			if b == nil {
				var err error
				if b, err = it.Next(ctx); errors.Is(err, io.EOF) {
					break
				} else if err != nil {
					release(bs)
					return n, fmt.Errorf("epoch %d: channel %q: %w", epoch, f.Train.Name, err)
				}
			}
			if len(bs) > 0 && b.Rows != bs[0].Rows { // the short last batch: a block of its own
				pending = b
				break
			}
			bs = append(bs, b)
		}
		if len(bs) == 0 {
			return n, fmt.Errorf("epoch %d: channel %q ended after %d of %d steps", epoch, f.Train.Name, n, steps)
		}
		got := time.Now()
		mb := f.stack(bs)
		f.beforeTrainCall()
		logs, err := ms.TrainSteps(mb, len(bs))
		release(bs)
		if err != nil {
			return n, fmt.Errorf("epoch %d steps %d-%d: %w", epoch, n+1, n+len(bs), err)
		}
		done := time.Now()
		// Timing sees the block's steps as equal parts of it, but for the
		// start-up: the first call's preparation is the whole block's.
		f.clock.firstCall(got, done, len(bs))
		per := done.Sub(got) / time.Duration(len(bs))
		seen := f.blockSeen(len(bs))
		f.afterTrainCall(per, seen)
		f.tryBlock(len(bs), per, seen)
		for j := range bs {
			f.clock.stepRows = mb.Rows / len(bs)
			wait := time.Duration(0)
			if j == 0 {
				wait = got.Sub(asked)
			}
			t := got.Add(per * time.Duration(j))
			f.clock.step(t.Add(-wait), t, t.Add(per))
			if progress != nil {
				progress.Step(toReport(logs))
			}
		}
		f.globalStep += len(bs)
		n += len(bs)
		if f.terminate, err = f.blockEnd(logs); err != nil {
			return n, err
		}
		if f.stop.Err() != nil {
			path, err := f.checkpoint(ctx, epoch, n, steps, true)
			if err != nil {
				return n, err
			}
			return n, &Interrupted{Cause: f.stopCause(), Epoch: epoch, Step: n, Checkpoint: path}
		}
		if f.terminate {
			return n, nil
		}
		if cs := f.Job.CheckpointSteps; cs > 0 && f.globalStep%cs == 0 && n < steps {
			if _, err := f.checkpoint(ctx, epoch, n, steps, false); err != nil {
				return n, err
			}
		}
	}
	if pending != nil {
		pending.Release()
	}
	return steps, nil
}

// blockEnd runs the callbacks that watch train batches once per block, on
// its last batch, as Keras calls on_train_batch_end once per execution.
func (f *Loop) blockEnd(logs []model.Metric) (bool, error) {
	if f.Callbacks == nil || logs == nil || !f.Callbacks.WatchesBatches() {
		return false, nil
	}
	return f.Callbacks.BatchEnd(f.globalStep, callbacks.Logs(logs))
}

// stack lays batches of equal rows one after another, per tensor, in
// buffers the loop keeps: one copy of each batch, what an in-graph loop
// over steps needs (a single batch is used as it is).
func (f *Loop) stack(bs []*data.Batch) model.Batch {
	if len(bs) == 1 {
		return model.Batch{Rows: bs[0].Rows, Tensors: bs[0].Tensors}
	}
	if f.stacked == nil {
		f.stacked = map[string][]byte{}
	}
	out := model.Batch{Rows: bs[0].Rows * len(bs), Tensors: make(map[string][]byte, len(bs[0].Tensors))}
	for name := range bs[0].Tensors {
		buf := f.stacked[name][:0]
		for _, b := range bs {
			buf = append(buf, b.Tensors[name]...)
		}
		f.stacked[name] = buf
		out.Tensors[name] = buf
	}
	return out
}

func release(bs []*data.Batch) {
	for _, b := range bs {
		b.Release()
	}
}
