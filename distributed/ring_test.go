package distributed

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/sagefit/sagefit/distributed/internal/ringtest"
	"github.com/sagefit/sagefit/internal/float16"
)

func inputs(world, size int, seed uint64) [][]float32 { return ringtest.Inputs(world, size, seed) }

// ringOrderSum is the documented reduction order (ringtest.OrderSum) for
// chunks of chunkBytes (<= 0: the default).
func ringOrderSum(xs [][]float32, op ReduceOp, chunkBytes int) []float32 {
	if chunkBytes <= 0 {
		chunkBytes = DefaultChunkBytes
	}
	return ringtest.OrderSum(xs, op == Mean, chunkBytes)
}

// float64Reference is the exact-ish answer the float32 result is checked against.
func float64Reference(xs [][]float32, op ReduceOp) (ref, abs []float64) {
	n, L := len(xs), len(xs[0])
	ref, abs = make([]float64, L), make([]float64, L)
	for _, x := range xs {
		for i, v := range x {
			ref[i] += float64(v)
			abs[i] += math.Abs(float64(v))
		}
	}
	if op == Mean {
		for i := range ref {
			ref[i] /= float64(n)
			abs[i] /= float64(n)
		}
	}
	return ref, abs
}

func checkClose(t *testing.T, got []float32, ref, abs []float64, relTol float64) {
	t.Helper()
	for i := range got {
		tol := relTol*abs[i] + 1e-30
		if d := math.Abs(float64(got[i]) - ref[i]); !(d <= tol) {
			t.Fatalf("element %d = %g, float64 reference %g (|diff| %g > tol %g)", i, got[i], ref[i], d, tol)
		}
	}
}

func sameBits(a, b []float32) bool { return ringtest.SameBits(a, b) }

// simulate drives one machine per rank in a single goroutine with no
// transport at all: per-link FIFOs, and a seeded scheduler that picks which
// link delivers next. It shows the core is a pure state machine whose
// result does not depend on interleaving.
func simulate(t *testing.T, ms []Machine, seed uint64) {
	t.Helper()
	n := len(ms)
	rng := rand.New(rand.NewPCG(seed, 7))
	links := make([][]Message, n) // links[to]: FIFO from to-1
	for _, m := range ms {
		for _, out := range m.Start() {
			links[out.To] = append(links[out.To], out)
		}
	}
	for steps := 0; ; steps++ {
		var ready []int
		for r, m := range ms {
			if !m.Done() && len(links[r]) > 0 {
				ready = append(ready, r)
			}
		}
		if len(ready) == 0 {
			break
		}
		r := ready[rng.IntN(len(ready))]
		in := links[r][0]
		links[r] = links[r][1:]
		outs, err := ms[r].Step(in)
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
		for _, out := range outs {
			links[out.To] = append(links[out.To], out)
		}
	}
	for r, m := range ms {
		if !m.Done() {
			t.Fatalf("rank %d not done; waiting for %v", r, m.Waiting())
		}
		if len(links[r]) != 0 {
			t.Fatalf("rank %d has %d undelivered messages", r, len(links[r]))
		}
	}
}

