package main_test

import (
	"bufio"
	"context"
	"crypto/rand"
	byteorder "encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sagefit/sagefit/distributed"
	"github.com/sagefit/sagefit/internal/fixture"
	"github.com/sagefit/sagefit/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
)

// TestStrangersDoNotHarmARunningJob: while a 2-host job trains, strangers
// hit every port its hosts listen on, the gRPC port and each host's data
// lane, from 127.0.0.1 (the address of algo-1, so the job's address check
// lets them through to the next check) and from 127.0.0.77 (no host's
// address): random bytes, an HTTP/2 preface followed by garbage, a gRPC
// message that claims 4 GB, hand-crafted handshakes that are wrong in every
// way the handshake checks (job, host list, protocol, fingerprint, a
// duplicate rank, a host that is already connected, a farewell, no
// handshake at all), streams that never say hello, a few hundred
// connections held open without a word while the job trains, and lane
// connections with guessed tokens followed by a frame that claims 4 GB.
// The job must end as an unprobed run of the same job does: both hosts
// exit 0 with the same history and weights.
//
// Every probe is counted (connections made, connections the host answered
// or closed, gRPC status codes), and the test fails if a kind of probe
// never reached a host while it trained, so it cannot pass by probing
// nothing.
func TestStrangersDoNotHarmARunningJob(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "2000", "--no-fit", "--no-validation")
	meta, err := model.ReadMetadata(filepath.Join(fx, "model"))
	if err != nil {
		t.Fatal(err)
	}
	// batch 8 (4 rows a host a step): 250 steps an epoch, so the job trains
	// for several seconds while the probes run (12 epochs took 2.3 s on a
	// quiet VM, over before a round of probes had ended; 30 took 3.8 s, 13
	// rounds: 60 leave a loaded machine's rounds room too).
	const epochs = 60
	hps := map[string]string{"epochs": fmt.Sprint(epochs), "batch_size": "8", "shuffle": "false"}
	train := filepath.Join(fx, "train")

	began := time.Now()
	quiet := startJob(t, seedModels(fx, 2), train, hps, nil)
	for _, h := range quiet {
		if code, reason := h.wait(t, 120*time.Second); code != 0 {
			t.Fatalf("unprobed %s exited %d: %s\n%s", h.name, code, reason, h.stderr.String())
		}
	}
	t.Logf("unprobed job: %v", time.Since(began).Round(10*time.Millisecond))

	began = time.Now()
	hosts := startJob(t, seedModels(fx, 2), train, hps, nil)
	for _, h := range hosts {
		if !waitForOutput(&h.stderr, "joined job", 90*time.Second) {
			t.Fatalf("%s never joined:\n%s", h.name, h.stderr.String())
		}
	}
	jobDone, trained := make(chan struct{}), make(chan struct{})
	go func() {
		for _, h := range hosts {
			<-h.done
		}
		close(jobDone)
	}()
	p := newProber(meta.Fingerprint, hosts, jobDone, trained)
	for _, h := range hosts {
		p.targets = append(p.targets, strangerTargetOf(t, h))
	}
	for _, tg := range p.targets {
		t.Logf("%s: gRPC %s, data lane %v", tg.name, tg.grpc, tg.lanes)
	}
	// The held connections are let go once both hosts have trained their
	// last epoch, not when they exit: one held through the exit delays it
	// (TestSilentStrangerDoesNotDelayExit).
	t.Cleanup(p.stop)
	var trainedAt time.Time
	go func() {
		defer func() {
			trainedAt = time.Now()
			close(trained)
			p.letGo()
		}()
		last := fmt.Sprintf("Epoch %s/%s ", hps["epochs"], hps["epochs"])
		for _, h := range hosts {
			for !strings.Contains(h.stdout.String(), last) {
				select {
				case <-jobDone:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
	}()
	p.run()
	var exits []time.Duration
	for _, h := range hosts {
		code, reason := h.wait(t, 90*time.Second)
		exits = append(exits, time.Since(began).Round(10*time.Millisecond))
		if code != 0 {
			t.Errorf("probed %s exited %d: %s\n%s", h.name, code, reason, h.stderr.String())
		}
		noTrace(t, h.stderr.String())
	}
	p.stop()
	<-trained
	t.Logf("probed job: trained for %v, hosts exited %v after it started; %d rounds of probes while it trained",
		trainedAt.Sub(began).Round(10*time.Millisecond), exits, p.roundsTraining)
	t.Log("probe (connections made / answered or closed by the host; gRPC codes)\n" + p.report())

	p.check(t)
	for _, h := range hosts {
		for _, want := range []string{"refused connection from 127.0.0.77", "refused data connection from 127.0.0.77",
			"refused data connection from 127.0.0.1"} {
			if !strings.Contains(h.stderr.String(), want) {
				t.Errorf("%s never logged %q: the probes did not reach its checks:\n%s", h.name, want, h.stderr.String())
			}
		}
	}
	if t.Failed() {
		return
	}
	hq, hp := history(t, quiet[0].base), history(t, hosts[0].base)
	if len(hq) == 0 || len(hq["loss"]) != epochs {
		t.Fatalf("unprobed history %v", hq)
	}
	for k, want := range hq {
		if !slices.Equal(hp[k], want) {
			t.Errorf("%s: probed %v, unprobed %v", k, hp[k], want)
		}
	}
	wq, wp := weights(t, quiet[0].base), weights(t, hosts[0].base)
	for i := range wq {
		if !slices.Equal(wp[i], wq[i]) {
			t.Errorf("weight %d differs: probed %v, unprobed %v", i, wp[i], wq[i])
		}
	}
}

// strangerTarget is one host as a stranger sees it: its gRPC address and
// the data lane listeners found under /proc.
type strangerTarget struct {
	name, grpc string
	rank       int
	lanes      []string
}

// strangerTargetOf finds h's gRPC address in the host list startJob gave it
// and its other listening sockets (the data lane's port is the kernel's
// choice) in /proc.
func strangerTargetOf(t *testing.T, h *host) strangerTarget {
	t.Helper()
	tg := strangerTarget{name: h.name}
	for _, kv := range h.cmd.Env {
		list, ok := strings.CutPrefix(kv, "SAGEFIT_HOST_ADDRS=")
		if !ok {
			continue
		}
		for i, item := range strings.Split(list, ",") {
			if name, addr, _ := strings.Cut(item, "="); name == h.name {
				tg.grpc, tg.rank = addr, i
			}
		}
	}
	if tg.grpc == "" {
		t.Fatalf("no address for %s in its environment", h.name)
	}
	listeners := listeningSockets(t, h.cmd.Process.Pid)
	for _, addr := range listeners {
		if addr != tg.grpc {
			tg.lanes = append(tg.lanes, addr)
		}
	}
	if !slices.Contains(listeners, tg.grpc) || len(tg.lanes) == 0 {
		t.Fatalf("%s (pid %d) listens on %v; want its gRPC port %s and a data lane", h.name, h.cmd.Process.Pid, listeners, tg.grpc)
	}
	return tg
}

// listeningSockets lists the IPv4 TCP addresses that pid or any of its
// descendants listen on, from /proc.
func listeningSockets(t *testing.T, pid int) []string {
	t.Helper()
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skipf("no /proc/net/tcp here to find the data lane's port: %v", err)
	}
	pids := map[int]bool{pid: true}
	for grew := true; grew; { // descendants: a host's launcher may start its training process
		grew = false
		dirs, _ := filepath.Glob("/proc/[0-9]*/status")
		for _, status := range dirs {
			b, _ := os.ReadFile(status)
			for line := range strings.SplitSeq(string(b), "\n") {
				if ppid, ok := strings.CutPrefix(line, "PPid:\t"); ok {
					parent, _ := strconv.Atoi(ppid)
					child, _ := strconv.Atoi(filepath.Base(filepath.Dir(status)))
					if pids[parent] && !pids[child] {
						pids[child], grew = true, true
					}
				}
			}
		}
	}
	inodes := map[string]bool{}
	for p := range pids {
		fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", p))
		for _, fd := range fds {
			if l, err := os.Readlink(fd); err == nil && strings.HasPrefix(l, "socket:[") {
				inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
			}
		}
	}
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 || fs[3] != "0A" || !inodes[fs[9]] { // 0A: LISTEN
			continue
		}
		ipHex, portHex, _ := strings.Cut(fs[1], ":")
		ip, err1 := hex.DecodeString(ipHex)
		port, err2 := strconv.ParseUint(portHex, 16, 16)
		if err1 != nil || err2 != nil || len(ip) != 4 {
			continue
		}
		out = append(out, net.JoinHostPort(net.IPv4(ip[3], ip[2], ip[1], ip[0]).String(), fmt.Sprint(port)))
	}
	sort.Strings(out)
	return out
}

