package distributed_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sagefit/sagefit/distributed"
	"github.com/sagefit/sagefit/distributed/transport"
)

// The helper behind `make bench-allreduce` (scripts/bench-allreduce.sh and
// python/sagefit/bench_allreduce.py, which also runs TensorFlow's
// CollectiveAllReduce as the peer): this package's test binary (go test -c
// ./distributed) re-executed as one host of a job, one OS process per rank
// as in a real job, on loopback or inside network namespaces. Each rank
// prints one JSON line per measurement on stdout; the driver takes, per
// sample, the slowest rank and then the median over samples.
//
// It is an external test (package distributed_test) because its "ring"
// mode joins over package transport, which imports this package; the bare
// ring it also runs needs the ring's internals and is handed over by
// export_test.go.
const (
	envBenchMode  = "SAGEFIT_BENCH_HELPER"   // "ring", "bare" or "pump"
	envBenchSelf  = "SAGEFIT_BENCH_SELF"     // this host, one of the names in envHostAddrs
	envBenchPlan  = "SAGEFIT_BENCH_PLAN"     // ring, bare: "bytes:ops:samples,..." (see benchPlan)
	envBenchStart = "SAGEFIT_BENCH_START_NS" // pump: Unix time in ns at which every rank starts sending
	envBenchSecs  = "SAGEFIT_BENCH_SECONDS"  // pump: seconds measured, after 0.3 s of ramp-up
	envBenchSpan  = "SAGEFIT_BENCH_SPAN"     // pump: bytes of the buffer each side cycles through (default 1 MiB)
	// Experiments only (unset: the package defaults, which the report uses).
	envBenchWindow = "SAGEFIT_BENCH_WINDOW" // ring: gRPC stream window in bytes (connection: 4x)
	envBenchChunk  = "SAGEFIT_BENCH_CHUNK"  // ring: ChunkBytes
	envBenchData   = "SAGEFIT_BENCH_DATA"   // ring: "grpc" sends chunks on the gRPC streams, not the data lane
)

// envHostAddrs is the launcher's variable mapping host names to addresses
// ("algo-1=127.0.0.1:7001,..."). runtime/launch owns the name (it defines
// every SAGEFIT_* variable); the bench driver sets it for these helpers.
// Read here by the tests only: the package itself reads no environment.
const envHostAddrs = "SAGEFIT_HOST_ADDRS"

// benchStep is one size of the plan: samples timed runs (after one
// untimed warm-up run) of ops back-to-back all-reduces of bytes each,
// every run starting after a barrier.
type benchStep struct{ bytes, ops, samples int }

func benchPlan(s string) ([]benchStep, error) {
	var plan []benchStep
	for item := range strings.SplitSeq(s, ",") {
		f := strings.Split(strings.TrimSpace(item), ":")
		if len(f) != 3 {
			return nil, fmt.Errorf("%s: %q is not bytes:ops:samples", envBenchPlan, item)
		}
		var st benchStep
		for i, p := range []*int{&st.bytes, &st.ops, &st.samples} {
			v, err := strconv.Atoi(f[i])
			if err != nil || v <= 0 {
				return nil, fmt.Errorf("%s: %q is not bytes:ops:samples", envBenchPlan, item)
			}
			*p = v
		}
		if st.bytes%4 != 0 {
			return nil, fmt.Errorf("%s: %d bytes is not a whole number of float32", envBenchPlan, st.bytes)
		}
		plan = append(plan, st)
	}
	return plan, nil
}

// benchHosts reads SAGEFIT_HOST_ADDRS; hosts are ranked by the order of
// their names (algo-1, algo-2, ...).
func benchHosts() (hosts []string, addrs map[string]string, err error) {
	addrs, err = transport.ParseHostAddrs(os.Getenv(envHostAddrs))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", envHostAddrs, err)
	}
	for h := range addrs {
		hosts = append(hosts, h)
	}
	slices.SortFunc(hosts, func(a, b string) int {
		if len(a) != len(b) {
			return len(a) - len(b)
		}
		return strings.Compare(a, b)
	})
	if len(hosts) < 2 {
		return nil, nil, fmt.Errorf("%s names %d hosts; a benchmark needs 2 or more", envHostAddrs, len(hosts))
	}
	return hosts, addrs, nil
}

