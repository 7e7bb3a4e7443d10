package fit

import (
	"context"
	"fmt"
	"time"

	"github.com/sagefit/sagefit/distributed"
	"github.com/sagefit/sagefit/model"
)

// sparseExchange is a step's exchange on several processes for a model
// with sparse gradients (an Embedding's rows): the dense gradients are
// summed, and each sparse one's rows are gathered from every process in
// process order, which are the rows one process given the whole global
// batch looks up (process r trains on the r-th part of each global batch),
// in its order where a table is looked up once a step (looked up twice,
// the order of a row's duplicates differs: their sums' last bits). Keras's
// optimizers apply such rows one by one (Adam's second moment adds each
// lookup's square, not the square of their sum), so the rows, not their
// dense sum, give one process's numbers. What travels is every row looked
// up (and its index, in float64): far less than a large table's dense
// gradient (a 100,000 x 32 table: 3.2 million numbers, against 131,072
// values for 256 rows of 16 ids a host), more than a small table's looked
// up many times (BENCHMARKS.md).
type sparseExchange struct {
	model SparseGatherer
	rows  []int // elements of one row, per sparse variable
	dense int   // elements of the dense gradients
	world int
	// counts: the batch's rows, the stop and end flags, then each
	// process's rows looked up per sparse variable (process-major).
	counts  []float64
	indices []float64 // every process's row indices, variable-major, process-minor
	buf     []float32 // the dense gradients, then the rows' values as indices orders them
	gather  model.SparseRows
}

func newSparseExchange(m SparseGatherer, meta *model.Metadata, world int) *sparseExchange {
	rows, dense := meta.SparseRowSizes()
	return &sparseExchange{model: m, rows: rows, dense: dense, world: world, counts: make([]float64, 3+world*len(rows))}
}

// sparseTrainStep is trainStep on several processes for a model whose
// sparse gradients are gathered: three collectives, the counts first (the
// rows looked up vary with the batch), then the indices (in float64: exact
// below 2^53), then the dense gradients and the rows' values, each
// weighed by this process's share of the global batch's rows.
func (f *Loop) sparseTrainStep(ctx context.Context, b model.Batch, stopping bool) ([]model.Metric, bool, error) {
	x := f.sparse
	if len(x.buf) < x.dense {
		x.buf = make([]float32, x.dense)
	}
	dense := x.buf[:x.dense]
	var logs []model.Metric
	var mine model.SparseRows
	var ending bool
	if b.Rows > 0 {
		f.trainedRows = true
		compute := func() (logs []model.Metric, err error) {
			logs, mine, err = x.model.ComputeSparseGradients(b, dense)
			return logs, err
		}
		var err error
		if f.single.move {
			logs, err = f.moveWith(compute)
		} else {
			logs, err = compute()
		}
		if err != nil {
			return nil, false, err
		}
		if ending, err = f.batchEnd(logs); err != nil {
			return nil, false, err
		}
	}
	t := time.Now()
	total, err := x.exchangeCounts(ctx, f.Group, f.rank(), b.Rows, mine, stopping, ending)
	if err != nil {
		return nil, false, fmt.Errorf("all-reduce gradients: %w", err)
	}
	stop := f.takeStepFlags(x.counts[0], x.counts[1], x.counts[2], stopping)
	if total == 0 {
		f.clock.allReduced(time.Since(t))
		return logs, stop, nil
	}
	// A gradient of a loss share (shareLoss) is weighed by rows/share.
	weight := float32(float64(b.Rows) / float64(total) / float64(f.lossShare))
	gathered, err := x.exchangeRows(ctx, f.Group, f.rank(), mine, weight, b.Rows > 0)
	if err != nil {
		return nil, false, fmt.Errorf("all-reduce gradients: %w", err)
	}
	f.clock.allReduced(time.Since(t))
	return logs, stop, x.model.ApplySparseGradients(x.buf[:x.dense], gathered)
}

// exchangeCounts sums the batch's rows and the flags over the processes
// and tells each the others' rows looked up; it returns the global batch's
// rows.
func (x *sparseExchange) exchangeCounts(ctx context.Context, g Group, rank, rows int, mine model.SparseRows, stopping, ending bool) (int, error) {
	c := x.counts
	clear(c)
	putStepFlags(c, rows, stopping, ending)
	for j, k := range mine.Counts {
		c[3+rank*len(x.rows)+j] = float64(k)
	}
	if err := g.AllReduceFloat64(ctx, c); err != nil {
		return 0, err
	}
	return int(c[0]), nil
}

// exchangeRows gathers every process's rows and sums the dense gradients,
// this process's weighed by weight (its share of the global batch); it
// returns the rows, in order, for the update.
func (x *sparseExchange) exchangeRows(ctx context.Context, g Group, rank int, mine model.SparseRows, weight float32, computed bool) (model.SparseRows, error) {
	nv := len(x.rows)
	k := func(r, j int) int { return int(x.counts[3+r*nv+j]) }
	x.gather.Counts = x.gather.Counts[:0]
	nIdx, nVal := 0, 0
	myIdx, myVal := make([]int, nv), make([]int, nv) // where this process's rows go
	for j := range nv {
		sum := 0
		for r := range x.world {
			if r == rank {
				myIdx[j], myVal[j] = nIdx+sum, nVal+sum*x.rows[j]
			}
			sum += k(r, j)
		}
		x.gather.Counts = append(x.gather.Counts, int64(sum))
		nIdx += sum
		nVal += sum * x.rows[j]
	}
	x.indices = grow(x.indices, nIdx)
	clear(x.indices)
	x.buf = grow(x.buf, x.dense+nVal)
	values := x.buf[x.dense : x.dense+nVal]
	clear(values)
	if computed {
		at, valueAt := 0, 0
		for j := range nv {
			n := int(mine.Counts[j])
			for i, idx := range mine.Indices[at : at+n] {
				x.indices[myIdx[j]+i] = float64(idx)
			}
			copy(values[myVal[j]:], mine.Values[valueAt:valueAt+n*x.rows[j]])
			at, valueAt = at+n, valueAt+n*x.rows[j]
		}
		scale(x.buf[:x.dense+nVal], weight)
	} else {
		clear(x.buf[:x.dense]) // an empty share of the last batch still joins the ring
	}
	if nIdx > 0 {
		if err := g.AllReduceFloat64(ctx, x.indices[:nIdx]); err != nil {
			return model.SparseRows{}, err
		}
	}
	if err := g.AllReduce(ctx, x.buf[:x.dense+nVal], distributed.Sum); err != nil {
		return model.SparseRows{}, err
	}
	x.gather.Indices = x.gather.Indices[:0]
	for _, v := range x.indices[:nIdx] {
		x.gather.Indices = append(x.gather.Indices, int64(v))
	}
	x.gather.Values = values
	return x.gather, nil
}

// grow is s at length n, its values kept.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		t := make([]T, n)
		copy(t, s)
		return t
	}
	return s[:n]
}
