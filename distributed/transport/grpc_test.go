package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sagefit/sagefit/distributed"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// loopbackConfigs gives rank r the address 127.0.0.(r+1) on a port the
// kernel picked, with its listener already bound (no port races). Linux
// routes all of 127.0.0.0/8 to loopback.
func loopbackConfigs(t testing.TB, n int, job string) []Config {
	t.Helper()
	hosts := make([]string, n)
	addrs := map[string]string{}
	lis := make([]net.Listener, n)
	for r := range n {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.%d:0", r+1))
		if err != nil {
			t.Skipf("loopback address 127.0.0.%d unusable here: %v", r+1, err)
		}
		lis[r] = l
		hosts[r] = fmt.Sprintf("algo-%d", r+1)
		addrs[hosts[r]] = l.Addr().String()
	}
	cfgs := make([]Config, n)
	for r := range n {
		cfgs[r] = Config{JobName: job, Hosts: hosts, Self: hosts[r], Addrs: addrs, Fingerprint: "3f2a9c1b77d0e4aa",
			Listener: lis[r], ConnectTimeout: 30 * time.Second, OpTimeout: 20 * time.Second, Logf: t.Logf}
	}
	return cfgs
}

// joinAll joins every config concurrently.
func joinAll(t testing.TB, cfgs []Config) ([]*distributed.Group, []error) {
	t.Helper()
	gs, _, errs := joinAllTransports(t, cfgs)
	return gs, errs
}

// joinAllTransports is joinAll that also returns each rank's transport.
func joinAllTransports(t testing.TB, cfgs []Config) ([]*distributed.Group, []*grpcTransport, []error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	gs := make([]*distributed.Group, len(cfgs))
	trs := make([]*grpcTransport, len(cfgs))
	errs := make([]error, len(cfgs))
	var wg sync.WaitGroup
	for r := range cfgs {
		wg.Go(func() { gs[r], trs[r], errs[r] = join(ctx, cfgs[r]) })
	}
	wg.Wait()
	return gs, trs, errs
}

// joinLoopback joins n ranks on loopback; closing them, and checking that
// no goroutine is left, is the test's cleanup.
func joinLoopback(t *testing.T, n int, job string) ([]*distributed.Group, []*grpcTransport) {
	t.Helper()
	before := runtime.NumGoroutine()
	gs, trs, errs := joinAllTransports(t, loopbackConfigs(t, n, job))
	noErrors(t, errs)
	t.Cleanup(func() {
		closeAll(t, gs)
		expectNoLeak(t, before)
	})
	return gs, trs
}

func closeAll(t testing.TB, gs []*distributed.Group) {
	for _, g := range gs {
		if g != nil {
			if err := errors.Join(g.Close(), g.Close()); err != nil {
				t.Errorf("close: %v", err)
			}
		}
	}
}

