package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sagefit/sagefit/distributed"
	"github.com/sagefit/sagefit/internal/hostlist"
)

// DefaultPort is where a host listens when Config.Addrs does not say.
const DefaultPort = 7001

// DefaultConnectTimeout bounds Join: SageMaker starts hosts within minutes
// of each other, and their names may take a while to resolve.
const DefaultConnectTimeout = 15 * time.Minute

// protocolVersion changes whenever the wire format or the order of a
// collective's messages does (4: all-reduce in pieces); hosts running
// different sagefit builds then fail the handshake with a clear error.
const protocolVersion = 4

// Config tells Join who is in the job and how to reach them.
type Config struct {
	JobName string   // SageMaker training job name; peers of another job are refused
	Hosts   []string // all hosts in rank order (resourceconfig.json "hosts")
	Self    string   // this host (resourceconfig.json "current_host"); rank = index in Hosts
	// Addrs maps a host to "host:port" or "ip:port". Hosts missing here are
	// reached at host:Port, resolved by name (retried until ConnectTimeout).
	Addrs map[string]string
	Port  int // default DefaultPort
	// Fingerprint identifies the model (variables, shapes, order, dtypes);
	// every host must have the same one.
	Fingerprint string

	ConnectTimeout time.Duration           // default DefaultConnectTimeout
	OpTimeout      time.Duration           // per collective; default distributed.DefaultOpTimeout
	ChunkBytes     int                     // default distributed.DefaultChunkBytes
	Compression    distributed.Compression // default distributed.NoCompression
	// DataOverGRPC sends the collectives' chunks on the gRPC streams
	// instead of a data lane (lane.go) beside each: for networks that
	// pass only the gRPC port. About 2.5x slower on loopback.
	DataOverGRPC bool
	// StreamWindow, for experiments, fixes the gRPC flow-control window of
	// each link's stream in bytes (64 KiB to 1 GiB; the connection's is 4
	// times as large, at most 1 GiB). 0, the default, takes what
	// BenchmarkGRPCTuning chose: 1 MiB, or ChunkBytes if larger.
	StreamWindow int

	// FinalWait, when positive, is the final barrier: Close on every rank
	// but 0, once it has left the ring, waits until rank 0 closes its
	// transport too (or is gone), at most FinalWait. Rank 0 writes the
	// job's model and outputs after the last collective, and a host that
	// exits before that can cost the job its model (SageMaker's local mode
	// stops every host's container when the first one exits). 0: Close
	// returns at once. See final.go.
	FinalWait time.Duration

	// Listener, if set, is served instead of listening on Self's address
	// (tests, or a port bound earlier). Join takes ownership.
	Listener net.Listener
	// Logf receives rendezvous progress and failures, from several
	// goroutines at once (Decline tells each host from its own); default:
	// discard.
	Logf func(format string, args ...any)

	tune grpcTuning // benchmarks only
}

// ParseHostAddrs parses a list of host addresses, "host=addr,host=addr"
// (for local multi-host runs where host names do not resolve, such as
// several "hosts" on one machine: "algo-1=127.0.0.1:7001,algo-2=127.0.0.2:7001"),
// into Config.Addrs. Spaces around items are ignored; an empty string
// gives an empty map. Where the list comes from (the launcher's
// environment) is the caller's business; errors do not name it.
func ParseHostAddrs(s string) (map[string]string, error) {
	out := map[string]string{}
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		host, addr, ok := strings.Cut(item, "=")
		host, addr = strings.TrimSpace(host), strings.TrimSpace(addr)
		if !ok || host == "" || addr == "" {
			return nil, fmt.Errorf("%q is not host=address", item)
		}
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			return nil, fmt.Errorf("address %q of host %s is not host:port", addr, host)
		}
		if _, dup := out[host]; dup {
			return nil, fmt.Errorf("host %s given twice", host)
		}
		out[host] = addr
	}
	return out, nil
}