// TestBenchAllReduceHelper is one host of `make bench-allreduce`. It runs
// only when re-executed with SAGEFIT_BENCH_HELPER set, and stops by itself
// after 10 minutes so that an orphan cannot linger.
func TestBenchAllReduceHelper(t *testing.T) {
	mode := os.Getenv(envBenchMode)
	if mode == "" {
		t.Skip("helper process for make bench-allreduce; runs only when re-executed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var err error
	switch mode {
	case "ring":
		err = benchRing(ctx)
	case "bare":
		err = benchBareRing(ctx)
	case "pump":
		err = benchPump(ctx)
	default:
		err = fmt.Errorf("%s=%q: want ring, bare or pump", envBenchMode, mode)
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(3)
	}
}

func printJSON(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

// benchRing joins the ring over gRPC and times the plan's all-reduces.
func benchRing(ctx context.Context) error {
	hosts, addrs, err := benchHosts()
	if err != nil {
		return err
	}
	plan, err := benchPlan(os.Getenv(envBenchPlan))
	if err != nil {
		return err
	}
	cfg := transport.Config{JobName: "bench-allreduce", Hosts: hosts, Self: os.Getenv(envBenchSelf),
		Addrs: addrs, Fingerprint: "bench", ConnectTimeout: time.Minute}
	if v := os.Getenv(envBenchWindow); v != "" {
		w, err := strconv.Atoi(v)
		if err != nil || w < 64<<10 || w > 1<<30 {
			return fmt.Errorf("%s=%q: want bytes, 64 KiB to 1 GiB", envBenchWindow, v)
		}
		cfg.StreamWindow = w
	}
	if os.Getenv(envBenchData) == "grpc" {
		cfg.DataOverGRPC = true
	}
	if v := os.Getenv(envBenchChunk); v != "" {
		if cfg.ChunkBytes, err = strconv.Atoi(v); err != nil {
			return fmt.Errorf("%s=%q: want bytes", envBenchChunk, v)
		}
	}
	g, err := transport.Join(ctx, cfg)
	if err != nil {
		return err
	}
	defer g.Close()
	n := g.World()
	for _, st := range plan {
		perOp, err := timeStep(st, func() error { return g.Barrier(ctx) },
			func(buf []float32) error { return g.AllReduce(ctx, buf, distributed.Sum) })
		if err != nil {
			return err
		}
		impl := "sagefit"
		if cfg.DataOverGRPC {
			impl = "sagefit-grpc"
		}
		printJSON(map[string]any{"impl": impl, "rank": g.Rank(), "n": n, "bytes": st.bytes,
			"ops": st.ops, "sample_s": perOp})
	}
	return g.Barrier(ctx)
}

// benchBareRing times the bare ring (distributed.BareAllReduce, see
// bench_bare_test.go): sagefit's pieces, chunks and order of sums on plain
// TCP with nothing but reads, sums and writes.
func benchBareRing(ctx context.Context) error {
	plan, err := benchPlan(os.Getenv(envBenchPlan))
	if err != nil {
		return err
	}
	rank, n, in, out, err := benchRingConns(ctx)
	if err != nil {
		return err
	}
	defer in.Close()
	defer out.Close()
	barrier := func() error { return distributed.BareBarrier(n, in, out) }
	scratch := make([]byte, distributed.DefaultChunkBytes)
	for _, st := range plan {
		perOp, err := timeStep(st, barrier, func(buf []float32) error {
			return distributed.BareAllReduce(rank, n, distributed.DefaultChunkBytes, buf, in, out, scratch)
		})
		if err != nil {
			return err
		}
		printJSON(map[string]any{"impl": "bare-ring", "rank": rank, "n": n, "bytes": st.bytes,
			"ops": st.ops, "sample_s": perOp})
	}
	return barrier()
}

// timeStep times one size of the plan: a warm-up run, then st.samples
// runs of st.ops back-to-back all-reduces of one buffer, each run after a
// barrier. It returns the seconds per op of each timed run.
func timeStep(st benchStep, barrier func() error, allReduce func([]float32) error) ([]float64, error) {
	buf := make([]float32, st.bytes/4)
	for i := range buf {
		buf[i] = 1 // sums grow and may saturate to +Inf: no slower on x86 (only subnormals are)
	}
	perOp := make([]float64, 0, st.samples)
	for s := -1; s < st.samples; s++ { // s = -1: warm-up
		if err := barrier(); err != nil {
			return nil, err
		}
		start := time.Now()
		for range st.ops {
			if err := allReduce(buf); err != nil {
				return nil, err
			}
		}
		if s >= 0 {
			perOp = append(perOp, time.Since(start).Seconds()/float64(st.ops))
		}
	}
	return perOp, nil
}

// benchPump is the raw TCP bound: every rank streams 1 MiB writes to the
// next rank over one plain TCP connection while receiving from the
// previous one (the traffic pattern of a ring all-reduce), and reports the
// rate it received at once all links are busy. The writes come from, and
// the reads go to, successive 1 MiB blocks of a buffer of SAGEFIT_BENCH_SPAN
// bytes: 1 MiB (the default) stays in cache, as iperf3's buffer does; the
// size of an all-reduce is what moving that buffer costs the same kernel
// (iperf3 caps its buffer at 1 MiB, so it cannot measure that).
func benchPump(ctx context.Context) error {
	rank, n, in, out, err := benchRingConns(ctx)
	if err != nil {
		return err
	}
	defer in.Close()
	defer out.Close()
	startNS, err := strconv.ParseInt(os.Getenv(envBenchStart), 10, 64)
	if err != nil {
		return fmt.Errorf("%s: %v", envBenchStart, err)
	}
	secs, err := strconv.ParseFloat(os.Getenv(envBenchSecs), 64)
	if err != nil || secs <= 0 {
		return fmt.Errorf("%s=%q: want seconds", envBenchSecs, os.Getenv(envBenchSecs))
	}
	span := 1 << 20
	if v := os.Getenv(envBenchSpan); v != "" {
		if span, err = strconv.Atoi(v); err != nil || span < 1<<20 || span%(1<<20) != 0 {
			return fmt.Errorf("%s=%q: want a whole number of MiB", envBenchSpan, v)
		}
	}

	start := time.Unix(0, startNS)
	t1 := start.Add(300 * time.Millisecond)
	t2 := t1.Add(time.Duration(secs * float64(time.Second)))
	stop := t2.Add(300 * time.Millisecond)
	time.Sleep(time.Until(start))
	sendErr := make(chan error, 1)
	go func() {
		buf := make([]byte, span)
		for off := 0; time.Now().Before(stop); off = (off + 1<<20) % span {
			if _, err := out.Write(buf[off : off+1<<20]); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- out.(*net.TCPConn).CloseWrite()
	}()
	buf := make([]byte, span)
	var total, b1 int64
	var at1, at2 time.Time
	for {
		off := int(total % int64(span))
		k, err := in.Read(buf[off:min(off+1<<20, span)])
		total += int64(k)
		now := time.Now()
		if at1.IsZero() && !now.Before(t1) {
			b1, at1 = total, now
		}
		if at2.IsZero() && !now.Before(t2) {
			printJSON(map[string]any{"impl": "tcp", "rank": rank, "n": n, "span": span,
				"MBps": float64(total-b1) / now.Sub(at1).Seconds() / 1e6})
			at2 = now
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if at2.IsZero() {
		return errors.New("the previous rank stopped sending before the measurement ended")
	}
	return <-sendErr
}

// benchRingConns connects this helper to its ring neighbours with one
// plain TCP connection each way: in from the previous rank, out to the next.
func benchRingConns(ctx context.Context) (rank, n int, in, out net.Conn, err error) {
	hosts, addrs, err := benchHosts()
	if err != nil {
		return 0, 0, nil, nil, err
	}
	rank = slices.Index(hosts, os.Getenv(envBenchSelf))
	if rank < 0 {
		return 0, 0, nil, nil, fmt.Errorf("%s=%q is not in %v", envBenchSelf, os.Getenv(envBenchSelf), hosts)
	}
	n = len(hosts)
	lis, err := net.Listen("tcp", addrs[hosts[rank]])
	if err != nil {
		return 0, 0, nil, nil, err
	}
	defer lis.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	for try := 0; ; try++ { // the next rank may not listen yet
		var d net.Dialer
		dctx, dcancel := context.WithTimeout(ctx, time.Second)
		out, err = d.DialContext(dctx, "tcp", addrs[hosts[(rank+1)%n]])
		dcancel()
		if err == nil {
			break
		}
		if try == 100 {
			return 0, 0, nil, nil, fmt.Errorf("connect to %s: %v", hosts[(rank+1)%n], err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case in = <-accepted:
		if in == nil {
			err = errors.New("accept failed")
		}
	case <-time.After(30 * time.Second):
		err = errors.New("the previous rank never connected")
	}
	if err != nil {
		out.Close()
		return 0, 0, nil, nil, err
	}
	return rank, n, in, out, nil
}

func TestBenchPlan(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []benchStep
		err  bool
	}{
		{in: "4096:64:9", want: []benchStep{{4096, 64, 9}}},
		{in: "4096:64:9, 268435456:1:3", want: []benchStep{{4096, 64, 9}, {268435456, 1, 3}}},
		{in: "", err: true},
		{in: "4096:64", err: true},
		{in: "4097:1:1", err: true}, // not whole float32s
		{in: "4096:0:9", err: true},
		{in: "4096:x:9", err: true},
	} {
		got, err := benchPlan(tc.in)
		if (err != nil) != tc.err || !slices.Equal(got, tc.want) {
			t.Errorf("benchPlan(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}
