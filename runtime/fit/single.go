package fit

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/runtime/job"
)

// TensorFlow's single-threaded executor (SingleThreader, the executor
// hyperparameter): it runs a step's kernels on the same inputs as the
// default executor, one after another in the calling thread, with less of
// the default executor's bookkeeping per op. Measured on 2 cores, per step
// in the fit loop (median): the seed MLP 73-74 against 89-94 µs, the LSTM
// 388-406 against 574-593 µs; bit for bit the same numbers. Where
// TensorFlow's inter-op pool wins (convolutions, large updates) it loses:
// it runs no op beside another (MobileNetV2's step 69 against 60 ms in the
// pool). And not with steps_per_execution above 1: its in-graph loop, run
// by that executor, does not give the numbers of single steps.
//
// "auto" (the default) moves the train calls there once the probe
// (inline.go) has chosen the calling thread, or where the job fixed the
// calling thread after timing as many calls itself, when the steps left
// are worth the move (moveWorth). "single_threaded" moves at the first
// train step, "default" never. In a job of several processes each moves
// its own session, its first call there a gradient after the last apply
// (trainStep); under "auto" they decide together (considerSingleThreaded).

// moveWorth is how many times the job's first step the calling-thread
// steps left must last for "auto" to move. The move opens a session on
// the same graph, restores it, hands it the model's state and prepares the
// step anew: measured, 2.2-2.4 first steps (the seed MLP 289 against
// 130 ms, the LSTM 606 against 256 ms), to save 15-35% of each step after
// it; 20 first steps' worth pays it back about 1.5 times at 15%.
const moveWorth = 20

// singleState is the move's decision.
type singleState struct {
	considered bool // decided, one way or the other
	move       bool // the next train step moves
	// With the calling thread fixed (timesOwnCalls): train calls seen, and
	// the fastest step of those after the warm-up (as many as the probe
	// times, each counted: no switch to pay for).
	calls   int
	fastest time.Duration
}

// startSingleThreaded decides, as training starts, what "single_threaded"
// and "default" decide at once.
func (f *Loop) startSingleThreaded() {
	f.single = singleState{}
	switch f.Job.Executor {
	case job.ExecutorAuto:
		// Decided now where nothing will be timed (inter_op_threads N) or,
		// one process, nothing can move: steps_per_execution "auto" then
		// waits for nothing. Several processes vote even so (all do).
		if !f.Job.ProbeInline && f.Job.Session.InterOpThreads != -1 || f.Group == nil && f.cannotMove() != "" {
			f.single.considered = true
		}
	case job.ExecutorDefault:
		f.single.considered = true
	case job.ExecutorSingleThreaded:
		f.single.considered = true
		if why := f.cannotMove(); why != "" {
			fmt.Fprintf(f.Log, "sagefit: warning: hyperparameter %q %q: train steps stay on TensorFlow's default executor: %s\n", job.HPExecutor, job.ExecutorSingleThreaded, why)
			return
		}
		f.moveNextStep()
	}
}

// moveNextStep has the next train step move; steps_per_execution "auto"
// then keeps one step per call (a moved model runs no in-graph loop).
func (f *Loop) moveNextStep() {
	f.single.move = true
	f.auto.k, f.auto.trialDone = 1, true
}

// cannotMove says why train steps cannot move, or "".
func (f *Loop) cannotMove() string {
	st, ok := f.Model.(SingleThreader)
	if !ok {
		return "the model cannot run on it"
	}
	if why := st.CannotRunSingleThreaded(); why != "" {
		return why
	}
	if f.Job.StepsPerExecution > 1 {
		return fmt.Sprintf("%q is %d", job.HPStepsPerExec, f.Job.StepsPerExecution)
	}
	return ""
}

