package fit

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/gonum/blas/blas32"

	"github.com/sagefit/sagefit/data"
	"github.com/sagefit/sagefit/distributed"
	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/runtime/callbacks"
	"github.com/sagefit/sagefit/runtime/checkpoint"
	"github.com/sagefit/sagefit/runtime/input"
	"github.com/sagefit/sagefit/runtime/job"
	"github.com/sagefit/sagefit/runtime/report"
)

// Loop runs model.fit's loop over one process's share of the data. Set
// its fields, then call Run once.
type Loop struct {
	Job      *job.Job
	Model    Model
	Group    Group // nil for one process
	Train    *input.Channel
	Val      *input.Channel // nil: no validation
	Out      io.Writer      // epoch lines (stdout)
	Log      io.Writer      // progress notes (stderr)
	Terminal bool           // progress bars only on a terminal
	// Callbacks are the model's Keras callbacks; nil: none.
	Callbacks *callbacks.Set

	grads []float32 // fused gradient, the batch's row count, the stop flag
	// lossShare is the share of the global batch's loss this process's
	// gradient is of (shareLoss): 1, or 1/processes.
	lossShare float32
	// sparse is the exchange of a model whose sparse gradients the
	// processes gather (sparse.go); nil: none.
	sparse *sparseExchange
	timing Timing
	clock  clock // the steps' times, for timing

	hist       *report.History // epochs finished, for checkpoints
	globalStep int             // train steps since epoch 1 step 0
	trainRows  int             // this process's training rows in the epoch under way, for checkpoints
	// stateCopy is the last copy of the state read (a checkpoint's, or
	// averageState's), which the next one is read into.
	stateCopy []model.Variable
	// resumed is the checkpoint's epoch length and training rows a
	// mid-epoch resume goes on in (0: none, or not recorded).
	resumedSteps, resumedRows int
	resumedSample             string
	// trainSample is the training data's digest once taken (sample).
	trainSample *string
	averagedAt  int // globalStep when the averaged state was last averaged (-1: never)
	// trainedRows: this process trained rows since the state was last
	// averaged, so its moving statistics moved (a host given no shard of a
	// ShardedByS3Key channel never does, and its would pull the mean back
	// towards their start).
	trainedRows  bool
	terminate    bool                    // a callback ended training after this batch (TerminateOnNaN)
	pendingApply bool                    // grads holds an averaged gradient not yet applied (FusedApplier)
	auto         autoState               // what steps_per_execution "auto" has learnt
	inline       inlineState             // where train calls run their ops (inline.go)
	single       singleState             // whether train steps move to the single-threaded executor (single.go)
	stacked      map[string][]byte       // per tensor, the stacked batches of a block
	blockSizes   []int                   // the sizes of the blocks run so far
	signals      context.Context         // Run's ctx: done when this process is stopped (SIGTERM)
	stop         context.Context         // done once a stop is requested, here or on another host
	requestStop  context.CancelCauseFunc // stops this host when another asked
	// warnedValClash: a validation metric replaced a training one of its
	// name, said once.
	warnedValClash bool
	// lastTrain and lastTest are the last step's logs of this pass: the
	// epoch's, where a custom step's log names are not the metrics'.
	lastTrain, lastTest []model.Metric
}

func (f *Loop) world() int {
	if f.Group == nil {
		return 1
	}
	return f.Group.World()
}

func (f *Loop) rank() int {
	if f.Group == nil {
		return 0
	}
	return f.Group.Rank()
}

func (f *Loop) batchOptions(c *input.Channel) data.BatchOptions {
	o := data.BatchOptions{
		BatchSize: f.Job.BatchSize,
		Shuffle:   f.Job.Shuffle && c == f.Train, // Keras never shuffles validation data
		Seed:      f.Job.Seed,
		Prefetch:  f.Job.Prefetch,
		DTypes:    c.DTypes,
		Rank:      f.rank(),
		World:     f.world(),
	}
	if c.Sharded { // this host's files, shared by its processes
		o.Rank, o.World = f.Job.Env.LocalRank, max(1, f.Job.Env.LocalWorkers)
	}
	return o
}

// ResumePoint is where training starts: epoch 1 step 0, or a checkpoint's.
type ResumePoint struct {
	Epoch, Step int
	// Steps and Rows are the checkpoint's epoch length and rank 0's
	// training rows in it (0 where not recorded: no checkpoint, an older
	// one).
	Steps, Rows int
	// GlobalStep is the train steps run before it (checkpoint_steps'
	// cadence and the batch numbers callbacks see go on from it).
	GlobalStep  int
	MetricState []float64 // this process's share of the epoch's metric state; nil at step 0
	History     *report.History
	// Callbacks is the callbacks' state (every process); Best the weights
	// they keep for the end (rank 0's, from its checkpoint).
	Callbacks json.RawMessage
	Best      []byte
	// HostState is every process's own copy of the averaged state where a
	// stop's checkpoint holds it (Loop.hostState's layout), or nil.
	HostState []byte
	// Sample is the checkpoint's digest of the training data
	// (input.Channel.Sample), or "".
	Sample string
}

// Interrupted is returned when a stop was requested (SIGTERM: a stop or a
// spot interruption) and training stopped cleanly after a step on every
// process, with a checkpoint.
type Interrupted struct {
	Cause      error
	Epoch      int
	Step       int
	Checkpoint string // empty on ranks other than 0
	// Unfinished says why the model's weights are not those a job ending
	// here writes (use_ema's averages, a callback's best epoch, the hosts'
	// averaged statistics); nil where they are.
	Unfinished error
}

func (e *Interrupted) Error() string {
	msg := fmt.Sprintf("training stopped (%v) at epoch %d step %d", e.Cause, e.Epoch, e.Step)
	if e.Checkpoint != "" {
		msg += "; checkpoint written to " + e.Checkpoint + ", from which a job with the same checkpoint location resumes"
	}
	return msg
}

func (e *Interrupted) Unwrap() error { return e.Cause }

// Agreed is a failure every process reaches together from values a
// collective gave them all (the hosts' rows, an epoch's steps): each says
// it in its own words. A process does not tell the others of it, as it
// tells a failure of its own (Group.Abandon), since the telling would
// overtake the collective's last data still on its way to them.
type Agreed struct{ Err error }

func (e *Agreed) Error() string { return e.Err.Error() }
func (e *Agreed) Unwrap() error { return e.Err }

// FailureReason is the job's failure sentence: the stop, where, and the
// checkpoint to resume from (sagemaker.Reason takes it as it is).
func (e *Interrupted) FailureReason() string { return e.Error() }

