package distributed

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sagefit/sagefit/distributed/internal/ringtest"
)

// memGroups makes one Group per rank over a fresh MemNetwork.
func memGroups(t testing.TB, n int, f Faults, opts ...Option) ([]*Group, *MemNetwork) {
	t.Helper()
	nw := NewMemNetwork(n, f)
	gs := make([]*Group, n)
	for r := range n {
		g, err := NewGroup(nw.Transport(r), r, n, opts...)
		if err != nil {
			t.Fatal(err)
		}
		gs[r] = g
	}
	t.Cleanup(func() {
		for _, g := range gs {
			g.Close()
		}
	})
	return gs, nw
}

// The shared drivers (internal/ringtest), for this package's groups.
func onAll(t testing.TB, gs []*Group, fn func(ctx context.Context, g *Group) error) []error {
	t.Helper()
	return ringtest.OnAll(t, gs, fn)
}

func allReduceCopies(t testing.TB, gs []*Group, xs [][]float32, op ReduceOp) [][]float32 {
	t.Helper()
	return ringtest.AllReduceCopies(t, gs, xs, func(ctx context.Context, g *Group, buf []float32) error {
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

func TestGroupAllReduce(t *testing.T) {
	sizes := []int{0, 1, 2, 3, 4, 5, 7, 31, 100, 1000, 4099}
	for n := 1; n <= 5; n++ {
		for _, size := range sizes {
			for _, op := range []ReduceOp{Sum, Mean} {
				t.Run(fmt.Sprintf("n=%d/size=%d/%v", n, size, op), func(t *testing.T) {
					xs := inputs(n, size, 11)
					want := ringOrderSum(xs, op, 64)
					ref, abs := float64Reference(xs, op)
					gs, _ := memGroups(t, n, Faults{}, WithChunkBytes(64))
					for iter := range 2 { // the same group twice: sequence numbers carry on
						bufs := allReduceCopies(t, gs, xs, op)
						expectAll(t, bufs, want, fmt.Sprintf("iter %d", iter))
						checkClose(t, bufs[0], ref, abs, float64(n)*0x1p-23)
					}
				})
			}
		}
	}
}

// TestGroupAllReduceFaults replays the same all-reduce over networks that
// delay, duplicate and reorder messages: every run must give the same bits
// as a perfect network.
func TestGroupAllReduceFaults(t *testing.T) {
	for _, n := range []int{2, 3, 5} {
		for _, size := range []int{3, 257, 5000} {
			xs := inputs(n, size, 5)
			want := ringOrderSum(xs, Sum, 32)
			for seed := uint64(1); seed <= 4; seed++ {
				t.Run(fmt.Sprintf("n=%d/size=%d/seed=%d", n, size, seed), func(t *testing.T) {
					f := Faults{Seed: seed, Duplicate: 0.2, Reorder: 0.2, MaxDelay: 200 * time.Microsecond}
					gs, nw := memGroups(t, n, f, WithChunkBytes(32))
					for range 3 {
						bufs := make([][]float32, n)
						for r := range n {
							bufs[r] = slices.Clone(xs[r])
						}
						noErrors(t, onAll(t, gs, func(ctx context.Context, g *Group) error {
							return g.AllReduce(ctx, bufs[g.Rank()], Sum)
						}))
						for r := range n {
							if !sameBits(bufs[r], want) {
								t.Fatalf("rank %d differs under faults %+v", r, f)
							}
						}
					}
					st := nw.Stats()
					var dups, ooo uint64
					for _, g := range gs {
						dups += g.Stats().Duplicates
						ooo += g.Stats().OutOfOrder
					}
					if dups > st.Duplicated || st.Sent >= 100 && (st.Duplicated == 0 || st.Reordered == 0 || dups == 0 || ooo == 0) {
						t.Fatalf("faults not exercised: network %+v, groups dropped %d duplicates, held %d", st, dups, ooo)
					}
				})
			}
		}
	}
}

func TestGroupDropIsTimeoutNamingPeer(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		n := 3
		gs, nw := memGroups(t, n, Faults{Seed: seed, Drop: 0.3}, WithChunkBytes(16), WithOpTimeout(300*time.Millisecond),
			WithPeerNames([]string{"algo-1 at mem:0", "algo-2 at mem:1", "algo-3 at mem:2"}))
		xs := inputs(n, 200, 1)
		errs := onAll(t, gs, func(ctx context.Context, g *Group) error {
			return g.AllReduce(ctx, xs[g.Rank()], Sum)
		})
		if nw.Stats().Dropped == 0 {
			t.Fatal("nothing dropped")
		}
		failed := 0
		for r, err := range errs {
			if err == nil {
				continue
			}
			failed++
			var pe *PeerError
			if !errors.As(err, &pe) {
				t.Fatalf("rank %d: %T %v is not a PeerError", r, err, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, "all-reduce #1") || !strings.Contains(msg, fmt.Sprintf("rank %d (algo-%d at mem:%d)", pe.Rank, pe.Rank+1, pe.Rank)) {
				t.Fatalf("rank %d: error does not name the op and the peer: %v", r, err)
			}
			var rf *RemoteFailure
			if !errors.Is(err, context.DeadlineExceeded) && !errors.As(err, &rf) {
				t.Fatalf("rank %d: want a timeout or a relayed failure, got %v", r, err)
			}
			// The group stays failed.
			if err2 := gs[r].Barrier(context.Background()); err2 == nil || !strings.Contains(err2.Error(), "earlier failure") {
				t.Fatalf("rank %d: collective after failure: %v", r, err2)
			}
		}
		if failed == 0 {
			t.Fatal("no rank noticed the dropped messages")
		}
	}
}

// TestGroupKillMidAllReduce crashes rank 2 of 5 in the middle of an
// all-reduce: its neighbours see the reset, the others hear about it round
// the ring, and every survivor names rank 2.
func TestGroupKillMidAllReduce(t *testing.T) {
	n, victim := 5, 2
	nw := NewMemNetwork(n, Faults{})
	gs := make([]*Group, n)
	var sends atomic.Int64
	for r := range n {
		tr := nw.Transport(r)
		if r == victim {
			tr = &killAfter{Transport: tr, after: 7, n: &sends, kill: func() { nw.Kill(victim) }}
		}
		gs[r], _ = NewGroup(tr, r, n, WithChunkBytes(64), WithOpTimeout(20*time.Second))
		defer gs[r].Close()
	}
	xs := inputs(n, 4000, 3)
	start := time.Now()
	errs := onAll(t, gs, func(ctx context.Context, g *Group) error {
		return g.AllReduce(ctx, xs[g.Rank()], Sum)
	})
	for r, err := range errs {
		if r == victim {
			continue
		}
		var pe *PeerError
		if !errors.As(err, &pe) || pe.Rank != victim {
			t.Fatalf("rank %d: want an error naming rank %d, got %v", r, victim, err)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("rank %d timed out instead of hearing about the crash: %v", r, err)
		}
		t.Logf("rank %d: %v", r, err)
	}
	t.Logf("all survivors failed after %v", time.Since(start))
}

type killAfter struct {
	Transport
	after int64
	n     *atomic.Int64
	kill  func()
}

func (k *killAfter) Send(ctx context.Context, to int, m Message) error {
	if k.n.Add(1) == k.after {
		k.kill()
	}
	return k.Transport.Send(ctx, to, m)
}

func TestGroupBroadcastBarrierFloat64(t *testing.T) {
	for n := 1; n <= 5; n++ {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			gs, _ := memGroups(t, n, Faults{Seed: 9, Reorder: 0.1, Duplicate: 0.1}, WithChunkBytes(100))
			for _, size := range []int{0, 1, 99, 100, 101, 3000} {
				for root := range n {
					bufs := make([][]byte, n)
					for r := range n {
						bufs[r] = make([]byte, size)
						for i := range bufs[r] {
							bufs[r][i] = byte(r*31 + i)
						}
					}
					want := slices.Clone(bufs[root])
					noErrors(t, onAll(t, gs, func(ctx context.Context, g *Group) error {
						return g.Broadcast(ctx, bufs[g.Rank()], root)
					}))
					for r := range n {
						if !slices.Equal(bufs[r], want) {
							t.Fatalf("size %d root %d: rank %d got other bytes", size, root, r)
						}
					}
				}
			}
			// Metric state: totals and counts summed exactly.
			vals := make([][]float64, n)
			for r := range n {
				vals[r] = []float64{float64(r) + 0.5, 10, 1e15 * float64(r)}
			}
			noErrors(t, onAll(t, gs, func(ctx context.Context, g *Group) error {
				return g.AllReduceFloat64(ctx, vals[g.Rank()])
			}))
			want := []float64{float64(n*(n-1))/2 + 0.5*float64(n), 10 * float64(n), 1e15 * float64(n*(n-1)/2)}
			for r := range n {
				if !slices.Equal(vals[r], want) {
					t.Fatalf("rank %d: %v, want %v", r, vals[r], want)
				}
			}
			// Barrier: nobody leaves before the late rank arrives.
			var entered atomic.Bool
			late := n - 1
			errs := onAll(t, gs, func(ctx context.Context, g *Group) error {
				if g.Rank() == late {
					time.Sleep(50 * time.Millisecond)
					entered.Store(true)
				}
				if err := g.Barrier(ctx); err != nil {
					return err
				}
				if !entered.Load() {
					return fmt.Errorf("rank %d left the barrier before rank %d entered", g.Rank(), late)
				}
				return nil
			})
			noErrors(t, errs)
		})
	}
}

func TestGroupFP16(t *testing.T) {
	for n := 2; n <= 4; n++ {
		xs := inputs(n, 1001, 4)
		ref, abs := float64Reference(xs, Mean)
		var first []float32
		for run := range 2 {
			gs, _ := memGroups(t, n, Faults{Seed: uint64(run), Reorder: 0.3}, WithCompression(FP16), WithChunkBytes(50))
			bufs := make([][]float32, n)
			for r := range n {
				bufs[r] = slices.Clone(xs[r])
			}
			noErrors(t, onAll(t, gs, func(ctx context.Context, g *Group) error {
				return g.AllReduce(ctx, bufs[g.Rank()], Mean)
			}))
			for r := 1; r < n; r++ {
				if !sameBits(bufs[r], bufs[0]) {
					t.Fatalf("n=%d: rank %d differs from rank 0 with fp16", n, r)
				}
			}
			// Each hop rounds to 11 significant bits.
			checkClose(t, bufs[0], ref, abs, float64(n+1)*0x1p-11)
			if run == 0 {
				first = bufs[0]
			} else if !sameBits(first, bufs[0]) {
				t.Fatalf("n=%d: fp16 results differ between runs", n)
			}
		}
	}
}

func TestGroupMismatchedLengths(t *testing.T) {
	gs, _ := memGroups(t, 3, Faults{}, WithOpTimeout(5*time.Second), WithLogf(t.Logf))
	errs := onAll(t, gs, func(ctx context.Context, g *Group) error {
		return g.AllReduce(ctx, make([]float32, 10+g.Rank()), Sum)
	})
	for r, err := range errs {
		var mm *MismatchError
		if !errors.As(err, &mm) || !strings.Contains(err.Error(), "every rank must pass buffers of the same length") {
			t.Fatalf("rank %d: want a length mismatch, got %v", r, err)
		}
	}
}

func TestGroupSingleRankNeedsNoNetwork(t *testing.T) {
	g, err := NewGroup(nil, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	buf := []float32{1, 2, 3}
	if err := g.AllReduce(ctx, buf, Mean); err != nil || !slices.Equal(buf, []float32{1, 2, 3}) {
		t.Fatal(err, buf)
	}
	f := []float64{4}
	if err := g.AllReduceFloat64(ctx, f); err != nil || f[0] != 4 {
		t.Fatal(err, f)
	}
	if err := g.Broadcast(ctx, []byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	if err := g.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(g.Close(), g.Close()); err != nil {
		t.Fatal(err)
	}
	if err := g.Barrier(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestGroupCancelledContext(t *testing.T) {
	gs, _ := memGroups(t, 2, Faults{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := gs[0].AllReduce(ctx, []float32{1}, Sum)
	var pe *PeerError
	if !errors.As(err, &pe) || !errors.Is(err, context.Canceled) || pe.Rank != 1 {
		t.Fatalf("got %v", err)
	}
}

// freezeAfter makes a rank go silent as a stopped process would: after
// `after` sends, everything it sends vanishes and it receives nothing,
// while its connections stay up (no reset for anyone to notice).
type freezeAfter struct {
	Transport
	after  int64
	sends  atomic.Int64
	frozen atomic.Bool
}

func (f *freezeAfter) Send(ctx context.Context, to int, m Message) error {
	if m.Kind != KindWaiting && f.sends.Add(1) > f.after || f.frozen.Load() {
		f.frozen.Store(true)
		return nil
	}
	return f.Transport.Send(ctx, to, m)
}

func (f *freezeAfter) Recv(ctx context.Context, from int) (Message, error) {
	if f.frozen.Load() {
		<-ctx.Done()
		return Message{}, ctx.Err()
	}
	return f.Transport.Recv(ctx, from)
}

// TestGroupSilentPeerNamedByAll: one rank goes silent (stopped mid
// all-reduce, or never calls it) and nothing resets a connection, so
// every rank times out. Without the suspect relay each survivor would name
// the predecessor it waited on; with it, every survivor names the silent
// rank, whichever rank's timer fires first.
func TestGroupSilentPeerNamedByAll(t *testing.T) {
	for _, tc := range []struct {
		name          string
		n, silent     int
		freezeAfter   int64 // data messages it sends first; -1: it never enters the collective
		staggerLaunch bool  // ranks enter up to 300 ms apart, so their timers fire apart
	}{
		{"stopped mid-op n=3", 3, 1, 5, false},
		{"stopped mid-op n=5", 5, 2, 9, true},
		{"never entered n=4", 4, 0, -1, false},
		{"never entered n=5 staggered", 5, 3, -1, true},
		// 4000 floats, 3 ranks, 64-byte chunks: 84 chunks per step. Rank 1
		// stops after its first all-gather step (3 steps of 84): rank 0
		// then has all of all-reduce #1 and waits in #2 on rank 2, which
		// is still in #1 waiting on rank 1, one collective behind.
		{"stopped, successor one op behind", 3, 1, 3 * 84, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			names := make([]string, tc.n)
			for r := range names {
				names[r] = fmt.Sprintf("algo-%d at mem:%d", r+1, r)
			}
			nw := NewMemNetwork(tc.n, Faults{})
			gs := make([]*Group, tc.n)
			for r := range tc.n {
				var tr Transport = nw.Transport(r)
				if r == tc.silent && tc.freezeAfter >= 0 {
					tr = &freezeAfter{Transport: tr, after: tc.freezeAfter}
				}
				gs[r], _ = NewGroup(tr, r, tc.n, WithChunkBytes(64), WithOpTimeout(2*time.Second), WithPeerNames(names))
				defer gs[r].Close()
			}
			xs := inputs(tc.n, 4000, 8)
			errs := onAll(t, gs, func(ctx context.Context, g *Group) error {
				if g.Rank() == tc.silent && tc.freezeAfter < 0 {
					return nil // busy elsewhere: never calls the collective
				}
				if tc.staggerLaunch {
					time.Sleep(time.Duration(g.Rank()) * 75 * time.Millisecond)
				}
				for range 2 {
					if err := g.AllReduce(ctx, slices.Clone(xs[g.Rank()]), Sum); err != nil {
						return err
					}
				}
				return errors.New("no failure")
			})
			want := fmt.Sprintf("rank %d (%s)", tc.silent, names[tc.silent])
			for r, err := range errs {
				if r == tc.silent {
					continue
				}
				var pe *PeerError
				if !errors.As(err, &pe) || pe.Rank != tc.silent || !strings.Contains(err.Error(), want) {
					t.Errorf("rank %d: want an error naming %s, got %v", r, want, err)
					continue
				}
				t.Logf("rank %d: %v", r, err)
			}
		})
	}
}

// pausedReceiver is a rank whose process is paused (CPU starved, a VM's
// steal) for pause at its calls-th receive, past its op timeout: it reads
// nothing meanwhile, and what its predecessor sends waits in its queue.
type pausedReceiver struct {
	Transport
	calls int64
	pause time.Duration
	n     atomic.Int64
}

func (p *pausedReceiver) Recv(ctx context.Context, from int) (Message, error) {
	if p.n.Add(1) == p.calls {
		time.Sleep(p.pause)
		if ctx.Err() != nil { // a receive's select may take the timeout over a queued message
			return Message{}, ctx.Err()
		}
	}
	return p.Transport.Recv(ctx, from)
}

// TestGroupPausedRankBlamesTheSilentOne: a rank paused past its op timeout
// reads what is queued before it judges: its predecessor, alive and
// waiting on the silent rank, had told it so. It named its predecessor,
// silent only for the length of its own pause (a flake audit).
func TestGroupPausedRankBlamesTheSilentOne(t *testing.T) {
	const n, silent, paused = 3, 2, 1
	names := []string{"algo-1 at mem:0", "algo-2 at mem:1", "algo-3 at mem:2"}
	nw := NewMemNetwork(n, Faults{})
	gs := make([]*Group, n)
	for r := range n {
		var tr Transport = nw.Transport(r)
		switch r {
		case silent:
			tr = &freezeAfter{Transport: tr, after: 5}
		case paused:
			tr = &pausedReceiver{Transport: tr, calls: 3, pause: 2600 * time.Millisecond}
		}
		gs[r], _ = NewGroup(tr, r, n, WithChunkBytes(64), WithOpTimeout(2*time.Second), WithPeerNames(names))
		defer gs[r].Close()
	}
	xs := inputs(n, 4000, 8)
	errs := onAll(t, gs, func(ctx context.Context, g *Group) error {
		if err := g.AllReduce(ctx, slices.Clone(xs[g.Rank()]), Sum); err != nil {
			return err
		}
		return errors.New("no failure")
	})
	want := fmt.Sprintf("rank %d (%s)", silent, names[silent])
	for _, r := range []int{0, paused} {
		var pe *PeerError
		if err := errs[r]; !errors.As(err, &pe) || pe.Rank != silent || !strings.Contains(err.Error(), want) {
			t.Errorf("rank %d: want an error naming %s, got %v", r, want, err)
		}
	}
}

// lateWriter is a transport whose writer lags: it hands each message to the
// in-memory network only after a delay, reading a Borrowed payload then,
// as a socket writer that is behind would. It implements Flusher.
type lateWriter struct {
	Transport
	q       chan lateItem
	pending sync.WaitGroup
}

type lateItem struct {
	to int
	m  Message
}

func newLateWriter(tr Transport, delay time.Duration) *lateWriter {
	w := &lateWriter{Transport: tr, q: make(chan lateItem, 1<<12)}
	go func() {
		for it := range w.q {
			time.Sleep(delay)
			w.Transport.Send(context.Background(), it.to, it.m) // copies a Borrowed payload now
			w.pending.Done()
		}
	}()
	return w
}

func (w *lateWriter) Send(ctx context.Context, to int, m Message) error {
	w.pending.Add(1)
	w.q <- lateItem{to, m}
	return nil
}

func (w *lateWriter) Flush(ctx context.Context, to int) error {
	done := make(chan struct{})
	go func() { w.pending.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestGroupFlushesBorrowedPayloads: chunks go out as views of the caller's
// buffer, so an op must not return while its transport may still read
// them. Each rank refills its buffer the moment AllReduce returns; a
// writer lagging behind would then send the new values.
func TestGroupFlushesBorrowedPayloads(t *testing.T) {
	const n, size = 3, 3 * 16 << 10 // one 64 KiB chunk per segment: sent as a view
	nw := NewMemNetwork(n, Faults{})
	gs := make([]*Group, n)
	for r := range n {
		delay := time.Duration(0)
		if r == 0 {
			delay = 10 * time.Millisecond // rank 0's writer lags the ring
		}
		g, err := NewGroup(newLateWriter(nw.Transport(r), delay), r, n)
		if err != nil {
			t.Fatal(err)
		}
		gs[r] = g
		defer g.Close()
	}
	bufs := make([][]float32, n)
	for r := range n {
		bufs[r] = make([]float32, size)
	}
	for round := range 4 {
		xs := inputs(n, size, uint64(round))
		want := ringOrderSum(xs, Sum, 0)
		noErrors(t, onAll(t, gs, func(ctx context.Context, g *Group) error {
			copy(bufs[g.Rank()], xs[g.Rank()])
			err := g.AllReduce(ctx, bufs[g.Rank()], Sum)
			if err == nil && g.Rank() == 0 {
				clear(bufs[0]) // at once, as a training step reuses its gradient buffer
			}
			return err
		}))
		expectAll(t, bufs[1:], want, fmt.Sprintf("round %d (ranks from 1)", round))
	}
}