// expectNoLeak waits (bounded) for the goroutine count to fall back to
// what it was before the test, and dumps the stacks if it does not.
func expectNoLeak(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			var b strings.Builder
			pprof.Lookup("goroutine").WriteTo(&b, 1)
			t.Fatalf("%d goroutines left, %d before:\n%s", runtime.NumGoroutine(), before, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGRPCGroup runs every collective over real gRPC on loopback: chunks on
// the data lane, in small chunks (copied, many per segment) and large ones
// (sent as views of the buffer), and on the gRPC streams themselves.
func TestGRPCGroup(t *testing.T) {
	variants := []struct {
		name   string
		chunk  int
		noLane bool
	}{
		{"lane, 4 KiB chunks", 4096, false},
		{"lane, 1 MiB chunks", 0, false},
		{"gRPC streams, 1 MiB chunks", 0, true},
	}
	for _, v := range variants {
		for _, n := range []int{2, 3} {
			t.Run(fmt.Sprintf("%s/n=%d", v.name, n), func(t *testing.T) { testGRPCGroup(t, n, v.chunk, v.noLane) })
		}
	}
}

func testGRPCGroup(t *testing.T, n, chunk int, noLane bool) {
	before := runtime.NumGoroutine()
	cfgs := loopbackConfigs(t, n, "job-a")
	for r := range cfgs {
		cfgs[r].ChunkBytes = chunk
		cfgs[r].tune.noLane = noLane
	}
	gs, errs := joinAll(t, cfgs)
	noErrors(t, errs)
	for r, g := range gs {
		if g.Rank() != r || g.World() != n {
			t.Fatalf("rank %d: Rank()=%d World()=%d", r, g.Rank(), g.World())
		}
	}
	for _, size := range []int{0, 1, n - 1, 7, 1000, 12345, 300000} {
		xs := inputs(n, size, 21)
		want := ringOrderSum(xs, distributed.Mean, chunk)
		expectAll(t, allReduceCopies(t, gs, xs, distributed.Mean), want, fmt.Sprintf("size %d", size))
	}
	// Back to back on the same buffers, each refilled the moment the
	// last op returned: a transport still reading a view of the
	// buffer after that would send the new values.
	bufs := make([][]float32, n)
	for r := range n {
		bufs[r] = make([]float32, 300000)
	}
	for round := range 4 {
		xs := inputs(n, len(bufs[0]), uint64(100+round))
		want := ringOrderSum(xs, distributed.Sum, chunk)
		noErrors(t, onAll(t, gs, func(ctx context.Context, g *distributed.Group) error {
			copy(bufs[g.Rank()], xs[g.Rank()])
			return g.AllReduce(ctx, bufs[g.Rank()], distributed.Sum)
		}))
		expectAll(t, bufs, want, fmt.Sprintf("round %d", round))
	}
	weights := make([][]byte, n)
	for r := range n {
		weights[r] = make([]byte, 100000)
	}
	for i := range weights[0] {
		weights[0][i] = byte(i * 13)
	}
	noErrors(t, onAll(t, gs, func(ctx context.Context, g *distributed.Group) error {
		return g.Broadcast(ctx, weights[g.Rank()], 0)
	}))
	for r := range n {
		if !slices.Equal(weights[r], weights[0]) {
			t.Fatalf("rank %d: broadcast bytes differ", r)
		}
	}
	metrics := make([][]float64, n)
	for r := range n {
		metrics[r] = []float64{float64(r), 1}
	}
	noErrors(t, onAll(t, gs, func(ctx context.Context, g *distributed.Group) error {
		if err := g.Barrier(ctx); err != nil {
			return err
		}
		return g.AllReduceFloat64(ctx, metrics[g.Rank()])
	}))
	if want := []float64{float64(n * (n - 1) / 2), float64(n)}; !slices.Equal(metrics[n-1], want) {
		t.Fatalf("metrics %v, want %v", metrics[n-1], want)
	}
	closeAll(t, gs)
	expectNoLeak(t, before)
}

// TestGRPCLatePeer starts the last host 2 s after the others, with nothing
// listening on its address until then: the others keep retrying.
func TestGRPCLatePeer(t *testing.T) {
	before := runtime.NumGoroutine()
	cfgs := loopbackConfigs(t, 3, "job-late")
	addr := cfgs[2].Listener.Addr().String()
	cfgs[2].Listener.Close()
	_, held := heldSocket(t, addr) // refused until rank 2 listens, and no one else's
	cfgs[2].Listener = nil
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	gs := make([]*distributed.Group, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for r := range 3 {
		wg.Go(func() {
			if r == 2 {
				time.Sleep(2 * time.Second)
				if cfgs[2].Addrs[cfgs[2].Self] != addr {
					panic("address changed")
				}
				if cfgs[2].Listener, errs[2] = listenHeld(held); errs[2] != nil {
					return
				}
			}
			gs[r], errs[r] = Join(ctx, cfgs[r])
		})
	}
	wg.Wait()
	noErrors(t, errs)
	noErrors(t, onAll(t, gs, func(ctx context.Context, g *distributed.Group) error {
		return g.AllReduce(ctx, []float32{1, 2, 3, 4}, distributed.Sum)
	}))
	closeAll(t, gs)
	expectNoLeak(t, before)
}

// TestGRPCHostThatNeverStartsIsNamed: the last of 3 hosts never starts.
// Each other host ends at the connect timeout naming it, whether it found
// that itself or was told by the host that did (that relay named only the
// teller, and "this host" read as the reader).
func TestGRPCHostThatNeverStartsIsNamed(t *testing.T) {
	before := runtime.NumGoroutine()
	cfgs := loopbackConfigs(t, 3, "job-absent")
	cfgs[2].Listener.Close()
	// Rank 0 gives up first and tells rank 1, which would wait longer.
	cfgs[0].ConnectTimeout, cfgs[1].ConnectTimeout = 2*time.Second, 30*time.Second
	_, errs := joinAll(t, cfgs[:2])
	for r, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "rank 2 (algo-3") {
			t.Errorf("rank %d: %v; want rank 2 (algo-3) named", r, err)
		}
	}
	if !strings.Contains(fmt.Sprint(errs[1]), "host algo-1 gave up joining: rank 2 (algo-3") {
		t.Errorf("rank 1: %v; want rank 0's reason, passed on", errs[1])
	}
	expectNoLeak(t, before)
}

// TestGRPCHostStoppedWhileJoiningIsNamed: a host stopped while it waits
// for a late one (SIGTERM: its context cancelled with that cause) tells the
// others it was stopped; they read "gave up joining: rank 2: joining was
// cancelled", naming the host still to come, not the one stopped.
func TestGRPCHostStoppedWhileJoiningIsNamed(t *testing.T) {
	before := runtime.NumGoroutine()
	cfgs := loopbackConfigs(t, 3, "job-stopped")
	cfgs[2].Listener.Close() // late: never comes
	ctx, cancel := context.WithCancelCause(context.Background())
	errs := make([]error, 2)
	var wg sync.WaitGroup
	wg.Go(func() { _, errs[1] = Join(ctx, cfgs[1]) })
	wg.Go(func() { _, errs[0] = Join(context.Background(), cfgs[0]) })
	time.Sleep(time.Second) // both waiting for rank 2
	cancel(errors.New("stopped by SIGTERM"))
	wg.Wait()
	if !strings.Contains(fmt.Sprint(errs[0]), "host algo-2 left while joining: stopped by SIGTERM") {
		t.Errorf("rank 0: %v; want rank 1's stop named", errs[0])
	}
	expectNoLeak(t, before)
}

// TestGRPCFingerprintMismatch: the last host loads another model. Its
// neighbours see the mismatch in their handshakes; with 5 hosts, ranks 1
// and 2 have no link to it and learn the reason only as it is relayed; all
// end with the mismatch sentence, never a bare "connection lost".
func TestGRPCFingerprintMismatch(t *testing.T) {
	for _, n := range []int{2, 3, 5} {
		before := runtime.NumGoroutine()
		cfgs := loopbackConfigs(t, n, "job-fp")
		cfgs[n-1].Fingerprint = "9c1b44e0aa0d7f31"
		gs, errs := joinAll(t, cfgs)
		closeAll(t, gs)
		for r, err := range errs {
			var mm *distributed.MismatchError
			if err == nil || !errors.As(err, &mm) {
				t.Fatalf("n=%d rank %d: want a fingerprint mismatch, got %v", n, r, err)
			}
			msg := err.Error()
			for _, want := range []string{"model fingerprint", "3f2a9c1b…", "9c1b44e0…", fmt.Sprintf("algo-%d", n),
				"every host must load the same training SavedModel"} {
				if !strings.Contains(msg, want) {
					t.Fatalf("n=%d rank %d: %q does not mention %q", n, r, msg, want)
				}
			}
			t.Logf("rank %d: %v", r, err)
		}
		expectNoLeak(t, before)
	}
}

func TestGRPCHostListMismatch(t *testing.T) {
	cfgs := loopbackConfigs(t, 2, "job-hosts")
	cfgs[1].Hosts = []string{"algo-1", "algo-2", "algo-3"}
	cfgs[1].Addrs = maps(cfgs[1].Addrs, "algo-3", "127.0.0.1:1")
	gs, errs := joinAll(t, cfgs)
	closeAll(t, gs)
	for r, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "every host must get the same host list") {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
}

func maps(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for a, b := range m {
		out[a] = b
	}
	return out
}

// TestGRPCRefusesStrangers: a connection from an address that is not one of
// the job's hosts, or from a host address but without the job's identity,
// is refused; the real peer still gets in afterwards.
func TestGRPCRefusesStrangers(t *testing.T) {
	before := runtime.NumGoroutine()
	cfgs := loopbackConfigs(t, 2, "job-b")
	target := cfgs[0].Addrs["algo-1"]

	probe := func(from string, h hello) error {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		conn, err := grpc.NewClient("passthrough:///"+target,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(frameCodec{})))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stream, err := conn.NewStream(ctx, &ringServiceDesc.Streams[0], linkMethod, grpc.WaitForReady(true))
		if err != nil {
			return err
		}
		if err := stream.SendMsg(h.message(0)); err != nil && err != io.EOF { // EOF: the status comes from RecvMsg
			return err
		}
		var ack distributed.Message
		return stream.RecvMsg(&ack)
	}

	// Serve rank 0 alone first: Join blocks until rank 1 arrives.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var g0 *distributed.Group
	var err0 error
	done := make(chan struct{})
	go func() { g0, err0 = Join(ctx, cfgs[0]); close(done) }()

	stranger := hello{Proto: protocolVersion, Job: "job-b", Hosts: cfgs[0].Hosts, Rank: 1, Host: "algo-2", Fingerprint: cfgs[0].Fingerprint}
	if err := probe("127.0.0.9", stranger); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "not an address of any host") {
		t.Fatalf("connection from 127.0.0.9: want PermissionDenied, got %v", err)
	}
	other := stranger
	other.Job = "job-other"
	if err := probe("127.0.0.2", other); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `job "job-other"`) {
		t.Fatalf("connection from another job: want PermissionDenied, got %v", err)
	}

	g1, err1 := Join(ctx, cfgs[1])
	<-done
	noErrors(t, []error{err0, err1})
	gs := []*distributed.Group{g0, g1}
	noErrors(t, onAll(t, gs, func(ctx context.Context, g *distributed.Group) error { return g.Barrier(ctx) }))
	closeAll(t, gs)
	expectNoLeak(t, before)
}