// Run trains from the resume point through the job's last epoch and returns
// the history. A stop request (ctx cancelled: SIGTERM) ends training after
// the current step, with a checkpoint, as an *Interrupted error; it does not
// cancel the step itself, nor the collectives that bring the other
// processes to the same stop.
func (f *Loop) Run(ctx context.Context, from ResumePoint) (*report.History, error) {
	// The loop keeps one OS thread. TensorFlow runs a step's ops in the
	// calling thread where that was faster (inter_op_threads), and a
	// goroutine that waits for its next batch may resume on another thread:
	// the step then works on another thread's caches (glibc's malloc arenas
	// and thread caches, oneDNN's and Eigen's thread-locals; which matters
	// was not isolated). Measured on the seed MLP at one step per call in
	// the calling thread, 10 alternated pairs of 10-epoch runs: mean step
	// 91 against 94 µs (faster in 9 of 10); level where no step waits for
	// input (prefetch beyond the epoch, 4 pairs) and for the small CNN in the
	// pool (3 pairs).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f.signals = ctx
	f.stop, f.requestStop = context.WithCancelCause(ctx)
	defer f.requestStop(nil)
	hist, err := f.run(context.WithoutCancel(ctx), from)
	if err == nil {
		return hist, nil
	}
	var stopped *Interrupted
	if errors.As(err, &stopped) {
		// SageMaker gives a stopped job two minutes to write its model, as
		// its own algorithms do (MaxRuntime, StopTrainingJob): the
		// checkpoint written, the weights become what a job ending here
		// writes, on every process alike (the checkpoint averaged the
		// statistics; the weights a callback kept hold averaged ones).
		stopped.Unfinished = f.finish(context.WithoutCancel(ctx))
		return hist, err
	}
	if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
		return hist, fmt.Errorf("%w (%v)", cause, err)
	}
	return hist, err
}

// Timing is how long each epoch took and how long steps waited for input.
func (f *Loop) Timing() Timing {
	t := f.timing
	t.Startup = f.clock.startup // known once a step ended, an epoch or not
	return t
}

// run trains from the resume point through the job's last epoch and returns
// the history.
func (f *Loop) run(ctx context.Context, from ResumePoint) (*report.History, error) {
	hist := from.History
	if hist == nil {
		hist = &report.History{}
	}
	f.hist = hist
	// Lists empty, not absent, and the steps per call known from the
	// start: a job stopped in its first epoch ends none.
	f.timing = Timing{Version: TimingVersion, Hosts: f.world(), BatchSize: f.Job.BatchSize, Examples: f.Train.Examples(), Executor: job.ExecutorDefault,
		Epochs: []EpochTiming{}, EpochSeconds: []float64{}, InputSeconds: []float64{}, StepsPerCall: f.perCall(f.Train)}
	f.startSingleThreaded()
	f.clock = newClock()
	f.sparse = nil
	if g, ok := f.Model.(SparseGatherer); ok && g.GathersSparse() && f.Group != nil {
		f.sparse = newSparseExchange(g, f.Model.Meta(), f.world())
	} else if f.Group != nil {
		// Gradient, then the batch's row count, the stop flag (SIGTERM) and
		// the end flag (a callback ends training, TerminateOnNaN).
		f.grads = make([]float32, f.Model.Meta().GradientSize+3)
	}
	if err := f.shareLoss(); err != nil {
		return hist, err
	}
	f.averagedAt, f.terminate, f.pendingApply, f.trainedRows = -1, false, false, false
	f.globalStep = from.GlobalStep
	f.resumedSteps, f.resumedRows, f.resumedSample = from.Steps, from.Rows, from.Sample
	if err := f.restoreHostState(from.HostState); err != nil {
		return hist, fmt.Errorf("resume: the hosts' own state: %w", err)
	}
	if err := f.startCallbacks(from); err != nil {
		return hist, err
	}
	if err := f.sameFileRows(ctx); err != nil {
		return hist, err
	}
	if from.Epoch <= f.Job.InitialEpoch {
		from = ResumePoint{Epoch: f.Job.InitialEpoch + 1, History: hist}
	}
	for epoch := from.Epoch; epoch <= f.Job.Epochs; epoch++ {
		start := time.Now()
		startStep := 0
		if epoch == from.Epoch && from.Step > 0 {
			startStep = from.Step
			if err := f.Model.AssignMetricState(from.MetricState); err != nil {
				return hist, fmt.Errorf("resume epoch %d: %w", epoch, err)
			}
		}
		steps, err := f.pass(ctx, epoch, f.Train, f.trainStep, startStep)
		if err == nil {
			err = f.flushApply()
		}
		if err != nil {
			return hist, err
		}
		logs, err := f.epochMetrics(ctx)
		if err != nil {
			return hist, fmt.Errorf("epoch %d: metrics: %w", epoch, err)
		}
		if names := f.Model.Meta().TrainLogs; names != nil {
			if logs, err = f.stepLogs(ctx, f.lastTrain, names, logs); err != nil {
				return hist, fmt.Errorf("epoch %d: %w", epoch, err)
			}
		}
		if f.Val != nil && f.Job.Validates(epoch) {
			// Validation reads the statistics of all hosts' data, as
			// MirroredStrategy's evaluation does.
			if err := f.averageState(ctx); err != nil {
				return hist, fmt.Errorf("epoch %d: %w", epoch, err)
			}
			// One process stops a validation at its next batch (a long one
			// outlasted SageMaker's grace before its kill): the training
			// metrics validation reset are put back, and the checkpoint is
			// the one a stop at the epoch's last step writes, whose job
			// validates again.
			var trained []float64
			if f.Group == nil {
				if trained, err = f.Model.MetricState(); err != nil {
					return hist, fmt.Errorf("epoch %d: %w", epoch, err)
				}
			}
			valSteps, err := f.pass(ctx, epoch, f.Val, f.testStep, 0)
			if errors.Is(err, errValidationStopped) {
				if err := f.Model.AssignMetricState(trained); err != nil {
					return hist, fmt.Errorf("epoch %d: %w", epoch, err)
				}
				path, err := f.checkpoint(ctx, epoch, steps, steps, true)
				if err != nil {
					return hist, err
				}
				return hist, &Interrupted{Cause: f.stopCause(), Epoch: epoch, Step: steps, Checkpoint: path}
			}
			if err != nil {
				return hist, err
			}
			vlogs, err := f.epochMetrics(ctx)
			if err != nil {
				return hist, fmt.Errorf("epoch %d: validation metrics: %w", epoch, err)
			}
			if names := f.Model.Meta().TestLogs; names != nil {
				if vlogs, err = f.stepLogs(ctx, f.lastTest, names, vlogs); err != nil {
					return hist, fmt.Errorf("epoch %d: validation: %w", epoch, err)
				}
			}
			if f.Callbacks != nil {
				if err := f.Callbacks.TestEnd(vlogs, valSteps, f.globalStep); err != nil {
					return hist, fmt.Errorf("epoch %d: %w", epoch, err)
				}
			}
			logs = f.addValidationLogs(logs, vlogs)
		}
		stopTraining := f.terminate
		if f.Callbacks != nil && f.Callbacks.KeepsWeights() {
			// The weights a callback keeps for the end hold every
			// process's statistics, as the model written from them must:
			// the end's average comes after their restore only where the
			// last epoch was not validated, and a stop's never.
			if err := f.averageState(ctx); err != nil {
				return hist, fmt.Errorf("epoch %d: %w", epoch, err)
			}
		}
		if f.Callbacks != nil {
			cl := callbacks.Logs(logs)
			st, err := f.Callbacks.EpochEnd(epoch-1, &cl, f.Model)
			if err != nil {
				return hist, fmt.Errorf("epoch %d: %w", epoch, err)
			}
			logs, stopTraining = cl, stopTraining || st
		}
		f.clock.endEpoch(&f.timing, epoch, time.Since(start))
		f.timing.StepsPerEpoch = steps
		f.timing.StepsPerCall = f.perCall(f.Train)
		rl := toReport(logs)
		hist.Append(rl)
		fmt.Fprintln(f.Out, report.EpochLine(epoch, f.Job.Epochs, steps, time.Since(start), rl))
		if stopTraining {
			break // as Keras's fit: stop_training ends it after the epoch
		}
		if f.Job.CheckpointEpochs && epoch < f.Job.Epochs {
			if _, err := f.checkpoint(ctx, epoch+1, 0, steps, false); err != nil {
				return hist, err
			}
		}
	}
	return hist, f.finish(ctx)
}

