package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sagefit/sagefit/distributed"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// closeTimes closes the groups of ranks concurrently and reports, per rank,
// when its Close returned.
func closeTimes(gs []*distributed.Group, ranks ...int) (wait func() map[int]time.Time) {
	var mu sync.Mutex
	done := map[int]time.Time{}
	var wg sync.WaitGroup
	for _, r := range ranks {
		wg.Go(func() {
			gs[r].Close()
			mu.Lock()
			done[r] = time.Now()
			mu.Unlock()
		})
	}
	return func() map[int]time.Time { wg.Wait(); return done }
}

// TestFinalBarrier: with FinalWait set, a rank other than 0 that closes
// stays until rank 0 has closed (the job's model is written by then); rank
// 0 gone ends the wait at once; FinalWait bounds it; without it Close
// returns at once.
func TestFinalBarrier(t *testing.T) {
	// Margins for a loaded 2-core CI machine: no path below waits on a
	// timer but FinalWait's, and each took well under a second here.
	const hold = 3 * time.Second
	for _, c := range []struct {
		name      string
		finalWait time.Duration
		rank0     string // "holds": closes hold after the others; "gone": closes first
		// the others' Close returns within [min, max] of their start
		min, max time.Duration
	}{
		{"ranks wait for rank 0", 30 * time.Second, "holds", hold, hold + 3*time.Second},
		{"rank 0 gone", 30 * time.Second, "gone", 0, 2500 * time.Millisecond},
		{"bounded by FinalWait", 500 * time.Millisecond, "holds", 500 * time.Millisecond, hold},
		{"no final barrier", 0, "holds", 0, 2500 * time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			cfgs := loopbackConfigs(t, 3, "job-final")
			for r := range cfgs {
				cfgs[r].FinalWait = c.finalWait
			}
			gs, errs := joinAll(t, cfgs)
			noErrors(t, errs)
			noErrors(t, onAll(t, gs, func(ctx context.Context, g *distributed.Group) error {
				return g.AllReduce(ctx, make([]float32, 1000), distributed.Sum)
			}))
			if c.rank0 == "gone" {
				gs[0].Close()
			}
			start := time.Now()
			others := closeTimes(gs, 1, 2)
			if c.rank0 == "holds" {
				time.Sleep(hold) // rank 0 writing the model
				gs[0].Close()
			}
			for r, at := range others() {
				if d := at.Sub(start); d < c.min || d > c.max {
					t.Errorf("rank %d closed after %v, want between %v and %v", r, d.Round(time.Millisecond), c.min, c.max)
				}
				// Waited out, the wait fails the host: rank 0 may never write the model.
				if err := gs[r].Close(); (err != nil) != (c.finalWait < hold && c.finalWait > 0) {
					t.Errorf("rank %d: Close = %v", r, err)
				}
			}
			if c.finalWait >= hold || c.finalWait == 0 {
				closeAll(t, gs)
			}
			expectNoLeak(t, before)
		})
	}
}

