package fit

import (
	"fmt"
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
// "auto" (the default) moves one process's train steps there once the
// probe (inline.go) has chosen the calling thread, when the steps left are
// worth the move (moveWorth). "single_threaded" moves at the first train
// step, "default" never. Several processes stay on the default executor
// (named in a warning when the job asked for the move).

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
}

// startSingleThreaded decides, as training starts, what "single_threaded"
// and "default" decide at once.
func (f *Loop) startSingleThreaded() {
	f.single = singleState{}
	switch f.Job.Executor {
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
	switch {
	case f.Group != nil:
		return fmt.Sprintf("the job trains in %d processes (the move is made for one)", f.world())
	case !ok:
		return "the model cannot run on it"
	case !st.CanRunSingleThreaded():
		return "the model's steps are XLA-compiled"
	case f.Job.StepsPerExecution > 1:
		return fmt.Sprintf("%q is %d", job.HPStepsPerExec, f.Job.StepsPerExecution)
	}
	return ""
}

// considerSingleThreaded decides for "auto", once the probe has chosen,
// whether the next train step moves; left is the train steps the job has
// left. steps_per_execution "auto" then keeps one step per call: measured,
// the moved steps beat the in-graph loop's (the seed MLP's K=64 was level
// with single steps on the default executor, 15% slower than the moved
// ones).
func (f *Loop) considerSingleThreaded(left int) {
	s := &f.single
	if s.considered || f.inlineProbing() || f.timing.Inline == nil {
		return
	}
	s.considered = true
	in := f.timing.Inline
	if !in.CallingThread || f.cannotMove() != "" {
		return
	}
	step := time.Duration(in.CallingThreadStepSeconds * float64(time.Second))
	first := time.Duration(f.clock.startup.FirstStepSeconds * float64(time.Second))
	if time.Duration(left)*step < moveWorth*first {
		return
	}
	f.moveNextStep()
}

// trainOne runs one train step of one process: the move's step when it is
// due. Blocks (trainBlocks) never carry a move: a job that moves runs one
// step per call from the move on.
func (f *Loop) trainOne(b model.Batch) ([]model.Metric, error) {
	if !f.single.move {
		return f.Model.TrainStep(b)
	}
	f.single.move = false
	t := time.Now()
	logs, stayed, err := f.Model.(SingleThreader).TrainStepSingleThreaded(b)
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