// Sources of the probes: one an address of the job's own hosts (algo-1),
// which passes the address check and meets the next, and one no host has.
const (
	insider  = "127.0.0.1"
	outsider = "127.0.0.77"
)

var strangerSources = []string{insider, outsider}

// Bounds: the probes stop when the job ends or after this many rounds.
const (
	strangerRounds      = 20
	strangerHeldGRPC    = 50 // silent connections per gRPC port and source, held while the job trains
	strangerHeldPreface = 5  // connections per gRPC port and source that send the HTTP/2 preface, then nothing
	strangerHeldLane    = 10 // silent connections per data lane and source
	strangerHeldStreams = 4  // gRPC streams per host (from insider) that never send a handshake
)

// prober runs the probes and counts what happened.
type prober struct {
	fingerprint string
	hosts       []string
	targets     []strangerTarget
	jobDone     <-chan struct{}

	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup // every goroutine of the prober
	mu      sync.Mutex
	held    []net.Conn
	letGone bool           // the held connections were closed by letGo
	planned map[string]int // held probe -> connections it tried
	conns   []*grpc.ClientConn

	trained        <-chan struct{}            // closed once every host has trained its last epoch
	roundsTraining int                        // rounds that ended before that
	dials          map[string]int             // probe -> connections made
	answered       map[string]int             // probe -> connections the host answered or closed
	codes          map[string]map[string]int  // gRPC probe -> status code -> count
	order          []string                   // probe names in the order first seen
	expect         map[string]map[string]bool // gRPC probe -> the codes it may end with
}

