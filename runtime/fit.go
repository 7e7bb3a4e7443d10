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

	grads  []float32 // fused gradient plus one slot for the batch's row count
	timing timing
}

// timing is what timing.json holds.
type timing struct {
	Hosts         int       `json:"hosts"`
	BatchSize     int       `json:"batch_size"`
	StepsPerEpoch int       `json:"steps_per_epoch"`
	Examples      int       `json:"examples"` // training rows of one epoch, all hosts
	EpochSeconds  []float64 `json:"epoch_seconds"`
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
	if c.sharded {
		o.Rank, o.World = 0, 1
	}
	return o
}

// run trains for the job's epochs and returns the history.
func (f *fitter) run(ctx context.Context) (*report.History, error) {
	hist := &report.History{}
	f.timing = timing{Hosts: f.world(), BatchSize: f.job.BatchSize, Examples: f.train.ds.Len()}
	if f.group != nil {
		f.grads = make([]float32, f.model.Meta().GradientSize+1)
	}
	for epoch := 1; epoch <= f.job.Epochs; epoch++ {
		start := time.Now()
		steps, err := f.pass(ctx, epoch, f.train, f.trainStep)
		if err != nil {
			return hist, err
		}
		logs, err := f.epochMetrics(ctx)
		if err != nil {
			return hist, fmt.Errorf("epoch %d: metrics: %w", epoch, err)
		}
		if f.val != nil {
			if _, err := f.pass(ctx, epoch, f.val, f.testStep); err != nil {
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
	}
	return hist, nil
}

// pass runs one epoch's steps over a channel, after resetting the metrics as
// Keras does at the start of fit's epoch and of evaluate.
func (f *fitter) pass(ctx context.Context, epoch int, c *channelData, step func(context.Context, model.Batch) ([]model.Metric, error)) (int, error) {
	if err := f.model.ResetMetrics(); err != nil {
		return 0, fmt.Errorf("epoch %d: %w", epoch, err)
	}
	it := c.ds.Epoch(ctx, epoch-1, f.batchOptions(c))
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
	for n := 0; n < steps; n++ {
		var b *data.Batch
		if !exhausted {
			var err error
			b, err = it.Next(ctx)
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
		logs, err := step(ctx, mb)
		if b != nil {
			b.Release()
		}
		if err != nil {
			return n, fmt.Errorf("epoch %d step %d: %w", epoch, n+1, err)
		}
		if progress != nil && logs != nil {
			progress.Step(toReport(logs))
		}
	}
	return steps, nil
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
func (f *fitter) trainStep(ctx context.Context, b model.Batch) ([]model.Metric, error) {
	if f.group == nil {
		return f.model.TrainStep(b)
	}
	n := len(f.grads) - 1
	var logs []model.Metric
	if b.Rows > 0 {
		var err error
		if logs, err = f.model.ComputeGradients(b, f.grads[:n]); err != nil {
			return nil, err
		}
		scale(f.grads[:n], float32(b.Rows))
	} else {
		clear(f.grads[:n]) // an empty share of the last batch still joins the ring
	}
	f.grads[n] = float32(b.Rows)
	if err := f.group.AllReduce(ctx, f.grads, distributed.Sum); err != nil {
		return nil, fmt.Errorf("all-reduce gradients: %w", err)
	}
	total := f.grads[n]
	if total == 0 {
		return logs, nil
	}
	scale(f.grads[:n], 1/total)
	return logs, f.model.ApplyGradients(f.grads[:n])
}

func (f *fitter) testStep(_ context.Context, b model.Batch) ([]model.Metric, error) {
	if b.Rows == 0 {
		return nil, nil
	}
	return f.model.TestStep(b)
}

// epochMetrics reads the metrics; with several hosts it first sums every
// host's metric state (totals and counts), so the result covers all data.
func (f *fitter) epochMetrics(ctx context.Context) ([]model.Metric, error) {
	if f.group != nil {
		state, err := f.model.MetricState()
		if err != nil {
			return nil, err
		}
		if err := f.group.AllReduceFloat64(ctx, state); err != nil {
			return nil, fmt.Errorf("all-reduce metric state: %w", err)
		}
		if err := f.model.AssignMetricState(state); err != nil {
			return nil, err
		}
	}
	return f.model.MetricResults()
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