// finish makes the model's weights those the job writes: as fit, before
// on_train_end (whose EarlyStopping may put the best epoch's weights back),
// use_ema's moving averages become the weights, on every process alike;
// then the statistics of all hosts' data are averaged.
func (f *Loop) finish(ctx context.Context) error {
	if fz, ok := f.Model.(Finalizer); ok {
		if err := fz.FinalizeVariables(); err != nil {
			return fmt.Errorf("finalize the weights: %w", err)
		}
	}
	if f.Callbacks != nil {
		if err := f.Callbacks.TrainEnd(f.Model); err != nil {
			return err
		}
	}
	return f.averageState(ctx)
}

// errValidationStopped ends a validation pass of one process at a stop
// request; run checkpoints the epoch as trained and ends the job.
var errValidationStopped = errors.New("validation stopped")

// validationStops says whether a pass over c, a validation, ends now: one
// process (several would need a collective to agree), a stop asked, and
// an epoch trained whole. An epoch a callback ended early (TerminateOnNaN)
// is validated to its end: a checkpoint of it could not be resumed (its
// other steps would train), and training ends after it anyway.
func (f *Loop) validationStops(c *input.Channel) bool {
	return c != f.Train && f.Group == nil && !f.terminate && f.stop.Err() != nil
}

// averageState averages, over every process, the variables the contract
// marks for it (BatchNormalization's moving statistics): each process's
// moving averages follow its own share of every batch, and their mean is
// the moving average of the whole batches' statistics. Every process
// calls it at the same point; it does nothing on one process, or when
// nothing was trained since the last time. The mean is over the processes
// that trained rows since then: the others' statistics did not move.
func (f *Loop) averageState(ctx context.Context) error {
	idx := f.Model.Meta().Averaged()
	if f.Group == nil || len(idx) == 0 || f.averagedAt == f.globalStep {
		return nil
	}
	start := time.Now()
	vars, buf, err := f.readAveraged(idx)
	if err != nil {
		return fmt.Errorf("average state over hosts: %w", err)
	}
	n := len(buf) - 1
	// This process's state and a 1 that counts it; zeros where it trained
	// no rows.
	if !f.trainedRows {
		clear(buf)
	}
	if f.Job.CompressFP16 { // float16 on the wire: a sum of variances of 5000 over 16 processes is infinite
		wide := make([]float64, len(buf))
		for i, v := range buf {
			wide[i] = float64(v)
		}
		if err := f.Group.AllReduceFloat64(ctx, wide); err != nil {
			return fmt.Errorf("average state over hosts: %w", err)
		}
		for i, v := range wide {
			buf[i] = float32(v)
		}
	} else if err := f.Group.AllReduce(ctx, buf, distributed.Sum); err != nil {
		return fmt.Errorf("average state over hosts: %w", err)
	}
	count := buf[n]
	buf = buf[:n]
	f.averagedAt, f.trainedRows = f.globalStep, false
	if count == 0 {
		return nil // no process trained: every one holds the last mean
	}
	for i := range buf {
		buf[i] /= count // as distributed.Mean divides, once all trained
	}
	for _, i := range idx {
		k := len(vars[i].Data) / 4
		vars[i].Data = model.Float32Bytes(buf[:k:k])
		buf = buf[k:]
	}
	if err := f.Model.AssignVariables(vars); err != nil {
		return fmt.Errorf("average state over hosts: %w", err)
	}
	f.timing.AverageSeconds = append(f.timing.AverageSeconds, time.Since(start).Seconds())
	return nil
}

// stepFunc runs one step; stop reports that every host agreed to stop
// after it.
type stepFunc func(context.Context, model.Batch) (logs []model.Metric, stop bool, err error)