func TestRingAllReduceMachine(t *testing.T) {
	sizes := []int{0, 1, 2, 3, 4, 5, 7, 8, 13, 64, 100, 1023, 4097}
	chunks := []int{4, 12, 64, 0}
	for n := 1; n <= 5; n++ {
		for _, size := range sizes {
			for _, cb := range chunks {
				for _, op := range []ReduceOp{Sum, Mean} {
					name := fmt.Sprintf("n=%d/size=%d/chunk=%d/%v", n, size, cb, op)
					xs := inputs(n, size, 1)
					want := ringOrderSum(xs, op, cb)
					ref, abs := float64Reference(xs, op)
					var first []float32
					for run := range 2 { // two schedules, same bits
						bufs := make([][]float32, n)
						ms := make([]Machine, n)
						for r := range n {
							bufs[r] = slices.Clone(xs[r])
							m, err := NewAllReduce(RingConfig{Rank: r, World: n, Op: 1, ChunkBytes: cb}, bufs[r], op)
							if err != nil {
								t.Fatal(err)
							}
							ms[r] = m
						}
						simulate(t, ms, uint64(run))
						for r := range n {
							if !sameBits(bufs[r], want) {
								t.Fatalf("%s: rank %d differs from the documented reduction order", name, r)
							}
						}
						checkClose(t, bufs[0], ref, abs, float64(n)*0x1p-23)
						if run == 0 {
							first = bufs[0]
						} else if !sameBits(first, bufs[0]) {
							t.Fatalf("%s: results differ between schedules", name)
						}
					}
				}
			}
		}
	}
}

func TestRingChunksRespectLimit(t *testing.T) {
	for _, tc := range []struct{ n, size, chunkBytes int }{
		{2, 1000, 4}, {3, 1001, 40}, {5, 3, 8}, {4, 1 << 16, 1 << 12}, {3, 7, 1},
	} {
		xs := inputs(tc.n, tc.size, 2)
		ms := make([]Machine, tc.n)
		for r := range ms {
			ms[r], _ = NewAllReduce(RingConfig{Rank: r, World: tc.n, Op: 1, ChunkBytes: tc.chunkBytes}, xs[r], Sum)
		}
		limit := max(tc.chunkBytes, 4) // at least one element per chunk
		for _, m := range ms {
			for _, out := range m.Start() {
				if len(out.Payload) > limit {
					t.Fatalf("%+v: payload %d bytes > %d", tc, len(out.Payload), limit)
				}
			}
		}
	}
}

func TestRingBroadcastMachine(t *testing.T) {
	for n := 1; n <= 5; n++ {
		for _, size := range []int{0, 1, 7, 100, 5000} {
			for root := range n {
				for _, cb := range []int{3, 64, 0} {
					src := make([]byte, size)
					for i := range src {
						src[i] = byte(i*7 + root)
					}
					bufs := make([][]byte, n)
					ms := make([]Machine, n)
					for r := range n {
						bufs[r] = make([]byte, size)
						if r == root {
							copy(bufs[r], src)
						}
						m, err := NewBroadcast(RingConfig{Rank: r, World: n, Op: 3, ChunkBytes: cb}, bufs[r], root)
						if err != nil {
							t.Fatal(err)
						}
						ms[r] = m
					}
					simulate(t, ms, uint64(size))
					for r := range n {
						if !slices.Equal(bufs[r], src) {
							t.Fatalf("n=%d size=%d root=%d chunk=%d: rank %d got other bytes", n, size, root, cb, r)
						}
					}
				}
			}
		}
	}
}

func TestRingBarrierMachine(t *testing.T) {
	for n := 1; n <= 6; n++ {
		ms := make([]Machine, n)
		for r := range n {
			ms[r], _ = NewBarrier(RingConfig{Rank: r, World: n, Op: 9})
		}
		simulate(t, ms, 1)
	}
	// A barrier must not finish while one rank has not started.
	n := 4
	ms := make([]Machine, n)
	for r := range n {
		ms[r], _ = NewBarrier(RingConfig{Rank: r, World: n, Op: 9})
	}
	var links [][]Message = make([][]Message, n)
	for r := 0; r < n-1; r++ { // rank 3 never starts
		for _, out := range ms[r].Start() {
			links[out.To] = append(links[out.To], out)
		}
	}
	for progress := true; progress; {
		progress = false
		for r := 0; r < n-1; r++ {
			for len(links[r]) > 0 && !ms[r].Done() {
				in := links[r][0]
				links[r] = links[r][1:]
				outs, _ := ms[r].Step(in)
				for _, o := range outs {
					links[o.To] = append(links[o.To], o)
				}
				progress = true
			}
		}
	}
	for r := 0; r < n-1; r++ {
		if ms[r].Done() {
			t.Fatalf("rank %d left the barrier before rank 3 entered", r)
		}
	}
}

