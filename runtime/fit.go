package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"gonum.org/v1/gonum/blas/blas32"

	"github.com/sagefit/sagefit/data"
	"github.com/sagefit/sagefit/distributed"
	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/runtime/report"
)

// Group is the set of the job's hosts training together;
// *distributed.Group implements it over gRPC. A nil Group is one host.
type Group interface {
	Rank() int
	World() int
	// AllReduce combines buf over all hosts, in place; every host ends with
	// bit-identical values.
	AllReduce(ctx context.Context, buf []float32, op distributed.ReduceOp) error
	// AllReduceFloat64 sums small float64 vectors (metric state).
	AllReduceFloat64(ctx context.Context, buf []float64) error
	// Broadcast overwrites buf on every host with root's buf.
	Broadcast(ctx context.Context, buf []byte, root int) error
	Close() error
}

// fitter runs model.fit's loop over one host's share of the data.
type fitter struct {
	job      *Job
	model    *model.Model
	group    Group // nil for one host
	train    *channelData
	val      *channelData
	out      io.Writer // epoch lines
	terminal bool      // progress bars only on a terminal

	grads  []float32 // fused gradient, the batch's row count, the stop flag
	timing timing

	log         io.Writer               // progress notes (stderr)
	hist        *report.History         // epochs finished, for checkpoints
	globalStep  int                     // train steps since epoch 1 step 0
	stop        context.Context         // done once a stop is requested
	requestStop context.CancelCauseFunc // stops this host when another asked
}

// timing is what timing.json holds.
type timing struct {
	Hosts         int       `json:"hosts"`
	BatchSize     int       `json:"batch_size"`
	StepsPerEpoch int       `json:"steps_per_epoch"`
	Examples      int       `json:"examples"` // training rows of one epoch, all hosts
	EpochSeconds  []float64 `json:"epoch_seconds"`
	// InputSeconds is, per epoch, how long training steps waited for their
	// batch: near zero when prefetch keeps up.
	InputSeconds []float64 `json:"input_wait_seconds"`
}

func (f *fitter) world() int {
	if f.group == nil {
		return 1
	}
	return f.group.World()
}

func (f *fitter) rank() int {
	if f.group == nil {
		return 0
	}
	return f.group.Rank()
}

func (f *fitter) batchOptions(c *channelData) data.BatchOptions {
	o := data.BatchOptions{
		BatchSize: f.job.BatchSize,
		Shuffle:   f.job.Shuffle && c == f.train, // Keras never shuffles validation data
		Seed:      f.job.Seed,
		Prefetch:  f.job.Prefetch,
		DTypes:    c.dtypes,
		Rank:      f.rank(),
		World:     f.world(),
	}
	if o.Prefetch == 0 {
		o.Prefetch = -1 // the data package's "none"
	}
	if c.sharded { // this host's files, shared by its processes
		o.Rank, o.World = f.job.Env.LocalRank, max(1, f.job.Env.LocalWorkers)
	}
	return o
}

// resumePoint is where training starts: epoch 1 step 0, or a checkpoint's.
type resumePoint struct {
	epoch, step int
	metricState []float64 // this host's share of the epoch's metric state; nil at step 0
	history     *report.History
}

// StoppedError is returned when a stop was requested (SIGTERM: a stop or a
// spot interruption) and training stopped cleanly after a step.
type StoppedError struct {
	Cause      error
	Epoch      int
	Step       int
	Checkpoint string // empty on hosts other than rank 0
}

func (e *StoppedError) Error() string {
	msg := fmt.Sprintf("training stopped (%v) at epoch %d step %d", e.Cause, e.Epoch, e.Step)
	if e.Checkpoint != "" {
		msg += "; checkpoint written to " + e.Checkpoint + ", from which a job with the same checkpoint location resumes"
	}
	return msg
}

func (e *StoppedError) Unwrap() error { return e.Cause }