// TestLaneLateReceiver: a rank that starts a collective seconds after its
// predecessor (a checkpoint, an evaluation) leaves the predecessor's lane
// writes blocked on a full window; the link must wait, not fail, up to the
// op timeout.
func TestLaneLateReceiver(t *testing.T) {
	gs, _ := joinLoopback(t, 2, "job-late-op")
	xs := inputs(2, 12<<20, 5) // 48 MiB: far more than the queues and socket buffers hold
	want := ringOrderSum(xs, distributed.Sum, 0)
	noErrors(t, onAll(t, gs, func(ctx context.Context, g *distributed.Group) error {
		if g.Rank() == 1 {
			time.Sleep(7 * time.Second)
		}
		return g.AllReduce(ctx, xs[g.Rank()], distributed.Sum)
	}))
	expectAll(t, xs, want, "late receiver")
}

// TestLaneRefusesStrangers: the data lane's port takes only a connection
// from a host of the job that presents the token its handshake gave out;
// anything else is closed and the job goes on.
func TestLaneRefusesStrangers(t *testing.T) {
	gs, trs := joinLoopback(t, 2, "job-lane")
	laneAddr := trs[0].laneLis.Addr().String()
	refused := func(from string, hello []byte) {
		t.Helper()
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
		conn, err := d.Dial("tcp", laneAddr)
		if err != nil {
			t.Fatalf("dial the lane port from %s: %v", from, err)
		}
		defer conn.Close()
		conn.Write(hello)
		conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("lane connection from %s with %q: want it closed, got %v", from, hello, err)
		}
	}
	token := append([]byte(laneMagic), make([]byte, laneTokenBytes)...)
	refused("127.0.0.9", token)                            // not a host of the job
	refused("127.0.0.2", token)                            // a host of the job, a token nobody gave out
	refused("127.0.0.2", []byte("GET / HTTP/1.1\r\n\r\n")) // not a lane at all
	xs := inputs(2, 100000, 3)
	want := ringOrderSum(xs, distributed.Sum, 0)
	noErrors(t, onAll(t, gs, func(ctx context.Context, g *distributed.Group) error {
		return g.AllReduce(ctx, xs[g.Rank()], distributed.Sum)
	}))
	expectAll(t, xs, want, "after the probes")
}