// pass runs one epoch's steps over a channel from startStep, after
// resetting the metrics as Keras does at the start of fit's epoch and of
// evaluate (a resumed epoch keeps the metric state it was given).
func (f *Loop) pass(ctx context.Context, epoch int, c *input.Channel, step stepFunc, startStep int) (int, error) {
	if c == f.Train {
		f.lastTrain = nil
	} else {
		f.lastTest = nil
	}
	if startStep == 0 {
		if err := f.Model.ResetMetrics(); err != nil {
			return 0, fmt.Errorf("epoch %d: %w", epoch, err)
		}
	}
	opts := f.batchOptions(c)
	open := ctx
	if c.Streams() {
		// Waiting for the next Pipe stream (up to sagefit_pipe_timeout,
		// 10 minutes by default) must end on a stop: SageMaker kills the
		// job a while after its SIGTERM.
		open = f.stop
	}
	ds, done, err := c.Epoch(open)
	if err != nil && f.validationStops(c) {
		return 0, errValidationStopped // a Pipe stream's wait or spool, ended by the stop
	}
	if err != nil {
		return 0, fmt.Errorf("epoch %d: %w", epoch, err)
	}
	defer done()
	if c.Streams() && f.Group != nil {
		if err := f.sameRows(ctx, c, ds.Len()); err != nil {
			return 0, fmt.Errorf("epoch %d: %w", epoch, err)
		}
	}
	full := ds.StepsPerEpoch(opts) // the batches of one pass over the data
	if c.Sharded && f.Group != nil {
		// Hosts hold different files: all run the longest host's steps, the
		// others joining the ring with empty batches, so none waits forever.
		var err error
		if full, err = f.agreeSteps(ctx, full); err != nil {
			return 0, fmt.Errorf("epoch %d: %w", epoch, err)
		}
	}
	if full == 0 && c.Sharded { // a host that got none of its objects opens empty
		return 0, &Agreed{fmt.Errorf("epoch %d: channel %q is ShardedByS3Key and no host of the job got any of its rows, and model.fit refuses empty data too", epoch, c.Name)}
	}
	dataEpoch, first, steps := epoch-1, 0, full
	switch {
	case c == f.Train && f.Job.StepsPerEpoch > 0:
		var pass int
		pass, first, steps = cursor(f.Job.InitialEpoch+1, epoch, full, f.Job.StepsPerEpoch)
		dataEpoch = f.Job.InitialEpoch + pass
	case c != f.Train && f.Job.ValidationSteps > 0:
		steps = min(full, f.Job.ValidationSteps) // every evaluation starts at the first batch
	}
	if c == f.Train {
		f.trainRows = ds.Len()
		if err := f.sameEpoch(startStep, steps, ds.Len(), c.Sharded); err != nil {
			return 0, fmt.Errorf("epoch %d: %w", epoch, err)
		}
	}
	opts.StartStep = first + startStep
	it := ds.Epoch(ctx, dataEpoch, opts)
	defer it.Close()
	var progress *report.Progress
	if c == f.Train {
		progress = report.NewProgress(f.Out, steps, f.Terminal)
		defer progress.Done()
	}
	if f.perCall(c) > 1 {
		return f.trainBlocks(ctx, epoch, it, progress, startStep, steps)
	}
	exhausted := false
	for n := startStep; n < steps; n++ {
		if f.validationStops(c) {
			return n, errValidationStopped
		}
		asked := time.Now()
		var b *data.Batch
		if !exhausted {
			var err error
			b, err = it.Next(ctx)
			if errors.Is(err, io.EOF) {
				exhausted, b = true, nil
			} else if err != nil {
				return n, fmt.Errorf("epoch %d: channel %q: %w", epoch, c.Name, err)
			}
		}
		mb := model.Batch{}
		if b != nil {
			mb = model.Batch{Rows: b.Rows, Tensors: b.Tensors}
		}
		size := 0
		if c == f.Train && f.auto.probing() {
			size = batchBytes(mb) // now: the step releases b's buffers
		}
		if c == f.Train {
			f.beforeTrainCall()
		}
		got := time.Now()
		logs, stop, err := step(ctx, mb)
		took := time.Since(got)
		if b != nil {
			b.Release()
		}
		if err != nil {
			what := "step"
			if c != f.Train { // it read as the epoch's first train step (a probe)
				what = "validation step"
			}
			return n, fmt.Errorf("epoch %d %s %d: %w", epoch, what, n+1, err)
		}
		if c == f.Train { // nil where this process's share was empty: it ran no step to log
			f.lastTrain = logs
		} else {
			f.lastTest = logs
		}
		if progress != nil && logs != nil {
			progress.Step(toReport(logs))
		}
		if c != f.Train {
			continue
		}
		f.clock.step(asked, got, time.Now())
		f.globalStep++
		probing := f.inlineProbing() || f.executorPending() // steps_per_execution "auto" probes after them
		f.afterTrainCall(took, true)
		if err := f.considerSingleThreaded(ctx, f.trainStepsLeft(epoch, steps, n+1), took); err != nil {
			return n, fmt.Errorf("epoch %d step %d: %w", epoch, n+1, err)
		}
		if stop {
			path, err := f.checkpoint(ctx, epoch, n+1, steps, true)
			if err != nil {
				return n, err
			}
			return n, &Interrupted{Cause: f.stopCause(), Epoch: epoch, Step: n + 1, Checkpoint: path}
		}
		if f.terminate {
			return n + 1, nil // a callback ended training: the epoch ends here, its logs cover the steps run
		}
		if k := f.Job.CheckpointSteps; k > 0 && f.globalStep%k == 0 && n+1 < steps {
			if _, err := f.checkpoint(ctx, epoch, n+1, steps, false); err != nil {
				return n, err
			}
		}
		if c == f.Train && f.globalStep > 1 && !probing {
			f.auto.probeStep(took, size)
		}
		if f.perCall(c) > 1 && n+1 < steps { // "auto" has chosen: the rest in blocks
			return f.trainBlocks(ctx, epoch, it, progress, n+1, steps)
		}
	}
	return steps, nil
}

// cursor is where epoch (1-based) starts when every epoch takes at most
// perEpoch of a pass's full batches, going on where the last one stopped
// and starting a new pass (a new shuffle) when one is used up, as Keras's
// epoch iterator does with steps_per_epoch; first is training's first
// epoch. It returns the pass (0 for the first), the pass's batch the epoch
// starts at, and the epoch's steps (fewer than perEpoch where the pass
// runs out first).
func cursor(first, epoch, full, perEpoch int) (pass, start, steps int) {
	if full <= 0 {
		return 0, 0, 0
	}
	for e := first; ; e++ {
		steps = min(perEpoch, full-start)
		if e == epoch {
			return pass, start, steps
		}
		if start += steps; start >= full {
			pass, start = pass+1, 0
		}
	}
}