func newProber(fingerprint string, hosts []*host, jobDone, trained <-chan struct{}) *prober {
	p := &prober{fingerprint: fingerprint, jobDone: jobDone, trained: trained, dials: map[string]int{}, answered: map[string]int{},
		codes: map[string]map[string]int{}, expect: map[string]map[string]bool{}, planned: map[string]int{}}
	for _, h := range hosts {
		p.hosts = append(p.hosts, h.name)
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		select {
		case <-jobDone:
		case <-p.ctx.Done():
		}
		p.cancel()
	}()
	return p
}

func (p *prober) note(name string, dialed, answered bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, seen := p.dials[name]; !seen {
		p.order = append(p.order, name)
		p.dials[name] = 0
	}
	if dialed {
		p.dials[name]++
	}
	if answered {
		p.answered[name]++
	}
}

func (p *prober) noteCode(name, code string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.codes[name] == nil {
		p.codes[name] = map[string]int{}
	}
	p.codes[name][code]++
}

func (p *prober) training() bool {
	select {
	case <-p.trained:
		return false
	default:
		return true
	}
}

// run opens the held connections and streams, then probes round after
// round until the job ends (or strangerRounds). Held connections stay open
// until stop.
func (p *prober) run() {
	for _, tg := range p.targets {
		for _, src := range strangerSources {
			p.hold("gRPC: held silent from "+src, src, tg.grpc, strangerHeldGRPC, nil)
			p.hold("gRPC: held after the HTTP/2 preface from "+src, src, tg.grpc, strangerHeldPreface, h2Preface())
			for _, lane := range tg.lanes {
				p.hold("lane: held silent from "+src, src, lane, strangerHeldLane, nil)
			}
		}
		for range strangerHeldStreams {
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.call("gRPC stream: never says hello from "+insider, insider, tg, nil, 15*time.Second)
			}()
		}
	}
	for round := 0; round < strangerRounds && p.ctx.Err() == nil; round++ {
		p.round(round)
		if p.training() {
			p.roundsTraining++
		}
		select {
		case <-p.ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// letGo closes the held connections.
func (p *prober) letGo() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.letGone = true
	for _, c := range p.held {
		c.Close()
	}
}

// stop ends every probe and closes what is held.
func (p *prober) stop() {
	p.cancel()
	p.letGo()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// hold opens n connections from src to addr, writes first on each, and
// keeps them open (a reader notes when the host closes one) until stop.
func (p *prober) hold(name, src, addr string, n int, first []byte) {
	p.mu.Lock()
	p.planned[name] += n
	p.mu.Unlock()
	for range n {
		conn, err := strangerDial(src, addr)
		p.note(name, err == nil, false)
		if err != nil {
			continue
		}
		if first != nil {
			conn.Write(first)
		}
		p.mu.Lock()
		p.held = append(p.held, conn)
		if p.letGone {
			conn.Close()
		}
		p.mu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			_, err := io.Copy(io.Discard, conn)
			if !errors.Is(err, net.ErrClosed) {
				p.note(name, false, true) // the host closed it (not letGo)
			}
		}()
	}
}

func strangerDial(src, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return d.Dial("tcp", addr)
}

// round runs each short probe once against every port from every source.
func (p *prober) round(round int) {
	for _, tg := range p.targets {
		for _, src := range strangerSources {
			if p.ctx.Err() != nil {
				return
			}
			// The gRPC port, raw.
			p.poke("gRPC: random bytes from "+src, src, tg.grpc, randomBytes(4096), nil)
			garbage := append(h2Preface(), randomBytes(4096)...)
			p.poke("gRPC: HTTP/2 preface then garbage from "+src, src, tg.grpc, garbage, h2Ended)
			huge := append(h2Preface(), 0xff, 0xff, 0xff, 0x0, 0x0, 0x0, 0x0, 0x0, 0x1) // a DATA frame of 16 MiB: more than HTTP/2 allows unasked
			p.poke("gRPC: HTTP/2 frame of 16 MiB from "+src, src, tg.grpc, append(huge, randomBytes(4096)...), h2Ended)
			p.poke("gRPC: message claiming 4 GB from "+src, src, tg.grpc, h2GRPCMessage(0xffffffff, randomBytes(1024)), h2Ended)
			// The gRPC port, through a gRPC client: handshakes.
			for _, hs := range p.hellos(tg, src, round) {
				p.call("gRPC handshake: "+hs.name+" from "+src, src, tg, hs.frame, 5*time.Second)
			}
			// The data lanes.
			for _, lane := range tg.lanes {
				p.poke("lane: random bytes from "+src, src, lane, randomBytes(4096), nil)
				for _, guess := range [][]byte{make([]byte, 16), randomBytes(16)} {
					b := append([]byte("SGFLANE1"), guess...)              // lane.go: laneMagic, then the 16-byte token
					b = byteorder.LittleEndian.AppendUint32(b, 0x4c464753) // laneFrameMagic "SGFL"
					b = byteorder.LittleEndian.AppendUint32(b, 0xffffffff) // a payload of 4 GB
					b = append(b, strangerFrame(distributed.KindAllReduce, 0, 1, nil)...)
					p.poke("lane: guessed token, then a 4 GB frame from "+src, src, lane, append(b, randomBytes(4096)...), nil)
				}
				p.poke("lane: the magic, then a 4 GB frame header as token from "+src, src, lane,
					append([]byte("SGFLANE1"), 0x53, 0x47, 0x46, 0x4c, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0), nil)
			}
		}
	}
}

// poke dials addr from src, writes b and reads what comes back until the
// host closes the connection, done says the reply is complete, or 3 s pass.
func (p *prober) poke(name, src, addr string, b []byte, done func([]byte) bool) {
	conn, err := strangerDial(src, addr)
	p.note(name, err == nil, false)
	if err != nil {
		return
	}
	defer conn.Close()
	stop := context.AfterFunc(p.ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	conn.Write(b) // the host may close before it has read everything
	var got []byte
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				p.note(name, false, true) // closed or reset by the host
			}
			return
		}
		if done != nil && done(got) {
			p.note(name, false, true)
			return
		}
	}
}