// TestFinalBarrierKeepsFailuresFast: a rank that fails mid-job and closes
// leaves the ring before it waits, so the others' collective fails at once
// (not after the op timeout), rank 0 closes, and that ends the wait.
func TestFinalBarrierKeepsFailuresFast(t *testing.T) {
	before := runtime.NumGoroutine()
	cfgs := loopbackConfigs(t, 3, "job-final-fail")
	for r := range cfgs {
		cfgs[r].FinalWait = 30 * time.Second
		cfgs[r].OpTimeout = 20 * time.Second
	}
	gs, errs := joinAll(t, cfgs)
	noErrors(t, errs)
	start := time.Now()
	failed := closeTimes(gs, 2) // rank 2 fails on its own and closes
	errs = onAll(t, gs[:2], func(ctx context.Context, g *distributed.Group) error {
		err := g.AllReduce(ctx, make([]float32, 1000), distributed.Sum)
		g.Close() // as the runtime does when a collective fails
		return err
	})
	for r, err := range errs {
		var pe *distributed.PeerError
		if !errors.As(err, &pe) {
			t.Errorf("rank %d: want a PeerError after rank 2 left, got %v", r, err)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the others failed after %v; the op timeout is %v", d, cfgs[0].OpTimeout)
	}
	if d := failed()[2].Sub(start); d > 10*time.Second {
		t.Errorf("rank 2 waited %v for rank 0, which had failed", d)
	}
	closeAll(t, gs)
	expectNoLeak(t, before)
}

// TestFinalBarrierRank0Lost: a rank 0 lost while a host waits for it at
// the final barrier (killed writing the model) fails that host's Close,
// which ended as if the job had succeeded (exit 0, no failure file); a
// rank 0 that finishes does not; and a host told the job failed on rank
// 0's loss (SkipFinalWait) does not wait at all.
func TestFinalBarrierRank0Lost(t *testing.T) {
	before := runtime.NumGoroutine()
	cfgs := loopbackConfigs(t, 2, "job-final-lost")
	for r := range cfgs {
		cfgs[r].FinalWait = 30 * time.Second
	}
	gs, trs, errs := joinAllTransports(t, cfgs)
	noErrors(t, errs)
	held := make(chan struct{}, 1)
	lingerHeld = func() { held <- struct{}{} }
	defer func() { lingerHeld = nil }()
	closed := make(chan error, 1)
	go func() { closed <- gs[1].Close() }()
	select {
	case <-held:
	case <-time.After(20 * time.Second):
		t.Fatal("rank 1 never waited for rank 0")
	}
	trs[0].accepted.closeAll() // rank 0's connections gone, as when its process dies
	select {
	case err := <-closed:
		if err == nil || !strings.Contains(err.Error(), "rank 0 (algo-1 at "+cfgs[1].Addrs["algo-1"]+") was lost before it finished the job's model and outputs") {
			t.Errorf("rank 1's Close = %v, want rank 0 named lost", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("rank 1 still waits 20 s after rank 0 was lost")
	}
	gs[0].Close()
	expectNoLeak(t, before)

	// Rank 0 fails after training (writing the model): the host waiting
	// for it fails with the reason.
	cfgs = loopbackConfigs(t, 2, "job-final-failed")
	for r := range cfgs {
		cfgs[r].FinalWait = 30 * time.Second
	}
	gs, errs = joinAll(t, cfgs)
	noErrors(t, errs)
	go func() { closed <- gs[1].Close() }()
	<-held
	gs[0].Failed(errors.New("the model cannot be written: disk full"))
	gs[0].Close()
	if err := <-closed; err == nil || err.Error() != "rank 0 (algo-1) failed after training: the model cannot be written: disk full" {
		t.Errorf("rank 1's Close = %v, want rank 0's failure", err)
	}

	// Skipped: rank 0 holds (it would be waited for up to FinalWait).
	cfgs = loopbackConfigs(t, 2, "job-final-skip")
	for r := range cfgs {
		cfgs[r].FinalWait = 30 * time.Second
	}
	gs, errs = joinAll(t, cfgs)
	noErrors(t, errs)
	start := time.Now()
	gs[1].SkipFinalWait()
	if err := gs[1].Close(); err != nil || time.Since(start) > 10*time.Second {
		t.Errorf("rank 1 told not to wait: Close = %v after %v", err, time.Since(start))
	}
	gs[0].Close()
}

// TestLingerRefusedBeforeTaken: what a host's final wait makes of rank 0's
// answer. A rank 0 that ends the wait before it took it (its shutdown began
// while the hello was on its way: no headers) is done, not lost; one that
// took it and then broke the stream is lost; one that refuses it with its
// failure failed. grpc-go's Header gives no error for a stream ended
// without headers, so the first read as the second: a fresh clone's CI
// failed on it (TestFinalBarrierKeepsFailuresFast, rank 0 "lost ...:
// shutting down").
func TestLingerRefusedBeforeTaken(t *testing.T) {
	for _, c := range []struct {
		name       string
		sendHeader bool
		answer     error
		want       string // awaitRank0's error; "" for none
	}{
		{"refused before taken", false, status.Error(codes.Unavailable, "shutting down"), ""},
		{"lost after taken", true, status.Error(codes.Unavailable, "connection reset"), "rank 0 (algo-1 at ADDR) was lost before it finished the job's model and outputs: connection reset"},
		{"refused with its failure", false, status.Error(codes.Aborted, "the model cannot be written: disk full"), "rank 0 (algo-1) failed after training: the model cannot be written: disk full"},
	} {
		t.Run(c.name, func(t *testing.T) {
			desc := ringServiceDesc
			desc.HandlerType = (*any)(nil)
			desc.Streams = []grpc.StreamDesc{ringServiceDesc.Streams[0]}
			desc.Streams[0].Handler = func(_ any, stream grpc.ServerStream) error {
				var m distributed.Message
				if err := stream.RecvMsg(&m); err != nil {
					return err
				}
				if c.sendHeader {
					if err := stream.SendHeader(metadata.Pairs(lingerHeader, "held")); err != nil {
						return err
					}
				}
				return c.answer
			}
			srv := grpc.NewServer(grpc.ForceServerCodecV2(frameCodec{}))
			srv.RegisterService(&desc, struct{}{})
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go srv.Serve(lis)
			defer srv.Stop()
			addr := lis.Addr().String()
			host := &grpcTransport{node: node{id: hello{Job: "j", Hosts: []string{"algo-1", "algo-2"}, Rank: 1, Host: "algo-2"},
				rank: 1, world: 2, addrs: []string{addr, "127.0.0.1:1"}, logf: t.Logf, finalWait: 10 * time.Second, peerTimeout: 10 * time.Second}}
			err = host.awaitRank0()
			want := strings.ReplaceAll(c.want, "ADDR", addr)
			if got := fmt.Sprint(err); want == "" && err != nil || want != "" && got != want {
				t.Errorf("awaitRank0 = %v, want %q", err, want)
			}
		})
	}
}