// checkpoint writes where training stands; every host takes part (the
// metric state is summed over hosts) and rank 0 writes. It returns the
// checkpoint's path on rank 0.
func (f *Loop) checkpoint(ctx context.Context, epoch, step, steps int, stop bool) (string, error) {
	if err := f.flushApply(); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	var hosts []byte
	if stop {
		var err error
		if hosts, err = f.hostState(ctx); err != nil {
			return "", fmt.Errorf("checkpoint: the hosts' own state: %w", err)
		}
	}
	if err := f.averageState(ctx); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	var state []float64
	if step > 0 {
		var err error
		if state, err = f.gatheredMetricState(ctx); err != nil {
			return "", fmt.Errorf("checkpoint: %w", err)
		}
	}
	if f.rank() != 0 {
		return "", f.awaitCheckpoint(ctx)
	}
	// One copy of the state for every checkpoint: a new one each time,
	// made before the collector freed the last, held a 1.6 GB state
	// (134 million parameters and Adam's slots) 2.6 GB above a job without
	// checkpoints (a probe), and returning it to the system made each
	// checkpoint fault its pages in again (about 1 s at that size).
	vars, err := f.Model.ReadVariablesInto(f.stateCopy)
	if err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	f.stateCopy = vars
	sample := f.sample()
	var cbState json.RawMessage
	var best []byte
	if f.Callbacks != nil {
		st, kept, err := f.Callbacks.Snapshot()
		if err != nil {
			return "", fmt.Errorf("checkpoint: %w", err)
		}
		if cbState, err = json.Marshal(st); err != nil {
			return "", fmt.Errorf("checkpoint: %w", err)
		}
		best = kept
	}
	path, err := checkpoint.Write(f.Job.CheckpointDir, checkpoint.State{
		Fingerprint: f.Model.Meta().Fingerprint,
		Epoch:       epoch, Step: step, Steps: steps, GlobalStep: f.globalStep,
		Seed: f.Job.Seed, Shuffle: f.Job.Shuffle, BatchSize: f.Job.BatchSize, Hosts: f.world(), Rows: f.trainRows, DataSample: sample,
		StepsPerEpoch: &f.Job.StepsPerEpoch, InitialEpoch: &f.Job.InitialEpoch,
		MetricState: state, Callbacks: cbState, HostState: hosts,
	}, vars, best, f.hist, f.Job.CheckpointKeep)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(f.Log, "sagefit: checkpoint %s\n", path)
	return path, f.awaitCheckpoint(ctx)
}

// checkpointWait bounds how long the other processes wait for rank 0 to
// write a checkpoint: a large model on slow storage takes longer than the
// peer timeout, which bounds a silence, not work. A rank 0 that dies or
// freezes meanwhile is still noticed as before (its connections reset;
// gRPC's keepalive, which a live process answers however busy).
const checkpointWait = 30 * time.Minute

// awaitCheckpoint holds every process until rank 0 has written the
// checkpoint, so that the next step's all-reduce does not count the write
// against the peer timeout (a 10 s peer timeout and a 15 s write failed the
// job, each side blaming the other).
func (f *Loop) awaitCheckpoint(ctx context.Context) error {
	return f.barrier(ctx, checkpointWait, "wait for rank 0 to write the checkpoint", nil)
}

// sameRows checks that every process holds as many rows of a
// FullyReplicated channel as the others (each takes its share of the same
// data): otherwise the hosts would run different steps and fail on a
// mismatched collective, or, a few rows apart, train on mixed data without
// a word. Files are checked before the first step (sameFileRows); a Pipe
// stream at each pass, which also holds every process until each has read its stream
// (Channel.Epoch reads it whole), so that a stream late by less than
// sagefit_pipe_timeout is waited for, as on one host, instead of failing its
// peers' first all-reduce at the peer timeout; a host whose stream never
// comes fails at its pipe timeout, naming the stream, before its peers stop
// waiting.
func (f *Loop) sameRows(ctx context.Context, c *input.Channel, rows int) error {
	counts := make([]float64, f.world())
	counts[f.rank()] = float64(rows)
	wait, what := f.Job.PeerTimeout, "compare the hosts' rows"
	if c.Streams() {
		wait, what = f.Job.PipeTimeout+f.Job.PeerTimeout, "wait for every host's Pipe stream"
	}
	if err := f.barrier(ctx, wait, what, counts); err != nil {
		return err
	}
	if c.Sharded || !slices.ContainsFunc(counts, func(n float64) bool { return n != counts[0] }) {
		return nil
	}
	hosts := make([]string, len(counts))
	for r, n := range counts {
		name := fmt.Sprintf("rank %d", r)
		if f.Job.Env != nil && len(f.Job.Env.Hosts) == len(counts) {
			name = f.Job.Env.Hosts[r]
		}
		hosts[r] = fmt.Sprintf("%s %d", name, int(n))
	}
	if !c.Streams() {
		return &Agreed{fmt.Errorf("channel %q holds different rows on the hosts (%s): a FullyReplicated channel must give every host the same data, of which each takes its share; give each host the same files, or make the channel ShardedByS3Key", c.Name, strings.Join(hosts, ", "))}
	}
	return &Agreed{fmt.Errorf("Pipe channel %q streamed different rows to the hosts (%s): a FullyReplicated channel must send every host the same data, of which each takes its share; send the same stream to each, or make the channel ShardedByS3Key", c.Name, strings.Join(hosts, ", "))}
}

// addValidationLogs adds vlogs to an epoch's logs as val_<name>. A training
// log of that name (the loss of an output named "val") is replaced in its
// place, as Keras's logs dict is updated, and named in a warning once.
func (f *Loop) addValidationLogs(logs, vlogs []model.Metric) []model.Metric {
	for _, m := range vlogs {
		name := "val_" + m.Name
		i := slices.IndexFunc(logs, func(l model.Metric) bool { return l.Name == name })
		if i < 0 {
			logs = append(logs, model.Metric{Name: name, Value: m.Value})
			continue
		}
		if !f.warnedValClash {
			f.warnedValClash = true
			fmt.Fprintf(f.Log, "sagefit: warning: the training metric %s (an output named \"val\"?) and the validation metric of %s share a name; as in Keras, the validation value replaces the training one in the history and the epoch line: rename the output to keep both\n", name, m.Name)
		}
		logs[i].Value = m.Value
	}
	return logs
}

// sameFileRows runs sameRows before the first step for the training and
// validation channels read from files (a Pipe stream's rows are known at
// each pass; a ShardedByS3Key channel's differ by design).
func (f *Loop) sameFileRows(ctx context.Context) error {
	if f.Group == nil {
		return nil
	}
	channels := []*input.Channel{f.Train, f.Val}
	if f.Job.ValidationSplit > 0 {
		channels = channels[:1] // both parts of its files: their rows, as the files hold them
	}
	for _, c := range channels {
		if c == nil || c.Streams() || c.Sharded {
			continue
		}
		rows := c.Examples()
		if c == f.Train && f.Job.ValidationSplit > 0 && f.Val != nil {
			rows += f.Val.Examples()
		}
		if err := f.sameRows(ctx, c, rows); err != nil {
			return fmt.Errorf("epoch %d: %w", max(1, f.Job.InitialEpoch+1), err)
		}
	}
	return nil
}