func (c *Config) validate() (rank int, err error) {
	if c.JobName == "" {
		return 0, errors.New("distributed: Config.JobName is empty")
	}
	if len(c.Hosts) == 0 {
		return 0, errors.New("distributed: Config.Hosts is empty")
	}
	// Sentences name the host list abbreviated (hostlist.Short), the cause
	// first; join logs the full list.
	seen := map[string]bool{}
	for i, h := range c.Hosts {
		if h == "" {
			return 0, fmt.Errorf("distributed: host %d of the host list %s has an empty name", i+1, hostlist.Short(c.Hosts))
		}
		if seen[h] {
			return 0, fmt.Errorf("distributed: host %q is repeated in the host list %s", h, hostlist.Short(c.Hosts))
		}
		seen[h] = true
	}
	rank = slices.Index(c.Hosts, c.Self)
	if rank < 0 {
		return 0, fmt.Errorf("distributed: this host %q is not in the host list %s", c.Self, hostlist.Short(c.Hosts))
	}
	for h := range c.Addrs {
		if !seen[h] {
			return 0, fmt.Errorf("distributed: address given for %q, which is not in the host list %s", h, hostlist.Short(c.Hosts))
		}
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.OpTimeout <= 0 {
		c.OpTimeout = distributed.DefaultOpTimeout
	}
	if c.ChunkBytes <= 0 {
		c.ChunkBytes = distributed.DefaultChunkBytes
	}
	if c.StreamWindow != 0 && (c.StreamWindow < 64<<10 || c.StreamWindow > 1<<30) {
		return 0, fmt.Errorf("distributed: Config.StreamWindow %d is outside 64 KiB to 1 GiB", c.StreamWindow)
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return rank, nil
}

func (c *Config) addr(host string) string {
	if a, ok := c.Addrs[host]; ok {
		return a
	}
	return net.JoinHostPort(host, strconv.Itoa(c.Port))
}

// Join meets the other hosts and returns the group once every host is
// connected: it listens on this host's address, connects to the next host in
// the ring (retrying until ConnectTimeout), accepts the previous host after
// checking its address and identity, then runs a barrier so that no host
// starts a collective before the whole ring is up. A host list of one gives a
// Group that needs no network.
//
// The handshake compares job name, host list, rank and model fingerprint. A
// different job is refused as a stranger; any other difference fails Join on
// both hosts with one sentence naming both sides.
func Join(ctx context.Context, cfg Config) (*distributed.Group, error) {
	g, _, err := join(ctx, cfg)
	return g, err
}

// join is Join that also returns the transport (nil for a single host),
// for tests.
func join(ctx context.Context, cfg Config) (*distributed.Group, *grpcTransport, error) {
	rank, err := cfg.validate()
	if err != nil {
		if cfg.Logf != nil && len(cfg.Hosts) > hostlist.Whole {
			cfg.Logf("distributed: the host list in full: %s", strings.Join(cfg.Hosts, " "))
		}
		return nil, nil, err
	}
	n := len(cfg.Hosts)
	if n > 1 {
		// Sentences name long host lists abbreviated: the full list is here.
		cfg.Logf("distributed: %s joins job %s as rank %d of %d; hosts in rank order: %s",
			cfg.Self, cfg.JobName, rank, n, strings.Join(cfg.Hosts, " "))
	}
	addrs := make([]string, n)
	names := make([]string, n)
	for i, h := range cfg.Hosts {
		addrs[i] = cfg.addr(h)
		names[i] = h + " at " + addrs[i]
	}
	gopts := []distributed.Option{distributed.WithChunkBytes(cfg.ChunkBytes), distributed.WithCompression(cfg.Compression),
		distributed.WithOpTimeout(cfg.OpTimeout), distributed.WithPeerNames(names), distributed.WithLogf(cfg.Logf)}
	if n == 1 {
		if cfg.Listener != nil {
			cfg.Listener.Close()
		}
		g, err := distributed.NewGroup(nil, 0, 1, gopts...)
		return g, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	t, err := newTransport(cfg, rank, addrs, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("distributed: join %s as %s: %w", cfg.JobName, names[rank], err)
	}
	// fail leaves with a reason both neighbours receive, so a host that
	// cannot join takes the others down with the same sentence instead of
	// leaving them waiting out the connect timeout.
	leaveWith := func(err error) {
		var mm *distributed.MismatchError
		var rf *distributed.RemoteFailure
		switch {
		case errors.As(err, &rf):
			t.leave(rf)
		case errors.As(err, &mm):
			t.leave(mm)
		case ctx.Err() != nil && context.Cause(ctx) != ctx.Err():
			// Stopped (SIGTERM), not failed: that is what the others need,
			// not the handshake it cut ("joining was cancelled").
			t.leave(fmt.Errorf("host %s left while joining: %v", cfg.Self, context.Cause(ctx)))
		default:
			t.leave(fmt.Errorf("host %s gave up joining: %v", cfg.Self, err))
		}
	}
	fail := func(peer int, err error) (*distributed.Group, *grpcTransport, error) {
		var rf *distributed.RemoteFailure
		if errors.As(err, &rf) && rf.ReportedBy >= 0 && rf.ReportedBy < n {
			peer = rf.ReportedBy
		}
		// The peer named in what is passed on too: a host that never
		// connected was left out of the others' sentences.
		err = fmt.Errorf("rank %d (%s): %w", peer, names[peer], err)
		leaveWith(err)
		var mm *distributed.MismatchError
		if errors.As(err, &mm) {
			return nil, nil, &joinMismatch{job: cfg.JobName, text: mm.Text, cause: err}
		}
		return nil, nil, fmt.Errorf("distributed: join %s: %w", cfg.JobName, err)
	}

	outDone := make(chan error, 1)
	go func() { outDone <- t.connectNext(ctx) }()
	inDone := t.data.inReady
	for outDone != nil || inDone != nil {
		select {
		case err := <-outDone:
			if err != nil {
				return fail(t.next, err)
			}
			outDone = nil
		case <-inDone:
			inDone = nil
		case <-t.rv.fatal:
			peer, err := t.rv.fatalReason()
			if !isReason(err) {
				// A bare connection loss: a neighbour that gives up joining
				// sends its reason, possibly a moment after its stream
				// broke, or from the other side of the ring. Wait for it
				// (our own handshake may also find the mismatch).
				timer := time.NewTimer(relayWait)
			wait:
				for !isReason(err) {
					select {
					case <-t.rv.fatal:
						peer, err = t.rv.fatalReason()
					case e := <-outDone:
						outDone = nil
						if isReason(e) {
							peer, err = t.next, e
						}
					case <-timer.C:
						break wait
					case <-ctx.Done():
						break wait
					}
				}
				timer.Stop()
			}
			// Let a handshake in flight finish so the next host gets our
			// reason over the new link rather than a cut stream.
			t.rv.stopConnecting()
			if outDone != nil {
				timer := time.AfterFunc(leaveGrace, cancel)
				<-outDone
				timer.Stop()
			}
			return fail(peer, err)
		case <-ctx.Done():
			if outDone != nil {
				if err := <-outDone; err != nil {
					return fail(t.next, err)
				}
			}
			return fail(t.prev, fmt.Errorf("never connected to this host within the connect timeout (%v): %w", cfg.ConnectTimeout, ctx.Err()))
		}
	}

	g, err := distributed.NewGroup(t, rank, n, gopts...)
	if err != nil {
		t.Close()
		return nil, nil, err
	}
	// The first barrier may wait for far hosts still connecting: give it
	// what is left of the connect timeout rather than one op's timeout.
	if dl, ok := ctx.Deadline(); ok {
		g.SetOpTimeout(time.Until(dl))
	}
	err = g.Barrier(ctx)
	g.SetOpTimeout(cfg.OpTimeout)
	if err != nil {
		leaveWith(err) // pass the reason on both ways, as fail does
		g.Close()
		var mm *distributed.MismatchError
		if errors.As(err, &mm) {
			return nil, nil, &joinMismatch{job: cfg.JobName, text: mm.Text, cause: err}
		}
		return nil, nil, fmt.Errorf("distributed: join %s: %w", cfg.JobName, err)
	}
	t.rv.joined.Store(true)
	path := "a data lane (plain TCP) beside each gRPC link"
	if t.laneLis == nil {
		path = "the gRPC streams"
	}
	cfg.Logf("distributed: rank %d of %d joined job %s; collectives send chunks on %s", rank, n, cfg.JobName, path)
	return g, t, nil
}

// joinMismatch is how Join reports a disagreement between hosts, whichever
// host saw it and however the news reached this one: the sentence naming
// both sides, and nothing else, so that every host's failure reads the same.
// The cause (a *MismatchError, or the *RemoteFailure or *PeerError that
// relayed it) stays in the chain.
type joinMismatch struct {
	job, text string
	cause     error
}

func (e *joinMismatch) Error() string { return "distributed: join " + e.job + ": " + e.text }
func (e *joinMismatch) Unwrap() error { return e.cause }

// listen binds addr when it names an IP (local runs give each "host" its
// own address), else every interface on its port (a SageMaker host name
// resolves to the container's interface).
func listen(addr string) (net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if _, err := netip.ParseAddr(host); err != nil {
		addr = ":" + port
	}
	return net.Listen("tcp", addr)
}

func mismatchf(format string, args ...any) error {
	return &distributed.MismatchError{Text: fmt.Sprintf(format, args...)}
}

// hello is the handshake both ends send.
type hello struct {
	Proto       int      `json:"proto"`
	Job         string   `json:"job"`
	Hosts       []string `json:"hosts"`
	Rank        int      `json:"rank"`
	Host        string   `json:"host"`
	Fingerprint string   `json:"fingerprint"`
	// Lane, in a handshake reply, offers the data lane (lane.go); NoLane,
	// from the connecting side, says it sends chunks on the stream.
	Lane   *laneOffer `json:"lane,omitempty"`
	NoLane bool       `json:"no_lane,omitempty"`
	// Leave, when set, makes this hello a farewell: the host is not
	// joining and says why (see grpcTransport.leave).
	Leave *leaveNote `json:"leave,omitempty"`
	// Linger, sent to rank 0 by a host that has left the ring, asks for
	// the end of the stream when rank 0 closes (the final barrier, final.go).
	Linger bool `json:"linger,omitempty"`
}

// leaveNote is why a host gives up joining, as its neighbours relay it.
type leaveNote struct {
	Origin   int    `json:"origin"` // the rank that first saw the problem
	Mismatch bool   `json:"mismatch"`
	Text     string `json:"text"`
}

func (n *leaveNote) failure() *distributed.RemoteFailure {
	return &distributed.RemoteFailure{ReportedBy: n.Origin, Text: n.Text, Mismatch: n.Mismatch}
}

func (h hello) message(to int) *distributed.Message {
	b, _ := json.Marshal(h)
	return &distributed.Message{From: h.Rank, To: to, Kind: distributed.KindHello, Enc: distributed.EncBytes, Payload: b}
}

func parseHello(m distributed.Message) (hello, error) {
	var h hello
	if m.Kind != distributed.KindHello {
		return h, fmt.Errorf("expected a handshake, got %s", m.Kind)
	}
	if err := json.Unmarshal(m.Payload, &h); err != nil {
		return h, fmt.Errorf("bad handshake: %v", err)
	}
	return h, nil
}

func shortFP(fp string) string {
	if fp == "" {
		return "(none)"
	}
	if len(fp) > 12 {
		return fp[:8] + "…"
	}
	return fp
}

// check compares a peer's hello with ours; wantRank is where the peer must
// sit in the ring relative to us. The remote side is named first.
func (h hello) check(r hello, wantRank int) error {
	switch {
	case r.Proto != h.Proto:
		return mismatchf("host %s speaks sagefit protocol v%d but %s speaks v%d; every host must run the same sagefit build",
			r.Host, r.Proto, h.Host, h.Proto)
	case r.Job != h.Job:
		return mismatchf("host %s belongs to job %q but %s to job %q", r.Host, r.Job, h.Host, h.Job)
	case !slices.Equal(r.Hosts, h.Hosts):
		// The difference first: two lists of 500 hosts, abbreviated, may
		// read alike. Both lists in full are in the log (node.checkHello).
		return mismatchf("hosts %s and %s were given different host lists (%s); every host must get the same host list: %s has %s, %s has %s",
			r.Host, h.Host, hostsDiff(r.Host, r.Hosts, h.Host, h.Hosts), r.Host, hostlist.Short(r.Hosts), h.Host, hostlist.Short(h.Hosts))
	case r.Rank != wantRank || r.Rank < 0 || r.Rank >= len(h.Hosts) || h.Hosts[r.Rank] != r.Host:
		return mismatchf("host %s claims rank %d but %s expected %s (rank %d) there", r.Host, r.Rank, h.Host, h.Hosts[wantRank], wantRank)
	case r.Fingerprint != h.Fingerprint:
		return mismatchf("host %s has model fingerprint %s but %s has %s; every host must load the same training SavedModel",
			r.Host, shortFP(r.Fingerprint), h.Host, shortFP(h.Fingerprint))
	}
	return nil
}

// hostsDiff says where host lists a (of host an) and b (of bn) first
// differ, in a few words whatever their length.
func hostsDiff(an string, a []string, bn string, b []string) string {
	if len(a) != len(b) {
		return fmt.Sprintf("%d hosts on %s, %d on %s", len(a), an, len(b), bn)
	}
	for i := range a {
		if a[i] != b[i] {
			return fmt.Sprintf("rank %d is %s on %s but %s on %s", i,
				hostlist.Name(a[i]), an, hostlist.Name(b[i]), bn)
		}
	}
	return "the same hosts" // not reached: check calls it only for lists that differ
}

// allowList is the set of IPs the job's hosts resolve to. Unknown addresses
// trigger a re-resolution (at most once a second: names may resolve late or
// change when a host is replaced) before being refused.
type allowList struct {
	hosts []string

	mu   sync.Mutex
	ips  map[netip.Addr]bool
	last time.Time
}

func newAllowList(addrs []string) *allowList {
	a := &allowList{ips: map[netip.Addr]bool{}}
	for _, addr := range addrs {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			a.ips[ip.Unmap()] = true
			continue
		}
		a.hosts = append(a.hosts, host)
	}
	return a
}

func (a *allowList) allows(ctx context.Context, addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(tcp.IP)
	if !ok {
		return false
	}
	ip = ip.Unmap()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ips[ip] {
		return true
	}
	if len(a.hosts) == 0 || time.Since(a.last) < time.Second {
		return false
	}
	a.last = time.Now()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for _, h := range a.hosts {
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", h)
		if err != nil {
			continue
		}
		for _, x := range addrs {
			a.ips[x.Unmap()] = true
		}
	}
	return a.ips[ip]
}

// newTransport makes this rank's transport and serves on its address
// (cfg validated, rank and addrs from it); it dials nobody yet. With a
// reason to leave (Decline), it is leaving before it serves: whoever
// connects gets the reason.
func newTransport(cfg Config, rank int, addrs []string, leaving error) (*grpcTransport, error) {
	n := len(cfg.Hosts)
	tune := cfg.tune
	tune.noLane = tune.noLane || cfg.DataOverGRPC
	if tune.writeBuf == 0 {
		tune.writeBuf = defaultIOBuffer
	}
	if tune.readBuf == 0 {
		tune.readBuf = defaultIOBuffer
	}
	if tune.queue == 0 {
		tune.queue = defaultQueue
	}
	if tune.streamWindow == 0 && tune.connWindow == 0 {
		if w := cfg.StreamWindow; w > 0 {
			tune.streamWindow, tune.connWindow = int32(w), int32(min(4*w, 1<<30))
		} else {
			tune.streamWindow = int32(max(defaultStreamWindow, cfg.ChunkBytes))
			tune.connWindow = 4 * tune.streamWindow
		}
	}
	tctx, tcancel := context.WithCancel(context.Background())
	t := &grpcTransport{
		node: node{
			id: hello{Proto: protocolVersion, Job: cfg.JobName, Hosts: cfg.Hosts, Rank: rank,
				Host: cfg.Self, Fingerprint: cfg.Fingerprint},
			rank: rank, world: n, next: (rank + 1) % n, prev: (rank + n - 1) % n,
			addrs: addrs, tune: tune, chunkBytes: cfg.ChunkBytes, logf: cfg.Logf,
			allow: newAllowList(addrs), finalWait: cfg.FinalWait, peerTimeout: cfg.OpTimeout,
		},
		rv:   newRendezvous(n),
		data: dataPath{inReady: make(chan struct{})},
		ctx:  tctx, cancel: tcancel,
	}
	selfHost, _, _ := net.SplitHostPort(addrs[rank])
	if ip, err := netip.ParseAddr(selfHost); err == nil && ip.IsLoopback() {
		// Several "hosts" on one machine: speak from our own loopback
		// address so the peer's address check sees who we are.
		t.localIP = net.IP(ip.AsSlice())
	}
	if leaving != nil {
		t.closing.Store(true)
		t.rv.leaveWhy = leaving
	}
	lis := cfg.Listener
	if lis == nil {
		var err error
		if lis, err = listen(addrs[rank]); err != nil {
			t.Close()
			return nil, err
		}
	}
	if err := t.start(lis); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}