// considerSingleThreaded decides for "auto", once the probe has chosen,
// whether the next train step moves; left is the train steps the job has
// left, took the last train call's time per step. steps_per_execution
// "auto" then keeps one step per call: measured, the moved steps beat the
// in-graph loop's (the seed MLP's K=64 was level with single steps on the
// default executor, 15% slower than the moved ones). Processes of one job
// decide together, every one at the same step (the probe's last): the ring
// runs at its slowest process's pace, so all move or none does. What was
// weighed goes to timing.json (ExecutorWeighed), so a job that did not
// move says why.
func (f *Loop) considerSingleThreaded(ctx context.Context, left int, took time.Duration) error {
	s := &f.single
	if s.considered {
		return nil
	}
	var step time.Duration // a train step in the calling thread; 0: the pool won
	switch {
	case f.timesOwnCalls():
		if s.calls++; s.calls > inlineWarmCalls && (s.fastest == 0 || took < s.fastest) {
			s.fastest = took
		}
		if s.calls < inlineWarmCalls+inlineProbeCalls {
			return nil
		}
		step = s.fastest
	case f.inlineProbing() || f.timing.Inline == nil:
		return nil
	case f.timing.Inline.CallingThread:
		// Rounded: truncating can land a nanosecond under the probe's.
		step = time.Duration(math.Round(f.timing.Inline.CallingThreadStepSeconds * float64(time.Second)))
	}
	s.considered = true
	weighed := f.weigh(left, step)
	f.timing.ExecutorWeighed = weighed
	move := weighed != nil && weighed.Worth
	if f.Group != nil {
		votes := []float64{0}
		if move {
			votes[0] = 1
		}
		if err := f.Group.AllReduceFloat64(ctx, votes); err != nil {
			return fmt.Errorf("agree on the executor: %w", err)
		}
		move = int(votes[0]) == f.world()
	}
	if weighed != nil {
		weighed.Move = move
	}
	if move {
		f.moveNextStep()
	}
	return nil
}

// reweighMove has "auto" weigh the move again when a later probe finds
// the calling thread faster where an earlier one found the pool (which
// weighs nothing): one process (several weigh together, at the first
// probe's last step only), one step per call (blocks never carry a move),
// and no move tried yet.
func (f *Loop) reweighMove() {
	tried := f.timing.ExecutorWeighed != nil && f.timing.ExecutorWeighed.Move
	if f.Group == nil && f.Job.Executor == job.ExecutorAuto && !tried && f.cannotMove() == "" && f.perCall(f.Train) == 1 {
		f.single.considered = false
	}
}

// timesOwnCalls: "auto" where the job fixed the calling thread
// (inter_op_threads -1), so no probe times the train calls: it times as
// many itself, judging by the fastest as the probe does.
func (f *Loop) timesOwnCalls() bool {
	return f.Job.Executor == job.ExecutorAuto && !f.Job.ProbeInline && f.Job.Session.InterOpThreads == -1
}

// executorPending: "auto" is still timing calls to decide the move;
// steps_per_execution "auto" times its blocks after it.
func (f *Loop) executorPending() bool { return f.timesOwnCalls() && !f.single.considered }

// weigh weighs this process's move, its steps taking step in the calling
// thread (0: the pool won), with left train steps to go: nil where there
// is nothing to weigh (the pool won, the model cannot move), else worth it
// where the steps left last at least moveWorth first steps.
func (f *Loop) weigh(left int, step time.Duration) *ExecutorWeighing {
	if step <= 0 || f.cannotMove() != "" {
		return nil
	}
	first := time.Duration(f.clock.startup.FirstStepSeconds * float64(time.Second))
	return &ExecutorWeighing{StepSeconds: step.Seconds(), StepsLeft: left, Worth: time.Duration(left)*step >= moveWorth*first}
}

// moveWith moves the model and runs call, the process's next train call,
// as its first call there (a train step; with several processes a
// gradient). Blocks (trainBlocks) never carry a move: a job that moves runs
// one step per call from the move on.
func (f *Loop) moveWith(call func() ([]model.Metric, error)) ([]model.Metric, error) {
	f.single.move = false
	t := time.Now()
	var logs []model.Metric
	stayed, err := f.Model.(SingleThreader).MoveSingleThreaded(func() (err error) {
		logs, err = call()
		return err
	})
	if err != nil {
		return nil, err
	}
	if stayed != nil {
		fmt.Fprintf(f.Log, "sagefit: warning: train steps stay on TensorFlow's default executor: %v\n", stayed)
		return logs, nil
	}
	took := time.Since(t)
	f.timing.Executor, f.timing.ExecutorMoveSeconds = job.ExecutorSingleThreaded, took.Seconds()
	fmt.Fprintf(f.Log, "sagefit: train steps run on TensorFlow's single-threaded executor (moved in %s, its first step included)\n", round(took))
	return logs, nil
}

// trainStepsLeft is about how many train steps the job has left after step
// done of epoch's steps (later epochs counted as long as this one).
func (f *Loop) trainStepsLeft(epoch, steps, done int) int {
	return steps - done + (f.Job.Epochs-epoch)*steps
}
