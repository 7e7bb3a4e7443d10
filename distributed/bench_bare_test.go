package distributed

import (
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"testing"
)

// The bare ring: a yardstick for what a ring all-reduce can reach on this
// machine, run by the bench helper's "bare" mode (bench_helper_test.go).
// It has the same pieces, chunks and reduction order as sagefit's ring
// (ringReduce's own layout), on one plain TCP connection per link, with
// nothing but reads, sums and writes: one goroutine reads a chunk, sums it
// and queues it on, another writes. No frames, sequence numbers, liveness,
// placement or fault handling: what sagefit's ring costs beyond this is
// the price of those. A benchmark reference only; it has no failure
// handling at all.

// bareBarrier passes a byte round the ring n-1 times: every rank has then
// heard, through its predecessors, from every other.
func bareBarrier(n int, in io.Reader, out io.Writer) error {
	var b [1]byte
	for range n - 1 {
		if _, err := out.Write(b[:]); err != nil {
			return err
		}
		if _, err := io.ReadFull(in, b[:]); err != nil {
			return err
		}
	}
	return nil
}

// bareAllReduce sums buf over the ring in sagefit's order: per piece, the
// reduce-scatter's chunks are read into scratch and added into buf, the
// all-gather's straight into buf, and every chunk but the last hop's is
// written on; the next piece starts where ringReduce.Step starts it.
func bareAllReduce(rank, n, chunkBytes int, buf []float32, in io.Reader, out io.Writer, scratch []byte) (err error) {
	m, err := newRingReduce(RingConfig{Rank: rank, World: n, Op: 1, ChunkBytes: chunkBytes}, KindAllReduce, buf, Sum, wireCodec[float32](f32Raw{}), "")
	if err != nil {
		return err
	}
	sends := make(chan []float32, 2*n*m.k)
	written := make(chan error, 1)
	go func() {
		var err error
		for c := range sends {
			if err == nil {
				_, err = out.Write(bytesView(c))
			}
		}
		written <- err
	}()
	defer func() {
		close(sends)
		if werr := <-written; err == nil {
			err = werr
		}
	}()
	startPiece := func(j int) {
		for c := j; c < j+m.g; c++ {
			sends <- m.chunk(rank, c)
		}
	}
	startPiece(0)
	for p := range m.k / m.g {
		for s := range 2 * (n - 1) {
			for j := p * m.g; j < (p+1)*m.g; j++ {
				if s < n-1 { // reduce-scatter step s
					c := m.chunk(rank-s-1, j)
					got := scratch[:4*len(c)]
					if _, err := io.ReadFull(in, got); err != nil {
						return err
					}
					addF32(c, f32View(got))
					sends <- c
				} else { // all-gather step s-(n-1)
					c := m.chunk(rank-(s-(n-1)), j)
					if _, err := io.ReadFull(in, bytesView(c)); err != nil {
						return err
					}
					if s < 2*(n-1)-1 {
						sends <- c
					}
				}
				phase, step := PhaseReduceScatter, s
				if s >= n-1 {
					phase, step = PhaseAllGather, s-(n-1)
				}
				if m.startsNextPiece(phase, step, j) {
					startPiece(j + 1)
				}
			}
		}
	}
	return nil
}

// The bare ring must compute what sagefit's ring does, bit for bit, or it
// is no yardstick for it.
func TestBareRingSumsLikeTheRing(t *testing.T) {
	if raceDetector {
		// The all-gather reads into a chunk the writer goroutine sent
		// earlier; what orders the two is the peer's reply over TCP, which
		// the race detector cannot see.
		t.Skip("the bare ring synchronises through its TCP links, unseen by -race")
	}
	for _, n := range []int{2, 3} {
		const L, chunkBytes = 10_007, 4 << 10 // pieces of uneven chunks
		rng := rand.New(rand.NewPCG(uint64(n), 7))
		xs := make([][]float32, n)
		for r := range xs {
			xs[r] = make([]float32, L)
			for i := range xs[r] {
				xs[r][i] = float32(rng.NormFloat64())
			}
		}
		want := ringOrderSum(xs, Sum, chunkBytes)
		ins, outs := make([]net.Conn, n), make([]net.Conn, n)
		for r := range n { // rank r writes to rank r+1
			var err error
			if outs[r], ins[(r+1)%n], err = loopbackPair("127.0.0.1"); err != nil {
				t.Fatal(err)
			}
		}
		errs := make(chan error, n)
		for r := range n {
			go func() {
				defer outs[r].Close()
				errs <- bareAllReduce(r, n, chunkBytes, xs[r], ins[r], outs[r], make([]byte, chunkBytes))
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		for r := range n {
			if !slices.Equal(xs[r], want) {
				t.Errorf("n=%d: rank %d differs from the ring's order of sums", n, r)
			}
			ins[r].Close()
		}
	}
}