func TestRingMismatches(t *testing.T) {
	a, _ := NewAllReduce(RingConfig{Rank: 0, World: 2, Op: 1}, make([]float32, 10), Sum)
	b, _ := NewAllReduce(RingConfig{Rank: 1, World: 2, Op: 1}, make([]float32, 12), Sum)
	c, _ := NewAllReduce(RingConfig{Rank: 1, World: 2, Op: 1, Compression: FP16}, make([]float32, 10), Sum)
	d, _ := NewBroadcast(RingConfig{Rank: 1, World: 2, Op: 1}, make([]byte, 10), 0)
	e, _ := NewAllReduce(RingConfig{Rank: 1, World: 2, Op: 1, ChunkBytes: 8}, make([]float32, 10), Sum)
	msgs := a.Start()
	for _, tc := range []struct {
		name string
		m    Machine
		want string
	}{
		{"length", b, "rank 0 has 10 float32 values in all-reduce #1 but rank 1 has 12"},
		{"compression", c, "every rank must use the same compression"},
		{"collective", d, "rank 0 is in all-reduce #1 but rank 1 is in broadcast #1"},
		{"chunking", e, "every rank must use the same ChunkBytes"},
	} {
		tc.m.Start()
		_, err := tc.m.Step(msgs[0])
		if err == nil || !contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want it to mention %q", tc.name, err, tc.want)
		}
		if !IsMismatchErr(err) {
			t.Errorf("%s: %T is not a *MismatchError", tc.name, err)
		}
	}
}

// TestFP16Conversion pins the rounding fp16 wire compression relies on
// (package float16 does the converting; these are the cases the ring's
// results depend on).
func TestFP16Conversion(t *testing.T) {
	for h := range 1 << 16 {
		f := float16.ToFloat32(uint16(h))
		if f != f {
			if back := float16.FromFloat32(f); back&0x7c00 != 0x7c00 || back&0x3ff == 0 {
				t.Fatalf("NaN %#04x came back as %#04x", h, back)
			}
			continue
		}
		if back := float16.FromFloat32(f); back != uint16(h) {
			t.Fatalf("%#04x -> %g -> %#04x", h, f, back)
		}
	}
	for _, tc := range []struct {
		in   float32
		want uint16
	}{
		{1, 0x3c00}, {-2, 0xc000}, {65504, 0x7bff}, {65520, 0x7c00}, {1e9, 0x7c00},
		{1 + 0x1p-11, 0x3c00},       // tie, rounds to even
		{1 + 3*0x1p-11, 0x3c02},     // tie, rounds to even (up)
		{0x1p-24, 0x0001},           // smallest subnormal
		{0x1p-25, 0x0000},           // tie with zero, rounds to even
		{0x1p-25 + 0x1p-35, 0x0001}, // just above the tie
		{float32(math.Inf(-1)), 0xfc00},
	} {
		if got := float16.FromFloat32(tc.in); got != tc.want {
			t.Errorf("float16.FromFloat32(%g) = %#04x, want %#04x", tc.in, got, tc.want)
		}
	}
}

func TestAddKernelsAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	for _, n := range []int{0, 1, 3, 7, 8, 9, 31, 1000, 4099} {
		a, b := make([]float32, n), make([]float32, n)
		for i := range a {
			a[i], b[i] = rng.Float32()*1e3-500, rng.Float32()*1e-3
		}
		x, y := slices.Clone(a), slices.Clone(a)
		addF32BLAS(x, b)
		addF32Loop(y, b)
		if !sameBits(x, y) {
			t.Fatalf("n=%d: BLAS and loop kernels disagree", n)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func IsMismatchErr(err error) bool {
	var m *MismatchError
	return errors.As(err, &m)
}