// strangerHello is a handshake a stranger sends.
type strangerHello struct {
	name  string
	frame []byte
}

// strangerProto is the transport's protocol version (distributed/transport
// join.go, protocolVersion); the right one makes a handshake that is wrong
// in only one way.
const strangerProto = 4

// hellos are the handshakes a stranger from src sends to tg in a round;
// the status codes the host may end each stream with go to p.expect. From
// the outsider every one is refused by the address check first.
func (p *prober) hellos(tg strangerTarget, src string, round int) []strangerHello {
	prev := (tg.rank + len(p.hosts) - 1) % len(p.hosts)
	right := map[string]any{"proto": strangerProto, "job": "local", "hosts": p.hosts, "rank": prev, "host": p.hosts[prev],
		"fingerprint": p.fingerprint}
	with := func(k string, v any) []byte {
		h := map[string]any{}
		for k, v := range right {
			h[k] = v
		}
		if k != "" {
			h[k] = v
		}
		b, _ := json.Marshal(h)
		return strangerFrame(distributed.KindHello, prev, tg.rank, b)
	}
	self := func() []byte {
		h := map[string]any{}
		for k, v := range right {
			h[k] = v
		}
		h["rank"], h["host"] = tg.rank, tg.name
		b, _ := json.Marshal(h)
		return strangerFrame(distributed.KindHello, tg.rank, tg.rank, b)
	}
	list := []struct {
		name   string
		frame  []byte
		expect []codes.Code // from the insider
	}{
		{"another job", with("job", "another-job"), []codes.Code{codes.PermissionDenied}},
		{"another host list", with("hosts", []string{"algo-1", "algo-2", "algo-3"}), []codes.Code{codes.FailedPrecondition}},
		{"another protocol", with("proto", 99), []codes.Code{codes.FailedPrecondition}},
		{"another fingerprint", with("fingerprint", "0123456789abcdef0123456789abcdef"), []codes.Code{codes.FailedPrecondition}},
		{"duplicate rank (the host's own)", self(), []codes.Code{codes.FailedPrecondition}},
		{"the connected predecessor's, exactly", with("", nil), []codes.Code{codes.AlreadyExists}},
		// A farewell is taken (OK is its receipt) and, once the ring is up, ignored.
		{"a farewell", with("leave", map[string]any{"origin": prev, "mismatch": false, "text": "a stranger says the job is over"}), []codes.Code{codes.OK}},
		{"an abort instead", strangerFrame(distributed.KindAbort, prev, tg.rank, []byte("a stranger says stop")), []codes.Code{codes.PermissionDenied}},
		// grpc-go answers a message its codec refuses itself.
		{"not a frame", randomBytes(100), []codes.Code{codes.Internal, codes.InvalidArgument}},
		// More than a host takes in one message (4 MiB); sent in the first round only.
		{"5 MiB message", randomBytes(5 << 20), []codes.Code{codes.ResourceExhausted}},
	}
	if round > 0 {
		list = list[:len(list)-1]
	}
	var out []strangerHello
	for _, h := range list {
		name := "gRPC handshake: " + h.name + " from " + src
		want := h.expect
		if src == outsider {
			want = []codes.Code{codes.PermissionDenied} // the address check comes first
		}
		p.mu.Lock()
		p.expect[name] = map[string]bool{}
		for _, c := range want {
			p.expect[name][c.String()] = true
		}
		p.mu.Unlock()
		out = append(out, strangerHello{name: h.name, frame: h.frame})
	}
	return out
}