// run trains from the resume point through the job's last epoch and returns
// the history.
func (f *fitter) run(ctx context.Context, from resumePoint) (*report.History, error) {
	hist := from.history
	if hist == nil {
		hist = &report.History{}
	}
	f.hist = hist
	f.timing = timing{Hosts: f.world(), BatchSize: f.job.BatchSize, Examples: f.train.examples()}
	if f.group != nil {
		// Gradient, then the batch's row count, then the stop flag.
		f.grads = make([]float32, f.model.Meta().GradientSize+2)
	}
	for epoch := from.epoch; epoch <= f.job.Epochs; epoch++ {
		start := time.Now()
		startStep := 0
		if epoch == from.epoch && from.step > 0 {
			startStep = from.step
			if err := f.model.AssignMetricState(from.metricState); err != nil {
				return hist, fmt.Errorf("resume epoch %d: %w", epoch, err)
			}
		}
		steps, err := f.pass(ctx, epoch, f.train, f.trainStep, startStep)
		if err != nil {
			return hist, err
		}
		logs, err := f.epochMetrics(ctx)
		if err != nil {
			return hist, fmt.Errorf("epoch %d: metrics: %w", epoch, err)
		}
		if f.val != nil {
			if _, err := f.pass(ctx, epoch, f.val, f.testStep, 0); err != nil {
				return hist, err
			}
			vlogs, err := f.epochMetrics(ctx)
			if err != nil {
				return hist, fmt.Errorf("epoch %d: validation metrics: %w", epoch, err)
			}
			for _, m := range vlogs {
				logs = append(logs, model.Metric{Name: "val_" + m.Name, Value: m.Value})
			}
		}
		f.timing.EpochSeconds = append(f.timing.EpochSeconds, time.Since(start).Seconds())
		f.timing.StepsPerEpoch = steps
		rl := toReport(logs)
		hist.Append(rl)
		fmt.Fprintln(f.out, report.EpochLine(epoch, f.job.Epochs, steps, time.Since(start), rl))
		if f.job.CheckpointEpochs && epoch < f.job.Epochs {
			if _, err := f.checkpoint(ctx, epoch+1, 0, steps); err != nil {
				return hist, err
			}
		}
	}
	return hist, nil
}

// stepFunc runs one step; stop reports that every host agreed to stop
// after it.
type stepFunc func(context.Context, model.Batch) (logs []model.Metric, stop bool, err error)

// pass runs one epoch's steps over a channel from startStep, after
// resetting the metrics as Keras does at the start of fit's epoch and of
// evaluate (a resumed epoch keeps the metric state it was given).
func (f *fitter) pass(ctx context.Context, epoch int, c *channelData, step stepFunc, startStep int) (int, error) {
	if startStep == 0 {
		if err := f.model.ResetMetrics(); err != nil {
			return 0, fmt.Errorf("epoch %d: %w", epoch, err)
		}
	}
	opts := f.batchOptions(c)
	opts.StartStep = startStep
	ds, done, err := c.epochData(ctx, epoch-1)
	if err != nil {
		return 0, fmt.Errorf("epoch %d: %w", epoch, err)
	}
	defer done()
	it := ds.Epoch(ctx, epoch-1, opts)
	defer it.Close()
	steps := it.StepsPerEpoch()
	if c.sharded && f.group != nil {
		// Hosts hold different files: all run the longest host's steps, the
		// others joining the ring with empty batches, so none waits forever.
		var err error
		if steps, err = f.agreeSteps(ctx, steps); err != nil {
			return 0, fmt.Errorf("epoch %d: %w", epoch, err)
		}
	}
	var progress *report.Progress
	if c == f.train {
		progress = report.NewProgress(f.out, steps, f.terminal)
		defer progress.Done()
	}
	exhausted := false
	var waited time.Duration
	if c == f.train {
		defer func() { f.timing.InputSeconds = append(f.timing.InputSeconds, waited.Seconds()) }()
	}
	for n := startStep; n < steps; n++ {
		var b *data.Batch
		if !exhausted {
			var err error
			t0 := time.Now()
			b, err = it.Next(ctx)
			waited += time.Since(t0)
			if errors.Is(err, io.EOF) {
				exhausted, b = true, nil
			} else if err != nil {
				return n, fmt.Errorf("epoch %d: channel %q: %w", epoch, c.name, err)
			}
		}
		mb := model.Batch{}
		if b != nil {
			mb = model.Batch{Rows: b.Rows, Tensors: b.Tensors}
		}
		logs, stop, err := step(ctx, mb)
		if b != nil {
			b.Release()
		}
		if err != nil {
			return n, fmt.Errorf("epoch %d step %d: %w", epoch, n+1, err)
		}
		if progress != nil && logs != nil {
			progress.Step(toReport(logs))
		}
		if c != f.train {
			continue
		}
		f.globalStep++
		if stop {
			path, err := f.checkpoint(ctx, epoch, n+1, steps)
			if err != nil {
				return n, err
			}
			return n, &StoppedError{Cause: context.Cause(f.stop), Epoch: epoch, Step: n + 1, Checkpoint: path}
		}
		if k := f.job.CheckpointSteps; k > 0 && f.globalStep%k == 0 && n+1 < steps {
			if _, err := f.checkpoint(ctx, epoch, n+1, steps); err != nil {
				return n, err
			}
		}
	}
	return steps, nil
}