// TestGRPCPeerClosedMidway: after a peer leaves, the survivor's next
// collective fails at once with an error naming the peer's rank and address.
func TestGRPCPeerClosedMidway(t *testing.T) {
	before := runtime.NumGoroutine()
	cfgs := loopbackConfigs(t, 3, "job-c")
	for r := range cfgs {
		cfgs[r].OpTimeout = 3 * time.Second
	}
	gs, errs := joinAll(t, cfgs)
	noErrors(t, errs)
	gs[1].Close()
	errs = onAll(t, []*distributed.Group{gs[0], gs[2]}, func(ctx context.Context, g *distributed.Group) error {
		return g.AllReduce(ctx, make([]float32, 1000), distributed.Sum)
	})
	for i, r := range []int{0, 2} {
		err := errs[i]
		var pe *distributed.PeerError
		if !errors.As(err, &pe) || pe.Rank != 1 || !strings.Contains(err.Error(), "algo-2 at "+cfgs[1].Addrs["algo-2"]) {
			t.Fatalf("rank %d: want an error naming rank 1 and its address, got %v", r, err)
		}
		t.Logf("rank %d: %v", r, err)
	}
	closeAll(t, gs)
	expectNoLeak(t, before)
}

func TestJoinSingleHost(t *testing.T) {
	g, err := Join(context.Background(), Config{JobName: "solo", Hosts: []string{"algo-1"}, Self: "algo-1"})
	if err != nil {
		t.Fatal(err)
	}
	buf := []float32{3}
	if err := g.AllReduce(context.Background(), buf, distributed.Mean); err != nil || buf[0] != 3 || g.World() != 1 {
		t.Fatal(err, buf)
	}
	g.Close()
}

func TestJoinConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Hosts: []string{"a"}, Self: "a"}, "JobName is empty"},
		{Config{JobName: "j", Self: "a"}, "Hosts is empty"},
		{Config{JobName: "j", Hosts: []string{"a", "b"}, Self: "c"}, `this host "c" is not in the host list [a b]`},
		{Config{JobName: "j", Hosts: []string{"a", "a"}, Self: "a"}, "repeated"},
		{Config{JobName: "j", Hosts: []string{"a", "b"}, Self: "a", Addrs: map[string]string{"z": "1.2.3.4:1"}}, `"z", which is not in the host list`},
	} {
		_, err := Join(context.Background(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestParseHostAddrs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want map[string]string
		err  string
	}{
		{"", map[string]string{}, ""},
		{"algo-1=127.0.0.1:7001,algo-2=127.0.0.2:7001", map[string]string{"algo-1": "127.0.0.1:7001", "algo-2": "127.0.0.2:7001"}, ""},
		{" algo-1 = localhost:7001 , ", map[string]string{"algo-1": "localhost:7001"}, ""},
		{"algo-1=[::1]:7001", map[string]string{"algo-1": "[::1]:7001"}, ""},
		{"algo-1", nil, "is not host=address"},
		{"algo-1=127.0.0.1", nil, "is not host:port"},
		{"a=1.1.1.1:1,a=1.1.1.1:2", nil, "given twice"},
	} {
		got, err := ParseHostAddrs(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: got %v, want error %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || len(got) != len(tc.want) {
			t.Errorf("%q: got %v %v", tc.in, got, err)
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("%q: %s=%q, want %q", tc.in, k, got[k], v)
			}
		}
	}
}

// TestGRPCJoinWaitsForRelayedReason: a neighbour's stream breaks during
// rendezvous and only afterwards does its reason arrive (as a farewell, the
// way a host that could not finish its handshake delivers it). Join must
// report the reason, not the bare connection loss it saw first.
func TestGRPCJoinWaitsForRelayedReason(t *testing.T) {
	before := runtime.NumGoroutine()
	cfgs := loopbackConfigs(t, 2, "job-relay")
	cfgs[0].Listener.Close() // rank 0 is played by hand below
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var err1 error
	done := make(chan struct{})
	go func() {
		var g *distributed.Group
		g, err1 = Join(ctx, cfgs[1])
		if g != nil {
			g.Close()
		}
		close(done)
	}()

	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}}
	conn, err := grpc.NewClient("passthrough:///"+cfgs[1].Addrs["algo-2"],
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, a string) (net.Conn, error) { return d.DialContext(ctx, "tcp", a) }),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(frameCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	id := hello{Proto: protocolVersion, Job: "job-relay", Hosts: cfgs[0].Hosts, Rank: 0, Host: "algo-1", Fingerprint: cfgs[0].Fingerprint}
	sctx, scancel := context.WithCancel(ctx)
	stream, err := conn.NewStream(sctx, &ringServiceDesc.Streams[0], linkMethod, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	var ack distributed.Message
	if err := stream.SendMsg(id.message(1)); err != nil {
		t.Fatal(err)
	}
	if err := stream.RecvMsg(&ack); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	scancel() // the link breaks: rank 1 sees a connection loss first
	time.Sleep(500 * time.Millisecond)
	const text = "host algo-3 has model fingerprint 9c1b44e0… but algo-1 has 3f2a9c1b…; every host must load the same training SavedModel"
	id.Leave = &leaveNote{Origin: 0, Mismatch: true, Text: text}
	if err := sayFarewell(ctx, conn, id, 1); err != nil {
		t.Fatalf("farewell: %v", err)
	}
	<-done
	var mm *distributed.MismatchError
	if !errors.As(err1, &mm) || !strings.Contains(err1.Error(), text) {
		t.Fatalf("rank 1: want the relayed mismatch, got %v", err1)
	}
	t.Logf("rank 1: %v", err1)
	conn.Close()
	expectNoLeak(t, before)
}

// TestGRPCFailureTravelsUpstream: rank 0 finds its successor (rank 1) gone
// when it sends, fails and closes. Rank 2, whose successor is rank 0, must
// not blame rank 0 for going away: rank 0 told it, against the data
// direction, which rank was lost.
func TestGRPCFailureTravelsUpstream(t *testing.T) {
	before := runtime.NumGoroutine()
	cfgs := loopbackConfigs(t, 3, "job-up")
	gs, trs, errs := joinAllTransports(t, cfgs)
	noErrors(t, errs)
	defer closeAll(t, gs)
	tr := func(r int) *grpcTransport { return trs[r] }
	outDead := func(r int) bool { return tr(r).data.out.Load().isDead() }
	waitFor := func(what string, cond func() bool) {
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("never: %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	tr(1).srv.Stop() // rank 1 stops serving: the link 0 -> 1 breaks, 1 -> 2 stays up
	waitFor("rank 0 sees its link to rank 1 break", func() bool { return outDead(0) })

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err0 := gs[0].AllReduce(ctx, make([]float32, 100), distributed.Sum)
	var pe *distributed.PeerError
	if !errors.As(err0, &pe) || pe.Rank != 1 {
		t.Fatalf("rank 0: want an error naming rank 1, got %v", err0)
	}
	gs[0].Close()
	waitFor("rank 2 hears from rank 0", func() bool { return outDead(2) })

	err2 := gs[2].AllReduce(ctx, make([]float32, 100), distributed.Sum)
	want := "rank 1 (algo-2 at " + cfgs[1].Addrs["algo-2"] + ")"
	if !errors.As(err2, &pe) || pe.Rank != 1 || !strings.Contains(err2.Error(), want) {
		t.Fatalf("rank 2: want an error naming %s, got %v", want, err2)
	}
	t.Logf("rank 0: %v", err0)
	t.Logf("rank 2: %v", err2)
	closeAll(t, gs)
	expectNoLeak(t, before)
}