// strangerFrame is a link frame (distributed/transport frame.go): the
// 48-byte little-endian header, then the payload.
func strangerFrame(kind distributed.Kind, from, to int, payload []byte) []byte {
	b := make([]byte, 48, 48+len(payload))
	byteorder.LittleEndian.PutUint32(b[0:], 0x31464753) // "SGF1"
	b[4] = byte(kind)
	b[6] = byte(distributed.EncBytes)
	byteorder.LittleEndian.PutUint32(b[8:], uint32(from))
	byteorder.LittleEndian.PutUint32(b[12:], uint32(to))
	return append(b, payload...)
}

var strangerLink = grpc.StreamDesc{StreamName: "Link", ServerStreams: true, ClientStreams: true}

// strangerCodec sends and receives raw bytes (the host's codec is
// distributed/transport's frame codec; a stranger brings its own).
type strangerCodec struct{}

func (strangerCodec) Name() string { return "sagefit-frame" }

func (strangerCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (strangerCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

// call opens a Link stream to tg from src, sends frame (nil: nothing) and
// notes how the host ends the stream. A reply would mean the host took a
// stranger for its predecessor.
func (p *prober) call(name, src string, tg strangerTarget, frame []byte, limit time.Duration) {
	dialName := "gRPC client connections from " + src
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	cc, err := grpc.NewClient("passthrough:///"+tg.grpc,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, "tcp", addr)
			p.note(dialName, err == nil, false)
			return c, err
		}),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(strangerCodec{})))
	if err != nil {
		p.noteCode(name, "client: "+err.Error())
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, cc)
	p.mu.Unlock()
	defer cc.Close()
	ctx, cancel := context.WithTimeout(p.ctx, limit)
	defer cancel()
	stream, err := cc.NewStream(ctx, &strangerLink, "/sagefit.distributed.v1.Ring/Link")
	p.note(name, err == nil, false) // for a gRPC probe: streams opened
	if err != nil {
		p.noteCode(name, "no stream: "+status.Code(err).String())
		return
	}
	if frame != nil {
		if err := stream.SendMsg(&frame); err != nil && err != io.EOF {
			p.noteCode(name, "send: "+status.Code(err).String())
			return
		}
	}
	var reply []byte
	err = stream.RecvMsg(&reply)
	if ctx.Err() == nil {
		p.note(name, false, true) // the host ended the stream (or replied)
	}
	switch {
	case err == nil:
		p.noteCode(name, fmt.Sprintf("ACCEPTED: the host replied %q", reply))
	case err == io.EOF:
		p.noteCode(name, codes.OK.String())
	case ctx.Err() != nil && p.ctx.Err() != nil:
		p.noteCode(name, "job ended first")
	default:
		p.noteCode(name, status.Code(err).String())
	}
}

