package transport

import (
	"context"
	"testing"

	"github.com/sagefit/sagefit/distributed"
	"github.com/sagefit/sagefit/distributed/internal/ringtest"
)

// The drivers and references the core's tests use too (internal/ringtest),
// for groups joined over this transport.

func inputs(world, size int, seed uint64) [][]float32 { return ringtest.Inputs(world, size, seed) }

// ringOrderSum is the documented reduction order for chunks of chunkBytes
// (<= 0: the default).
func ringOrderSum(xs [][]float32, op distributed.ReduceOp, chunkBytes int) []float32 {
	if chunkBytes <= 0 {
		chunkBytes = distributed.DefaultChunkBytes
	}
	return ringtest.OrderSum(xs, op == distributed.Mean, chunkBytes)
}

func onAll(t testing.TB, gs []*distributed.Group, fn func(ctx context.Context, g *distributed.Group) error) []error {
	t.Helper()
	return ringtest.OnAll(t, gs, fn)
}

func allReduceCopies(t testing.TB, gs []*distributed.Group, xs [][]float32, op distributed.ReduceOp) [][]float32 {
	t.Helper()
	return ringtest.AllReduceCopies(t, gs, xs, func(ctx context.Context, g *distributed.Group, buf []float32) error {
		return g.AllReduce(ctx, buf, op)
	})
}

func expectAll(t testing.TB, bufs [][]float32, want []float32, what string) {
	t.Helper()
	ringtest.ExpectAll(t, bufs, want, what)
}

func noErrors(t testing.TB, errs []error) {
	t.Helper()
	ringtest.NoErrors(t, errs)
}
