// Package ringtest holds what the tests and benchmarks of package
// distributed and package distributed/transport share: deterministic
// inputs, the documented order of sums they are checked against, and
// drivers that run one call on every rank at once.
//
// It imports nothing of sagefit (package distributed's own tests use it,
// and a package that imported distributed would be an import cycle for
// them), so it knows groups only as values with a Rank and takes the
// collective to run as a function.
package ringtest

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
)

// Inputs returns world deterministic pseudo-random vectors of length size
// with mixed magnitudes and signs, so rounding order matters.
func Inputs(world, size int, seed uint64) [][]float32 {
	rng := rand.New(rand.NewPCG(seed, uint64(world*1000003+size)))
	xs := make([][]float32, world)
	for r := range xs {
		xs[r] = make([]float32, size)
		for i := range xs[r] {
			xs[r][i] = float32((rng.Float64()*2 - 1) * math.Pow(10, float64(rng.IntN(7)-3)))
		}
	}
	return xs
}

// OrderSum is the documented reduction order for chunks of chunkBytes
// (> 0): the buffer is cut into pieces of up to 2 chunks per segment, each
// piece into n segments, and an element in segment i of its piece is
// summed starting from rank i round the ring. mean divides the sum by n.
func OrderSum(xs [][]float32, mean bool, chunkBytes int) []float32 {
	n, L := len(xs), len(xs[0])
	chunkElems := max(1, chunkBytes/4)
	chunksPerSeg := max(1, ((L+n-1)/n+chunkElems-1)/chunkElems)
	pieces := (chunksPerSeg + 1) / 2
	out := make([]float32, L)
	for p := range pieces {
		lo, hi := p*L/pieces, (p+1)*L/pieces
		for seg := range n {
			for e := lo + seg*(hi-lo)/n; e < lo+(seg+1)*(hi-lo)/n; e++ {
				s := xs[seg][e]
				for t := 1; t < n; t++ {
					s += xs[(seg+t)%n][e]
				}
				if mean {
					s /= float32(n)
				}
				out[e] = s
			}
		}
	}
	return out
}

// SameBits reports whether a and b hold the same float32 bits.
func SameBits(a, b []float32) bool {
	return slices.EqualFunc(a, b, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) })
}

// OnAll runs fn on every rank at once and returns each rank's error. A
// 60 s context bounds every wait, so a bug shows up as a failure, not a
// hang.
func OnAll[G any](t testing.TB, gs []G, fn func(ctx context.Context, g G) error) []error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	errs := make([]error, len(gs))
	var wg sync.WaitGroup
	for r, g := range gs {
		wg.Go(func() { errs[r] = fn(ctx, g) })
	}
	wg.Wait()
	return errs
}

// NoErrors fails the test at the first rank's error.
func NoErrors(t testing.TB, errs []error) {
	t.Helper()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
}

// ExpectAll fails the test unless every rank's buffer holds want's bits.
func ExpectAll(t testing.TB, bufs [][]float32, want []float32, what string) {
	t.Helper()
	for r := range bufs {
		if !SameBits(bufs[r], want) {
			t.Fatalf("%s: rank %d differs from the fixed-order result", what, r)
		}
	}
}

// Ranked is a group as these helpers see it.
type Ranked interface{ Rank() int }

// AllReduceCopies runs allReduce on a copy of each rank's xs, on every rank
// at once, and returns the copies.
func AllReduceCopies[G Ranked](t testing.TB, gs []G, xs [][]float32, allReduce func(ctx context.Context, g G, buf []float32) error) [][]float32 {
	t.Helper()
	bufs := make([][]float32, len(xs))
	for r := range xs {
		bufs[r] = slices.Clone(xs[r])
	}
	NoErrors(t, OnAll(t, gs, func(ctx context.Context, g G) error {
		return allReduce(ctx, g, bufs[g.Rank()])
	}))
	return bufs
}

// Benchmarks. Bus bandwidth follows nccl-tests: busbw = S/t * 2(n-1)/n, the
// rate each link carries during a ring all-reduce, comparable across n and
// with the raw link bound (BenchmarkTCPPump in package distributed).

// BenchSizes are the buffer sizes the all-reduce benchmarks run;
// SAGEFIT_BENCH_LARGE=1 adds 256 MiB.
func BenchSizes() []int {
	s := []int{4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20}
	if os.Getenv("SAGEFIT_BENCH_LARGE") != "" {
		s = append(s, 256<<20)
	}
	return s
}

// SizeName writes a byte count as a sub-benchmark name: 4KiB, 16MiB.
func SizeName(b int) string {
	switch {
	case b >= 1<<20:
		return fmt.Sprintf("%dMiB", b>>20)
	case b >= 1<<10:
		return fmt.Sprintf("%dKiB", b>>10)
	}
	return fmt.Sprintf("%dB", b)
}

func reportBusBW(b *testing.B, bytes, n int, elapsed time.Duration) {
	t := elapsed.Seconds() / float64(b.N)
	b.ReportMetric(float64(bytes)/t*2*float64(n-1)/float64(n)/1e6, "busbw-MB/s")
	b.ReportMetric(float64(bytes)/t/1e6, "algbw-MB/s")
}

// RunAllReduce times b.N all-reduces of bytes on every group at once.
func RunAllReduce[G Ranked](b *testing.B, gs []G, bytes int, allReduce func(ctx context.Context, g G, buf []float32) error) {
	n := len(gs)
	bufs := make([][]float32, n)
	for r := range bufs {
		bufs[r] = make([]float32, bytes/4)
		for i := range bufs[r] {
			bufs[r][i] = float32(i%251) * 0.5
		}
	}
	b.SetBytes(int64(bytes))
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		errs := OnAll(b, gs, func(ctx context.Context, g G) error {
			return allReduce(ctx, g, bufs[g.Rank()])
		})
		NoErrors(b, errs)
	}
	reportBusBW(b, bytes, n, time.Since(start))
}