// check fails t for a probe that never got through, or a handshake that
// ended in a way it should not have.
func (p *prober) check(t *testing.T) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.roundsTraining < 2 {
		t.Errorf("only %d rounds of probes ran while the job trained; give it more epochs", p.roundsTraining)
	}
	for _, name := range p.order {
		if p.dials[name] == 0 {
			t.Errorf("%s: no connection made", name)
		}
		if n, held := p.planned[name]; held && p.dials[name] != n {
			t.Errorf("%s: %d connections made of %d", name, p.dials[name], n)
		}
		if strings.HasPrefix(name, "gRPC handshake:") || strings.HasPrefix(name, "gRPC stream:") {
			continue
		}
		if !strings.Contains(name, "held") && !strings.Contains(name, "client connections") && p.answered[name] == 0 {
			t.Errorf("%s: the host never answered or closed any of %d connections", name, p.dials[name])
		}
	}
	for name, want := range p.expect {
		got := p.codes[name]
		if len(got) == 0 {
			t.Errorf("%s: never sent", name)
		}
		seen := false
		for code := range got {
			switch {
			case want[code]:
				seen = true
			case code == codes.Unavailable.String() || code == "job ended first" || strings.HasPrefix(code, "no stream:"):
				// the job ended meanwhile
			default:
				hint := ""
				if strings.Contains(name, "exactly") {
					hint = " (if FailedPrecondition: has distributed/transport's protocolVersion changed from strangerProto?)"
				}
				t.Errorf("%s: the host answered %s, want %v%s", name, code, keys(want), hint)
			}
		}
		if !seen {
			t.Errorf("%s: never answered %v while the job ran (got %v)", name, keys(want), got)
		}
	}
	for name, got := range p.codes {
		if !strings.HasPrefix(name, "gRPC stream:") {
			continue
		}
		for code := range got {
			if code != codes.DeadlineExceeded.String() && code != codes.Unavailable.String() && code != "job ended first" {
				t.Errorf("%s: the host answered %s, want DeadlineExceeded (no handshake in time) or Unavailable (it left)", name, code)
			}
		}
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (p *prober) report() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, name := range p.order {
		fmt.Fprintf(&b, "  %-70s %4d / %4d", name, p.dials[name], p.answered[name])
		if c := p.codes[name]; c != nil {
			fmt.Fprintf(&b, "  %v", c)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// HTTP/2 by hand (RFC 9113): the client preface and an empty SETTINGS
// frame, frames, and a gRPC request for the ring's Link method whose
// length prefix claims n bytes.
func h2Preface() []byte {
	return append([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), h2Frame(0x4, 0, 0, nil)...)
}

func h2Frame(typ, flags byte, stream uint32, payload []byte) []byte {
	n := len(payload)
	b := []byte{byte(n >> 16), byte(n >> 8), byte(n), typ, flags}
	b = byteorder.BigEndian.AppendUint32(b, stream)
	return append(b, payload...)
}

func h2GRPCMessage(n uint32, body []byte) []byte {
	var hdrs []byte
	for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/sagefit.distributed.v1.Ring/Link"},
		{":authority", "sagefit"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		// HPACK literal header field without indexing, new name, no Huffman.
		hdrs = append(hdrs, 0, byte(len(kv[0])))
		hdrs = append(hdrs, kv[0]...)
		hdrs = append(hdrs, byte(len(kv[1])))
		hdrs = append(hdrs, kv[1]...)
	}
	b := h2Preface()
	b = append(b, h2Frame(0x1, 0x4, 1, hdrs)...) // HEADERS, END_HEADERS
	msg := byteorder.BigEndian.AppendUint32([]byte{0}, n)
	return append(b, h2Frame(0x0, 0, 1, append(msg, body...))...)
}

// h2Ended: the reply holds a GOAWAY, or ends stream 1 (RST_STREAM, or
// HEADERS with END_STREAM: a gRPC status).
func h2Ended(b []byte) bool {
	for len(b) >= 9 {
		n := int(b[0])<<16 | int(b[1])<<8 | int(b[2])
		typ, flags, stream := b[3], b[4], byteorder.BigEndian.Uint32(b[5:])&0x7fffffff
		if typ == 0x7 || stream == 1 && (typ == 0x3 || typ == 0x1 && flags&0x1 != 0) {
			return true
		}
		if len(b) < 9+n {
			return false
		}
		b = b[9+n:]
	}
	return false
}

// TestSilentStrangerDoesNotDelayExit: a stranger that opens a TCP
// connection to a host's gRPC port and never sends a byte (from an address
// that is no host's) must not keep the host from exiting once training is
// over. Unprobed, hosts exit within a second of their last epoch; a
// failure after the ring is up (a SIGTERM stop, a lost peer) goes through
// the same shutdown before the failure file is written, and SageMaker kills
// a stopped host 120 s after its SIGTERM.
func TestSilentStrangerDoesNotDelayExit(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "2000", "--no-fit", "--no-validation")
	// 30 epochs: the hosts train for seconds while the test finds and
	// dials each one's port (3 were over in about half a second, and a
	// host gone before it was dialled failed the test).
	const epochs = "30"
	hosts := startJob(t, seedModels(fx, 2), filepath.Join(fx, "train"), map[string]string{"epochs": epochs, "batch_size": "8"}, nil)
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for _, h := range hosts {
		if !waitForOutput(&h.stderr, "joined job", 90*time.Second) {
			t.Fatalf("%s never joined:\n%s", h.name, h.stderr.String())
		}
		tg := strangerTargetOf(t, h)
		c, err := strangerDial(outsider, tg.grpc)
		if err != nil {
			t.Fatalf("connect to %s's gRPC port %s: %v", h.name, tg.grpc, err)
		}
		held = append(held, c)
	}
	for _, h := range hosts {
		h.waitFor(t, "Epoch "+epochs+"/"+epochs+" ", 120*time.Second)
	}
	trained := time.Now()
	const grace = 15 * time.Second
	for _, h := range hosts {
		select {
		case <-h.done:
			t.Logf("%s exited %v after training", h.name, time.Since(trained).Round(10*time.Millisecond))
		case <-time.After(time.Until(trained.Add(grace))):
			t.Errorf("%s still running %v after its last epoch, while a stranger (%s, no host of the job) holds a TCP connection "+
				"to its gRPC port without sending a byte; unprobed it exits within a second (grpc-go's Server.GracefulStop and Stop "+
				"wait for every accepted connection to finish the HTTP/2 handshake, up to its ConnectionTimeout, 120 s by default)",
				h.name, grace, outsider)
		}
	}
	for _, c := range held {
		c.Close()
	}
	let := time.Now()
	for _, h := range hosts {
		code, reason := h.wait(t, 30*time.Second)
		if code != 0 {
			t.Errorf("%s exited %d: %s\n%s", h.name, code, reason, h.stderr.String())
		}
		t.Logf("%s exited %v after the stranger let go", h.name, time.Since(let).Round(10*time.Millisecond))
	}
}