// barrier is a collective that every process waits at for at least wait
// (a longer peer timeout stays): for work one process does while the
// others have none. It sums buf over the processes (none: a collective of
// nothing).
func (f *Loop) barrier(ctx context.Context, wait time.Duration, what string, buf []float64) error {
	if f.Group == nil {
		return nil
	}
	if g, ok := f.Group.(interface {
		OpTimeout() time.Duration
		SetOpTimeout(time.Duration) time.Duration
	}); ok {
		if peer := g.OpTimeout(); peer < wait {
			g.SetOpTimeout(wait)
			defer g.SetOpTimeout(peer)
		}
	}
	if buf == nil {
		buf = make([]float64, 1)
	}
	if err := f.Group.AllReduceFloat64(ctx, buf); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// sameEpoch refuses to go on mid-epoch (startStep > 0) in an epoch other
// than the checkpoint's: another length (steps_per_epoch, the data's
// batches) or, where every host reads the same data, other training rows
// (its shuffle). Steps already trained would not be the ones this epoch
// skips, which an uninterrupted job's numbers need.
func (f *Loop) sameEpoch(startStep, steps, rows int, sharded bool) error {
	if startStep == 0 {
		return nil
	}
	compareRows := f.resumedRows > 0 && !sharded // older checkpoints hold none; sharded hosts hold their own
	if f.resumedSteps > 0 && steps != f.resumedSteps || compareRows && rows != f.resumedRows {
		return f.otherEpoch(startStep, steps, rows, compareRows)
	}
	if f.resumedSample == "" || sharded {
		return nil
	}
	// As many rows of other values (another draw, a file replaced): the
	// epoch went on in other batches without a word (a probe).
	if sample := f.sample(); sample != "" && sample != f.resumedSample {
		return &Agreed{fmt.Errorf("the checkpoint stopped after step %d of an epoch, but this job's training data differ from the checkpoint's (the same %d rows; another first or last row of a tensor, data digest %s against the checkpoint's %s); resuming mid-epoch needs the same training data (or remove the checkpoint)",
			startStep, rows, sample, f.resumedSample)}
	}
	return nil
}

// otherEpoch is sameEpoch's refusal of an epoch of another length or
// other rows than the checkpoint's.
func (f *Loop) otherEpoch(startStep, steps, rows int, compareRows bool) error {
	ck, this := fmt.Sprintf("%d steps", f.resumedSteps), fmt.Sprintf("%d steps", steps)
	if compareRows {
		ck += fmt.Sprintf(" over %d training rows", f.resumedRows)
		this += fmt.Sprintf(" over %d rows", rows)
	}
	return &Agreed{fmt.Errorf("the checkpoint stopped after step %d of an epoch of %s, but this job's epoch has %s; resuming mid-epoch needs the same training data, %q and %q (or remove the checkpoint)",
		startStep, ck, this, job.HPStepsPerEpoch, job.HPValSplit)}
}

// sample is the training data's digest (input.Channel.Sample), taken once;
// "" where its rows cannot be read now (a FastFile read failing): a stop's
// checkpoint must not fail on it, and a resume is then not compared.
func (f *Loop) sample() string {
	if f.trainSample == nil {
		s, err := f.Train.Sample()
		if err != nil {
			fmt.Fprintf(f.Log, "sagefit: warning: the training data's digest, which a mid-epoch resume compares, could not be taken: %v\n", err)
		}
		f.trainSample = &s
	}
	return *f.trainSample
}

// agreeSteps returns the largest step count of any host.
func (f *Loop) agreeSteps(ctx context.Context, mine int) (int, error) {
	counts := make([]float64, f.world())
	counts[f.rank()] = float64(mine)
	if err := f.Group.AllReduceFloat64(ctx, counts); err != nil {
		return 0, fmt.Errorf("agree on steps per epoch: %w", err)
	}
	most := 0
	for _, c := range counts {
		most = max(most, int(c))
	}
	return most, nil
}

// trainStep is Keras's fused train step on one host; with several hosts it
// computes this host's gradient, sums it with the others' weighted by their
// row counts, and applies the mean, so N hosts with batch B train as one
// host with batch N*B.
//
// A stop request (SIGTERM on any host) rides in the same buffer, so every
// host stops after the same step and the checkpoint is consistent.
func (f *Loop) trainStep(ctx context.Context, b model.Batch) ([]model.Metric, bool, error) {
	stopping := f.stop.Err() != nil
	if f.Group == nil {
		var logs []model.Metric
		var err error
		if f.single.move {
			logs, err = f.moveWith(func() ([]model.Metric, error) { return f.Model.TrainStep(b) })
		} else {
			logs, err = f.Model.TrainStep(b)
		}
		if err != nil {
			return nil, false, err
		}
		f.clock.stepRows = b.Rows
		f.terminate, err = f.batchEnd(logs)
		return logs, stopping, err
	}
	if f.sparse != nil {
		return f.sparseTrainStep(ctx, b, stopping)
	}
	n := len(f.grads) - 3
	var logs []model.Metric
	var ending bool
	if b.Rows > 0 {
		f.trainedRows = true
		var err error
		switch {
		case f.single.move:
			// The move's first call may run twice (single.go): a gradient,
			// which reads no buffer it writes, from applied variables.
			if err = f.flushApply(); err == nil {
				logs, err = f.moveWith(func() ([]model.Metric, error) { return f.Model.ComputeGradients(b, f.grads[:n]) })
			}
		case f.pendingApply:
			logs, err = f.Model.(FusedApplier).ApplyThenComputeGradients(f.grads[:n], b)
			f.pendingApply = false
		default:
			logs, err = f.Model.ComputeGradients(b, f.grads[:n])
		}
		if err != nil {
			return nil, false, err
		}
		if ending, err = f.batchEnd(logs); err != nil {
			return nil, false, err
		}
	} else {
		if err := f.flushApply(); err != nil {
			return nil, false, err
		}
		clear(f.grads[:n]) // an empty share of the last batch still joins the ring
	}
	putStepFlags(f.grads[n:], b.Rows, stopping, ending)
	t := time.Now()
	if err := f.allReduceGradients(ctx, n, b.Rows); err != nil {
		return nil, false, fmt.Errorf("all-reduce gradients: %w", err)
	}
	f.clock.allReduced(time.Since(t))
	stop := f.takeStepFlags(float64(f.grads[n]), float64(f.grads[n+1]), float64(f.grads[n+2]), stopping)
	if f.grads[n] == 0 { // no process had rows: nothing to apply
		return logs, stop, nil
	}
	if fa, ok := f.Model.(FusedApplier); ok && fa.FusedApply() {
		f.pendingApply = true // applied with the next step's computation, or by flushApply
		return logs, stop, nil
	}
	return logs, stop, f.Model.ApplyGradients(f.grads[:n])
}

// putStepFlags writes what every process's step sums beside its
// gradient: its rows, the stop flag (SIGTERM) and the end flag (a
// callback ends training, TerminateOnNaN).
func putStepFlags[T float32 | float64](dst []T, rows int, stopping, ending bool) {
	dst[0], dst[1], dst[2] = T(rows), 0, 0
	if stopping {
		dst[1] = 1
	}
	if ending {
		dst[2] = 1
	}
}

// takeStepFlags takes the sums of every process's putStepFlags: the global
// batch's rows (for timing), an end any process's callback asked for
// (every process ends training after this step), and a stop on another
// host, asked here too; it says whether training stops after this step.
func (f *Loop) takeStepFlags(rows, stop, end float64, stopping bool) bool {
	f.clock.stepRows = int(rows)
	f.terminate = end > 0
	if stop > 0 && !stopping {
		f.requestStop(errors.New("another host of the job was stopped"))
	}
	return stop > 0
}

// shareLoss, where the optimizer scales the loss (LossSharer), makes each
// process's backward pass run on its share of the global batch's loss,
// 1/processes, as MultiWorkerMirroredStrategy divides each replica's loss;
// allReduceGradients weighs the gradients back. One process sets 1 too: a
// model a job of several saved holds its share.
func (f *Loop) shareLoss() error {
	f.lossShare = 1
	s, ok := f.Model.(LossSharer)
	if !ok || !s.SharesLoss() {
		return nil
	}
	share := float32(1 / float64(f.world()))
	if err := s.SetLossShare(share); err != nil {
		return fmt.Errorf("set this process's share of the loss: %w", err)
	}
	f.lossShare = share
	return nil
}

// allReduceGradients turns this process's gradient of rows rows
// (f.grads[:n], the mean over its share) into the mean over the global
// batch, on every process, and sums the rows and flags after it
// (f.grads[n:]): each gradient weighed by its rows, the sum divided by all
// rows, as one process's mean over the batch to the bit. With float16 on
// the wire the rows and flags go first, in float64 (a global batch of over
// 65504 rows was infinite in float16: no step moved a weight), then each
// gradient weighed by its share of all rows, so what travels is at most a
// mean gradient's size (times its rows, a gradient of 500 over 512 rows
// overflowed float16).
func (f *Loop) allReduceGradients(ctx context.Context, n, rows int) error {
	// A gradient of a loss share (shareLoss) is weighed by rows/share.
	if !f.Job.CompressFP16 {
		scale(f.grads[:n], float32(float64(rows)/float64(f.lossShare)))
		if err := f.Group.AllReduce(ctx, f.grads, distributed.Sum); err != nil {
			return err
		}
		if total := f.grads[n]; total > 0 {
			scale(f.grads[:n], 1/total)
		}
		return nil
	}
	counts := []float64{float64(f.grads[n]), float64(f.grads[n+1]), float64(f.grads[n+2])}
	if err := f.Group.AllReduceFloat64(ctx, counts); err != nil {
		return err
	}
	f.grads[n], f.grads[n+1], f.grads[n+2] = float32(counts[0]), float32(counts[1]), float32(counts[2])
	if counts[0] == 0 { // every process knows: none sends, none waits
		return nil
	}
	ls := f.wireLossScale()
	scale(f.grads[:n], float32(float64(rows)/counts[0]/float64(f.lossShare)/ls))
	if err := f.Group.AllReduce(ctx, f.grads[:n], distributed.Sum); err != nil {
		return err
	}
	if ls != 1 {
		scale(f.grads[:n], float32(ls))
	}
	return nil
}

// wireLossScale is what the gradients are divided by before they travel
// as float16 and multiplied by after: an optimizer's loss scale that is
// the same every step (Keras 3's loss_scale_factor), which the gradients
// carry until the update divides it out; a scale of 1e6 made float16's
// every gradient above 0.07 infinite, and the job trained to NaN. A Keras
// 3 LossScaleOptimizer's scale is left on: a float16 overflow is then its
// own overflow, a skipped step and a smaller scale, as in its own float16
// backward pass (tf-keras's unscales in the step). The gathered rows'
// exchange (sparse.go) has no factor to take off: Keras 3's optimizer
// cannot divide an Embedding's rows by it, in fit as in the export.
func (f *Loop) wireLossScale() float64 {
	if s := f.Model.Meta().LossScaleFactor; f.Job.CompressFP16 && s > 0 {
		return s
	}
	return 1
}

// stopCause says why training stops: this process's own signal when it got
// one, even if another host's stop flag reached it first (SageMaker signals
// every host at about the same time), else the other host's stop.
func (f *Loop) stopCause() error {
	if cause := context.Cause(f.signals); cause != nil {
		return cause
	}
	return context.Cause(f.stop)
}

// flushApply applies the last step's averaged gradient if it waits for the
// next step: before anything reads the variables (the epoch's end, a
// checkpoint) or a step without rows.
func (f *Loop) flushApply() error {
	if !f.pendingApply {
		return nil
	}
	f.pendingApply = false
	return f.Model.ApplyGradients(f.grads[:len(f.grads)-3])
}

// batchEnd runs the callbacks that watch every train batch on this
// process's running metrics (the batch being globalStep+1).
func (f *Loop) batchEnd(logs []model.Metric) (bool, error) {
	if f.Callbacks == nil || logs == nil || !f.Callbacks.WatchesBatches() {
		return false, nil
	}
	return f.Callbacks.BatchEnd(f.globalStep+1, callbacks.Logs(logs))
}

// startCallbacks starts the callbacks, with their state where training
// resumes from a checkpoint.
func (f *Loop) startCallbacks(from ResumePoint) error {
	if f.Callbacks == nil {
		return nil
	}
	if err := f.Callbacks.TrainBegin(); err != nil {
		return err
	}
	if len(from.Callbacks) == 0 || string(from.Callbacks) == "null" { // no checkpoint, or one without callbacks
		return nil
	}
	var st callbacks.State
	if err := json.Unmarshal(from.Callbacks, &st); err != nil {
		return fmt.Errorf("callback state from the checkpoint: %w", err)
	}
	return f.Callbacks.Restore(st, from.Best, f.Model)
}

func (f *Loop) testStep(_ context.Context, b model.Batch) ([]model.Metric, bool, error) {
	if b.Rows == 0 {
		return nil, false, nil
	}
	logs, err := f.Model.TestStep(b)
	return logs, false, err
}

// epochMetrics reads the metrics; with several hosts it first sums every
// host's metric state (totals and counts), so the result covers all data.
func (f *Loop) epochMetrics(ctx context.Context) ([]model.Metric, error) {
	if f.Group != nil {
		state, err := f.summedMetricState(ctx)
		if err != nil {
			return nil, err
		}
		if err := f.Model.AssignMetricState(state); err != nil {
			return nil, err
		}
	}
	return f.Model.MetricResults()
}

// stepLogs are a custom step's own logs as the epoch's, where their names
// are not the metrics' (Metadata.TrainLogs, TestLogs): the last step's
// values, as fit takes them (Keras's _get_metrics_result_or_logs); on
// several processes their mean over those that ran it. Where no process
// ran a step this pass (a job resumed at its epoch's last step), the
// metrics' results stand in for the logs of their names (restored from
// the checkpoint), NaN for the others.
func (f *Loop) stepLogs(ctx context.Context, last []model.Metric, names []string, metrics []model.Metric) ([]model.Metric, error) {
	buf := make([]float64, len(names)+1)
	if last != nil {
		for i, name := range names {
			if j := slices.IndexFunc(last, func(m model.Metric) bool { return m.Name == name }); j >= 0 {
				buf[i] = last[j].Value
			}
		}
		buf[len(names)] = 1
	}
	if f.Group != nil {
		if err := f.Group.AllReduceFloat64(ctx, buf); err != nil {
			return nil, fmt.Errorf("gather the steps' logs: %w", err)
		}
	}
	out := make([]model.Metric, len(names))
	for i, name := range names {
		v := math.NaN()
		if n := buf[len(names)]; n > 0 {
			v = buf[i] / n
		} else if j := slices.IndexFunc(metrics, func(m model.Metric) bool { return m.Name == name }); j >= 0 {
			v = metrics[j].Value
		}
		out[i] = model.Metric{Name: name, Value: v}
	}
	return out, nil
}

// gatheredMetricState is every process's metric state, rank after rank,
// on every process (a sum of vectors each process fills its slot of).
func (f *Loop) gatheredMetricState(ctx context.Context) ([]float64, error) {
	state, err := f.Model.MetricState()
	if err != nil {
		return nil, err
	}
	if f.Group == nil {
		return state, nil
	}
	all, err := f.gather(ctx, state)
	if err != nil {
		return nil, fmt.Errorf("gather metric state: %w", err)
	}
	return all, nil
}

// gather is every process's own, rank after rank, on every process: a sum
// of vectors each process fills its slot of, exact (one value and zeros).
func (f *Loop) gather(ctx context.Context, own []float64) ([]float64, error) {
	all := make([]float64, f.world()*len(own))
	copy(all[f.rank()*len(own):], own)
	if err := f.Group.AllReduceFloat64(ctx, all); err != nil {
		return nil, err
	}
	return all, nil
}

// hostState is every process's own copy of the state the hosts average
// (averageState), each followed by 1 where the process trained rows since
// the last average and 0 where not, rank after rank, as float32 bytes: a
// stop's checkpoint averages the state at a step where the job itself
// would not, and a job resumed from the average rounded otherwise than
// one never stopped (a probe: moving variances 2e-6 apart on 2 hosts). nil
// on one process, without such state, or where it was just averaged.
func (f *Loop) hostState(ctx context.Context) ([]byte, error) {
	idx := f.Model.Meta().Averaged()
	if f.Group == nil || len(idx) == 0 || f.averagedAt == f.globalStep {
		return nil, nil
	}
	_, state, err := f.readAveraged(idx)
	if err != nil {
		return nil, err
	}
	own := make([]float64, len(state))
	for i, v := range state {
		own[i] = float64(v)
	}
	all, err := f.gather(ctx, own)
	if err != nil {
		return nil, err
	}
	out := make([]float32, len(all))
	for i, v := range all {
		out[i] = float32(v)
	}
	return model.Float32Bytes(out), nil
}

// readAveraged reads the state into the last copy (a new one at every
// epoch and checkpoint held a large model's state twice until collected)
// and returns it, with the variables the hosts average (idx) one after
// the other, then 1 where this process trained rows since the last
// average and 0 where not.
func (f *Loop) readAveraged(idx []int) ([]model.Variable, []float32, error) {
	vars, err := f.Model.ReadVariablesInto(f.stateCopy)
	if err != nil {
		return nil, nil, err
	}
	f.stateCopy = vars
	var state []float32
	for _, i := range idx {
		if vars[i].DType != model.Float32 {
			return nil, nil, fmt.Errorf("variable %s is %s; sagefit averages float32 state", vars[i].Spec.Name, vars[i].DType)
		}
		state = append(state, vars[i].Float32View()...)
	}
	trained := float32(0)
	if f.trainedRows {
		trained = 1
	}
	return vars, append(state, trained), nil
}

// restoreHostState gives this process back its own copy of the averaged
// state from a stop's checkpoint (hostState) and whether it had trained
// rows since the last average. A checkpoint of another count of processes
// leaves the average every process was given.
func (f *Loop) restoreHostState(all []byte) error {
	idx := f.Model.Meta().Averaged()
	if f.Group == nil || len(idx) == 0 || len(all) == 0 {
		return nil
	}
	vars, err := f.Model.ReadVariables()
	if err != nil {
		return err
	}
	per := 4 // the trained flag
	for _, i := range idx {
		per += len(vars[i].Data)
	}
	if len(all) != per*f.world() {
		return nil
	}
	own := all[f.rank()*per : (f.rank()+1)*per]
	for _, i := range idx {
		own = own[copy(vars[i].Data, own):]
	}
	f.trainedRows = math.Float32frombits(binary.LittleEndian.Uint32(own)) == 1
	return f.Model.AssignVariables(vars)
}

// summedMetricState is the metric state (totals and counts) summed over
// all hosts; every host must call it at the same point.
func (f *Loop) summedMetricState(ctx context.Context) ([]float64, error) {
	state, err := f.Model.MetricState()
	if err != nil {
		return nil, err
	}
	if f.Group != nil {
		if err := f.Group.AllReduceFloat64(ctx, state); err != nil {
			return nil, fmt.Errorf("all-reduce metric state: %w", err)
		}
	}
	return state, nil
}

func scale(v []float32, a float32) {
	blas32.Scal(a, blas32.Vector{N: len(v), Inc: 1, Data: v})
}

func toReport(logs []model.Metric) []report.Metric {
	out := make([]report.Metric, len(logs))
	for i, m := range logs {
		out[i] = report.Metric{Name: m.Name, Value: m.Value}
	}
	return out
}