// checkpoint writes where training stands; every host takes part (the
// metric state is summed over hosts) and rank 0 writes. It returns the
// checkpoint's path on rank 0.
func (f *fitter) checkpoint(ctx context.Context, epoch, step, steps int) (string, error) {
	var state []float64
	if step > 0 {
		var err error
		if state, err = f.summedMetricState(ctx); err != nil {
			return "", fmt.Errorf("checkpoint: %w", err)
		}
	}
	if f.rank() != 0 {
		return "", nil
	}
	vars, err := f.model.ReadVariables()
	if err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	path, err := writeCheckpoint(f.job.CheckpointDir, ckptState{
		Version: checkpointVersion, Fingerprint: f.model.Meta().Fingerprint,
		Epoch: epoch, Step: step, Steps: steps, GlobalStep: f.globalStep,
		Seed: f.job.Seed, Shuffle: f.job.Shuffle, BatchSize: f.job.BatchSize, Hosts: f.world(),
		MetricState: state,
	}, vars, f.hist, f.job.CheckpointKeep)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(f.log, "sagefit: checkpoint %s\n", path)
	return path, nil
}

// agreeSteps returns the largest step count of any host.
func (f *fitter) agreeSteps(ctx context.Context, mine int) (int, error) {
	counts := make([]float64, f.world())
	counts[f.rank()] = float64(mine)
	if err := f.group.AllReduceFloat64(ctx, counts); err != nil {
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
func (f *fitter) trainStep(ctx context.Context, b model.Batch) ([]model.Metric, bool, error) {
	stopping := f.stop.Err() != nil
	if f.group == nil {
		logs, err := f.model.TrainStep(b)
		return logs, stopping, err
	}
	n := len(f.grads) - 2
	var logs []model.Metric
	if b.Rows > 0 {
		var err error
		if logs, err = f.model.ComputeGradients(b, f.grads[:n]); err != nil {
			return nil, false, err
		}
		scale(f.grads[:n], float32(b.Rows))
	} else {
		clear(f.grads[:n]) // an empty share of the last batch still joins the ring
	}
	f.grads[n] = float32(b.Rows)
	f.grads[n+1] = 0
	if stopping {
		f.grads[n+1] = 1
	}
	if err := f.group.AllReduce(ctx, f.grads, distributed.Sum); err != nil {
		return nil, false, fmt.Errorf("all-reduce gradients: %w", err)
	}
	stop := f.grads[n+1] > 0
	if stop && !stopping {
		f.requestStop(errors.New("another host of the job was stopped"))
	}
	total := f.grads[n]
	if total == 0 {
		return logs, stop, nil
	}
	scale(f.grads[:n], 1/total)
	return logs, stop, f.model.ApplyGradients(f.grads[:n])
}

func (f *fitter) testStep(_ context.Context, b model.Batch) ([]model.Metric, bool, error) {
	if b.Rows == 0 {
		return nil, false, nil
	}
	logs, err := f.model.TestStep(b)
	return logs, false, err
}

// epochMetrics reads the metrics; with several hosts it first sums every
// host's metric state (totals and counts), so the result covers all data.
func (f *fitter) epochMetrics(ctx context.Context) ([]model.Metric, error) {
	if f.group != nil {
		state, err := f.summedMetricState(ctx)
		if err != nil {
			return nil, err
		}
		if err := f.model.AssignMetricState(state); err != nil {
			return nil, err
		}
	}
	return f.model.MetricResults()
}

// summedMetricState is the metric state (totals and counts) summed over
// all hosts; every host must call it at the same point.
func (f *fitter) summedMetricState(ctx context.Context) ([]float64, error) {
	state, err := f.model.MetricState()
	if err != nil {
		return nil, err
	}
	if f.group != nil {
		if err := f.group.AllReduceFloat64(ctx, state); err != nil {
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
