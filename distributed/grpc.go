package distributed

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// The service is hand-written rather than generated from a .proto: the only
// message is a fixed 48-byte header plus raw little-endian floats, which
// protobuf would copy into a bytes field and back for no gain, and skipping
// protoc keeps the build to `go build`. frameCodec hands the payload to gRPC
// as is (no copy on send) and copies it once on receive into a pooled
// buffer the Group then owns.
const (
	serviceName = "sagefit.distributed.v1.Ring"
	linkMethod  = "/" + serviceName + "/Link"
)

type linkServer interface {
	serveLink(grpc.ServerStream) error
}

var ringServiceDesc = grpc.ServiceDesc{
	ServiceName: serviceName,
	HandlerType: (*linkServer)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Link",
		ServerStreams: true,
		ClientStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			return srv.(linkServer).serveLink(stream)
		},
	}},
	Metadata: "sagefit/distributed/grpc.go (no .proto)",
}

type frameCodec struct{}

func (frameCodec) Name() string { return "sagefit-frame" }

func (frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*Message)
	if !ok {
		return nil, fmt.Errorf("frame codec cannot marshal %T", v)
	}
	hdr := mem.SliceBuffer(m.appendHeader(make([]byte, 0, headerSize)))
	if len(m.Payload) == 0 {
		return mem.BufferSlice{hdr}, nil
	}
	if m.Borrowed || !m.Kind.isData() {
		// Not ours to recycle: a view of the caller's buffer, or a control
		// payload that may go out on more than one link (an abort).
		return mem.BufferSlice{hdr, mem.SliceBuffer(m.Payload)}, nil
	}
	// The transport owns the payload (see Message): grpc-go releases it
	// once it has written it.
	p := m.Payload
	return mem.BufferSlice{hdr, mem.NewBuffer(&p, payloadPool{})}, nil
}

func (frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*Message)
	if !ok {
		return fmt.Errorf("frame codec cannot unmarshal into %T", v)
	}
	r := data.Reader()
	defer r.Close()
	var hdr [headerSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return errBadFrame
	}
	if err := decodeFrame(hdr[:], m); err != nil {
		return err
	}
	if n := r.Remaining(); n > 0 {
		m.Payload = allocPayload(n) // 8-byte aligned: can be viewed as floats
		if _, err := io.ReadFull(r, m.Payload); err != nil {
			return err
		}
	}
	return nil
}

// grpcTuning holds the transport knobs; zero values take the defaults
// below. Benchmarks set them; the package does not export them.
type grpcTuning struct {
	streamWindow, connWindow int32 // flow-control windows; both 0 here means the defaults below
	writeBuf, readBuf        int   // socket-side buffers; 0: defaultIOBuffer
	queue                    int   // messages buffered per link in our own queues
	noLane                   bool  // send chunks on the gRPC streams instead of a data lane (lane.go)
}

// Defaults chosen by BenchmarkGRPCTuning (3 ranks, 64 MiB, loopback, 2
// cores; busbw in MB/s, three runs each):
//
//	grpc-go BDP auto-tuning (no window set)        661 668 705
//	static 256 KiB stream / 1 MiB conn             726 731 747
//	static 512 KiB stream / 2 MiB conn             725 733 738
//	static 1 MiB stream / 4 MiB conn               756 785 817   <- default
//	static 2 MiB stream / 8 MiB conn               677 680 691
//	static 4 MiB stream / 16 MiB conn              659 680 688
//	static 16 MiB stream / 64 MiB conn             647 650 666
//	I/O buffers 32 KiB / 256 KiB / 1 MiB           no difference beyond noise
//	chunk 256 KiB / 1 MiB / 4 MiB-1 KiB            691-737 / 661-705 / 644-653 (auto windows)
//
// In grpc-go, setting a window turns BDP auto-tuning off. Auto-tuning grows
// windows up to 16 MiB, which on loopback only adds buffering (cache
// misses); a fixed 1 MiB window is also enough for the links SageMaker hosts
// share: 1 MiB per 100 us RTT is 10 GB/s per stream, more than one gRPC
// stream moves. The window grows with ChunkBytes so one chunk always fits.
const (
	defaultStreamWindow = 1 << 20
	defaultIOBuffer     = 256 << 10
	defaultQueue        = 8
)

// Keepalive: the receiving side (server) pings an idle client every 2 s and
// drops it 3 s after a ping goes unanswered, so a silently dead sender is
// noticed in ~5 s. grpc-go refuses client ping intervals under 10 s, so the
// sending side pings every 10 s (5 s timeout; with keepalive on, grpc-go also
// sets TCP_USER_TIMEOUT so unacknowledged data fails a dead link in ~5 s).
// The server's enforcement policy must allow the client's rate or it would
// answer with GOAWAY "too_many_pings".
var (
	serverKeepalive   = keepalive.ServerParameters{Time: 2 * time.Second, Timeout: 3 * time.Second}
	serverEnforcement = keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}
	clientKeepalive   = keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}
)

// closeGrace bounds how long Close waits for queued frames to reach the
// next rank and for the previous rank to be told we are leaving.
const closeGrace = 2 * time.Second

// leaveGrace bounds how long a host that gives up joining spends making
// sure both neighbours have its reason: each must acknowledge (end the
// stream it was told on, or answer a farewell) within it. relayWait is how
// long a host that lost a neighbour's connection during rendezvous waits
// for that reason to arrive before it reports the bare connection loss;
// it covers a neighbour's leaveGrace. Both are generous: they only delay
// failures, and a loaded machine must not turn a clear reason into
// "connection lost".
const (
	leaveGrace = 5 * time.Second
	relayWait  = leaveGrace + time.Second
)

// grpcTransport connects one rank to its ring neighbours with one
// bidirectional stream each way round the ring: a client stream to the next
// rank carries all data (client -> server); its reverse direction carries
// the handshake reply and, when the receiver leaves, the stream status that
// says why. A server accepts the previous rank's stream. One stream per
// neighbour is enough: on loopback a single stream already saturates what
// two cores can copy (see BenchmarkGRPCAllReduce).
type grpcTransport struct {
	id          hello // this rank's identity
	rank, world int
	next, prev  int
	addrs       []string
	tune        grpcTuning
	chunkBytes  int
	logf        func(string, ...any)
	allow       *allowList
	localIP     net.IP // bind outgoing connections here (loopback runs only)

	ctx     context.Context // ends at Close
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closing atomic.Bool
	joined  atomic.Bool
	giveUp  atomic.Bool   // Join failed: finish the attempt in flight, start no other
	stopped chan struct{} // closed with giveUp, to cut a backoff sleep short
	stopOne sync.Once

	srv  *grpc.Server
	lis  net.Listener
	conn *grpc.ClientConn

	laneLis   net.Listener                                   // nil when chunks go on the gRPC streams
	laneConns chan net.Conn                                  // admitted lanes, for the handshake awaiting one
	placement atomic.Pointer[func(h *Message, n int) []byte] // the Group's, for lane readers

	mu       sync.Mutex
	out      *link // to next, set once connected
	in       *link // from prev, set once accepted
	leaveWhy error // set when this host leaves with a reason (under mu, with closing)
	inReady  chan struct{}
	// A handshake with the previous rank is waiting for its lane: no other
	// may start, and laneToken is the token that handshake gave out.
	inPending bool
	laneToken string
	leaving   chan struct{} // closed when shutdown starts

	// Why rendezvous cannot succeed: the most telling reason so far (a
	// mismatch or a relayed reason beats a bare connection loss), the
	// neighbour it concerns, and a signal whenever it changes.
	fatalMu   sync.Mutex
	fatalErr  error
	fatalPeer int
	fatal     chan struct{}
	// knows[r]: neighbour r has heard why rendezvous failed (it told us,
	// or it got our refusal or reason), so leaving needs no farewell to it.
	knows []atomic.Bool

	closeOnce sync.Once
}

// link is one direction of one stream.
type link struct {
	peer   int
	ch     chan Message
	lane   net.Conn     // the data lane, if any; set before the link is used
	urgent chan Message // out-link: aborts and waiting notices, sent ahead of data
	dead   chan struct{}
	once   sync.Once
	err    error

	// out-link: stop ends the stream; drain asks the writer to flush and
	// half-close; finished closes when the receiver has ended the stream.
	stop      context.CancelFunc
	drain     chan struct{}
	drainOnce sync.Once
	finished  chan struct{}

	// in-link: up carries an abort the handler sends upstream (the Group
	// failed); leave carries the reason the handler reports upstream as it
	// ends; served closes when the handler has returned.
	up     chan Message
	leave  chan error
	served chan struct{}
}

func newLink(peer, queue int) *link {
	return &link{peer: peer, ch: make(chan Message, queue), urgent: make(chan Message, 4), dead: make(chan struct{}),
		drain: make(chan struct{}), finished: make(chan struct{}),
		up: make(chan Message, 1), leave: make(chan error, 1), served: make(chan struct{})}
}

// deliver queues an in-link message for Recv; false once the link or
// ctx has ended.
func (l *link) deliver(ctx context.Context, m Message) bool {
	select {
	case l.ch <- m:
		return true
	case <-l.dead:
		return false
	case <-ctx.Done():
		return false
	}
}

func (l *link) die(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.dead)
		if l.stop != nil {
			l.stop()
		}
		if l.lane != nil {
			l.lane.Close() // unblocks the lane's reader or writer
		}
	})
}

func (l *link) isDead() bool {
	select {
	case <-l.dead:
		return true
	default:
		return false
	}
}

// stopConnecting lets the connection attempt in flight finish and starts no
// other.
func (t *grpcTransport) stopConnecting() {
	t.stopOne.Do(func() {
		t.giveUp.Store(true)
		close(t.stopped)
	})
}

// postFatal tells a Join in progress that it cannot succeed, and why; peer
// is the neighbour concerned. A reason (mismatch, or relayed from another
// host) replaces a bare connection loss, never the other way round.
func (t *grpcTransport) postFatal(peer int, err error) {
	if t.joined.Load() || t.closing.Load() {
		return
	}
	t.fatalMu.Lock()
	if t.fatalErr == nil || !isReason(t.fatalErr) && isReason(err) {
		t.fatalErr, t.fatalPeer = err, peer
		select {
		case t.fatal <- struct{}{}:
		default:
		}
	}
	t.fatalMu.Unlock()
}

func (t *grpcTransport) fatalReason() (int, error) {
	t.fatalMu.Lock()
	defer t.fatalMu.Unlock()
	return t.fatalPeer, t.fatalErr
}

// isReason tells a failure that explains itself (a disagreement, or one
// another host reported) from a bare connection loss.
func isReason(err error) bool {
	var mm *MismatchError
	var rf *RemoteFailure
	return errors.As(err, &mm) || errors.As(err, &rf)
}

// reasonParts is what travels in abort frames, farewells and statuses.
func reasonParts(self int, reason error) (origin int, mismatch bool, text string) {
	var rf *RemoteFailure
	var mm *MismatchError
	switch {
	case errors.As(reason, &rf):
		return rf.ReportedBy, rf.Mismatch, rf.Text
	case errors.As(reason, &mm):
		return self, true, mm.Text
	}
	return self, false, reason.Error()
}

// reasonStatus is how a server tells a client why it leaves or refuses.
func reasonStatus(self int, reason error) error {
	_, mismatch, text := reasonParts(self, reason)
	if mismatch {
		return status.Error(codes.FailedPrecondition, text)
	}
	return status.Error(codes.Aborted, text)
}

func (t *grpcTransport) abortFrame(to int, reason error) Message {
	origin, mismatch, text := reasonParts(t.rank, reason)
	return Message{From: t.rank, To: to, Kind: kindAbort, Payload: abortPayload(t.rank, origin, mismatch, text)}
}

func (t *grpcTransport) rankOf(host string) int { return slices.Index(t.id.Hosts, host) }

func (t *grpcTransport) markKnows(rank int) {
	if rank >= 0 && rank < len(t.knows) {
		t.knows[rank].Store(true)
	}
}

func (t *grpcTransport) serverOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(frameCodec{}),
		grpc.MaxRecvMsgSize(max(4<<20, t.chunkBytes+headerSize+1024)),
		grpc.KeepaliveParams(serverKeepalive),
		grpc.KeepaliveEnforcementPolicy(serverEnforcement),
		grpc.WriteBufferSize(t.tune.writeBuf),
		grpc.ReadBufferSize(t.tune.readBuf),
		grpc.MaxConcurrentStreams(8), // only the predecessor needs one
		grpc.WaitForHandlers(true),   // so Close returns only after serveLink did
	}
	if t.tune.streamWindow > 0 {
		opts = append(opts, grpc.InitialWindowSize(t.tune.streamWindow))
	}
	if t.tune.connWindow > 0 {
		opts = append(opts, grpc.InitialConnWindowSize(t.tune.connWindow))
	}
	return opts
}

func (t *grpcTransport) dialOptions() []grpc.DialOption {
	dialer := &net.Dialer{}
	if t.localIP != nil {
		dialer.LocalAddr = &net.TCPAddr{IP: t.localIP}
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()), // inside the job's VPC, as SageMaker's own collectives
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			// Resolve on every attempt: SageMaker host names may not resolve yet.
			return dialer.DialContext(ctx, "tcp", addr)
		}),
		grpc.WithNoProxy(),
		grpc.WithDisableRetry(),
		grpc.WithKeepaliveParams(clientKeepalive),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		}),
		grpc.WithWriteBufferSize(t.tune.writeBuf),
		grpc.WithReadBufferSize(t.tune.readBuf),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(frameCodec{}),
			grpc.MaxCallRecvMsgSize(max(4<<20, t.chunkBytes+headerSize+1024))),
	}
	if t.tune.streamWindow > 0 {
		opts = append(opts, grpc.WithInitialWindowSize(t.tune.streamWindow))
	}
	if t.tune.connWindow > 0 {
		opts = append(opts, grpc.WithInitialConnWindowSize(t.tune.connWindow))
	}
	return opts
}

// start serves on lis and creates (lazily connecting) the client to next.
func (t *grpcTransport) start(lis net.Listener) error {
	t.lis = lis
	if !t.tune.noLane {
		if err := t.listenLane(lis); err != nil {
			return err
		}
	}
	t.srv = grpc.NewServer(t.serverOptions()...)
	t.srv.RegisterService(&ringServiceDesc, t)
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		if err := t.srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.logf("distributed: rank %d: serve %s: %v", t.rank, lis.Addr(), err)
		}
	}()
	conn, err := grpc.NewClient("passthrough:///"+t.addrs[t.next], t.dialOptions()...)
	if err != nil {
		return fmt.Errorf("client for rank %d at %s: %w", t.next, t.addrs[t.next], err)
	}
	t.conn = conn
	return nil
}

// connectNext opens the stream to the next rank and shakes hands, retrying
// with capped exponential backoff until ctx ends: peers boot in any order
// and their names may not resolve at first. A mismatch is returned at once.
func (t *grpcTransport) connectNext(ctx context.Context) error {
	delay := 100 * time.Millisecond
	var lastErr error
	lastLog := time.Now()
	for attempt := 1; ; attempt++ {
		err := t.tryConnect(ctx)
		if err == nil {
			if attempt > 1 {
				t.logf("distributed: rank %d: connected to rank %d (%s) after %d attempts", t.rank, t.next, t.addrs[t.next], attempt)
			}
			return nil
		}
		if isReason(err) {
			return err
		}
		lastErr = err
		if t.giveUp.Load() {
			return err
		}
		if time.Since(lastLog) > 30*time.Second {
			lastLog = time.Now()
			t.logf("distributed: rank %d: still waiting for rank %d (%s): %v", t.rank, t.next, t.addrs[t.next], err)
		}
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("no handshake within the connect timeout: %w (last attempt: %v)", ctx.Err(), lastErr)
		case <-t.ctx.Done():
			timer.Stop()
			return ErrClosed
		case <-t.stopped:
			timer.Stop()
			return err
		case <-timer.C:
		}
		delay = min(2*delay, 5*time.Second)
	}
}

func (t *grpcTransport) tryConnect(ctx context.Context) error {
	// The stream must outlive this attempt (it becomes the link), so it
	// gets the transport's context; a watchdog ends it only if the attempt
	// itself takes too long or ctx ends first.
	streamCtx, stop := context.WithCancel(t.ctx)
	var mu sync.Mutex
	settled := false
	abandon := func() {
		mu.Lock()
		defer mu.Unlock()
		if !settled {
			stop()
		}
	}
	watchdog := time.AfterFunc(10*time.Second, abandon)
	defer watchdog.Stop()
	unhook := context.AfterFunc(ctx, abandon)
	defer unhook()
	ok := false
	defer func() {
		if !ok {
			stop()
		}
	}()
	stream, err := t.conn.NewStream(streamCtx, &ringServiceDesc.Streams[0], linkMethod)
	if err != nil {
		return err
	}
	h := t.id
	h.NoLane = t.laneLis == nil // chunks on the stream: a lane offer would wait in vain
	if err := stream.SendMsg(h.message(t.next)); err != nil && err != io.EOF {
		return err // io.EOF: the server ended the stream; RecvMsg has its status
	}
	var ack Message
	if err := stream.RecvMsg(&ack); err != nil {
		if st, isStatus := status.FromError(err); isStatus {
			switch st.Code() {
			case codes.FailedPrecondition: // it saw the mismatch itself
				t.markKnows(t.next)
				return &MismatchError{Text: st.Message()}
			case codes.Aborted: // it is leaving, and says why
				t.markKnows(t.next)
				return &RemoteFailure{ReportedBy: t.next, Text: st.Message()}
			}
		}
		return err
	}
	remote, err := parseHello(ack)
	if err != nil {
		return err
	}
	if err := t.id.check(remote, t.next); err != nil {
		return err
	}
	var lane net.Conn
	if remote.Lane != nil {
		if lane, err = t.dialLane(streamCtx, *remote.Lane); err != nil {
			return err
		}
		defer func() {
			if !ok {
				lane.Close()
			}
		}()
	}
	mu.Lock()
	settled = true
	mu.Unlock()
	if err := streamCtx.Err(); err != nil {
		return err
	}
	ok = true
	l := newLink(t.next, t.tune.queue)
	l.stop = stop
	l.lane = lane
	t.mu.Lock()
	t.out = l
	t.mu.Unlock()
	t.wg.Add(2)
	go t.writeLoop(l, stream)
	go t.watchLoop(l, stream)
	return nil
}

// writeLoop is the only goroutine that calls SendMsg on the out stream.
func (t *grpcTransport) writeLoop(l *link, stream grpc.ClientStream) {
	defer t.wg.Done()
	send := func(m Message) bool {
		if m.flushed != nil { // everything queued before it is written
			close(m.flushed)
			return true
		}
		if l.lane != nil && m.Kind.isData() {
			err := writeLaneFrame(l.lane, &m)
			if err == nil {
				if !m.Borrowed {
					releasePayload(m.Payload) // written: the socket has its bytes
				}
				return true
			}
			// A receiver that left may have said why on the stream: give
			// watchLoop a moment to deliver that instead of a bare error.
			select {
			case <-l.finished:
			case <-l.dead:
			case <-time.After(time.Second):
			}
			l.die(fmt.Errorf("send failed: %w", err))
			return false
		}
		m.own() // grpc-go writes later, from its own goroutine
		err := stream.SendMsg(&m)
		if err == nil {
			return true
		}
		if err == io.EOF { // the stream is over; watchLoop has the reason
			select {
			case <-l.finished:
			case <-t.ctx.Done():
			}
			return false
		}
		l.die(fmt.Errorf("send failed: %w", err))
		return false
	}
	pop := func() (Message, bool) { // urgent first
		select {
		case m := <-l.urgent:
			return m, true
		default:
		}
		select {
		case m := <-l.ch:
			return m, true
		default:
			return Message{}, false
		}
	}
	for {
		if m, ok := pop(); ok {
			if !send(m) {
				return
			}
			continue
		}
		select {
		case m := <-l.urgent:
			if !send(m) {
				return
			}
		case m := <-l.ch:
			if !send(m) {
				return
			}
		case <-l.drain: // Close: flush what is queued, then half-close
			for {
				m, ok := pop()
				if !ok {
					if tc, isTCP := l.lane.(*net.TCPConn); isTCP {
						tc.CloseWrite() // after the data, so the receiver reads it all
					}
					stream.CloseSend()
					return
				}
				if !send(m) {
					return
				}
			}
		case <-l.dead:
			return
		case <-t.ctx.Done():
			return
		}
	}
}

// watchLoop waits on the stream's reverse direction, which carries nothing
// after the handshake but, from a receiver that gives up joining, an abort
// frame with its reason: it returns when that arrives (ending the stream is
// the receipt the receiver waits for), when the receiver ends the stream
// (its status says why) or when the connection breaks, so the next Send
// fails at once instead of at a timeout.
func (t *grpcTransport) watchLoop(l *link, stream grpc.ClientStream) {
	defer t.wg.Done()
	defer close(l.finished)
	var m Message
	err := stream.RecvMsg(&m)
	var reason error
	st, isStatus := status.FromError(err)
	switch {
	case err == nil && m.Kind == kindAbort:
		lost, rf := parseAbort(m, l.peer)
		reason = &abortErr{lost: lost, rf: rf}
		t.markKnows(l.peer)
	case err == nil:
		reason = errors.New("unexpected message from the receiver")
	case err == io.EOF:
		reason = errors.New("the receiver closed the link")
	case isStatus && (st.Code() == codes.FailedPrecondition || st.Code() == codes.Aborted):
		reason = &RemoteFailure{ReportedBy: l.peer, Text: st.Message(), Mismatch: st.Code() == codes.FailedPrecondition}
		t.markKnows(l.peer)
	default:
		reason = fmt.Errorf("connection lost: %w", err)
	}
	l.die(reason)
	t.postFatal(l.peer, reason)
}

func (t *grpcTransport) Send(ctx context.Context, to int, m Message) error {
	if t.closing.Load() {
		return ErrClosed
	}
	t.mu.Lock()
	l := t.out
	t.mu.Unlock()
	if to != t.next || l == nil {
		return fmt.Errorf("no link from rank %d to rank %d", t.rank, to)
	}
	if l.isDead() {
		return l.err
	}
	ch := l.ch
	if m.Kind == kindAbort || m.Kind == kindWaiting {
		select {
		case l.urgent <- m:
			return nil
		default:
		}
		if m.Kind == kindWaiting {
			return nil // a hint; the next one will do
		}
		ch = l.urgent
	}
	select {
	case ch <- m:
		return nil
	case <-l.dead:
		return l.err
	case <-ctx.Done():
		return ctx.Err()
	case <-t.ctx.Done():
		return ErrClosed
	}
}

// flush returns once the out-link's writer has handed every message queued
// so far to the socket (or to grpc-go, as a copy), so Borrowed payloads
// are no longer read.
func (t *grpcTransport) flush(ctx context.Context, to int) error {
	t.mu.Lock()
	l := t.out
	t.mu.Unlock()
	if to != t.next || l == nil {
		return fmt.Errorf("no link from rank %d to rank %d", t.rank, to)
	}
	done := make(chan struct{})
	select {
	case l.ch <- Message{flushed: done}:
	case <-l.dead:
		return l.err
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-l.dead:
		return l.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (t *grpcTransport) setPlacement(place func(h *Message, n int) []byte) {
	t.placement.Store(&place)
}

func (t *grpcTransport) Recv(ctx context.Context, from int) (Message, error) {
	if from != t.prev {
		return Message{}, fmt.Errorf("no link from rank %d to rank %d", from, t.rank)
	}
	select {
	case <-t.inReady:
	case <-ctx.Done():
		return Message{}, ctx.Err()
	case <-t.ctx.Done():
		return Message{}, ErrClosed
	}
	t.mu.Lock()
	l := t.in
	t.mu.Unlock()
	select { // what arrived before a failure is still delivered
	case m := <-l.ch:
		return m, nil
	default:
	}
	select {
	case m := <-l.ch:
		return m, nil
	case <-l.dead:
		select {
		case m := <-l.ch:
			return m, nil
		default:
		}
		return Message{}, l.err
	case <-ctx.Done():
		return Message{}, ctx.Err()
	case <-t.ctx.Done():
		return Message{}, ErrClosed
	}
}

// serveLink runs for the predecessor's stream: check where it comes from,
// check who it is, reply, then move frames into the in-link queue until the
// stream ends or this rank leaves (then the status tells the sender why).
func (t *grpcTransport) serveLink(stream grpc.ServerStream) error {
	ctx := stream.Context()
	remoteAddr := "unknown address"
	if p, ok := peer.FromContext(ctx); ok {
		remoteAddr = p.Addr.String()
		if !t.allow.allows(ctx, p.Addr) {
			t.logf("distributed: rank %d: refused connection from %s: not an address of any host in job %q", t.rank, remoteAddr, t.id.Job)
			return status.Errorf(codes.PermissionDenied, "connection from %s refused: not an address of any host in job %q", remoteAddr, t.id.Job)
		}
	}
	first := make(chan error, 1)
	var hm Message
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		first <- stream.RecvMsg(&hm)
	}()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case err := <-first:
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "expected a handshake: %v", err)
		}
	case <-timer.C:
		return status.Error(codes.DeadlineExceeded, "no handshake within 10s")
	case <-t.ctx.Done():
		return status.Error(codes.Unavailable, "shutting down")
	}
	remote, err := parseHello(hm)
	if err != nil {
		return status.Errorf(codes.PermissionDenied, "connection from %s refused: %v", remoteAddr, err)
	}
	if remote.Job != t.id.Job {
		t.logf("distributed: rank %d: refused %s from %s: job %q, not %q", t.rank, remote.Host, remoteAddr, remote.Job, t.id.Job)
		return status.Errorf(codes.PermissionDenied, "connection from %s (host %q of job %q) refused: this is job %q", remoteAddr, remote.Host, remote.Job, t.id.Job)
	}
	if remote.Leave != nil {
		// A host of this job that is not joining after all tells us why
		// (it may disagree with us: only the job is checked). Returning
		// OK is the receipt it waits for.
		t.markKnows(t.rankOf(remote.Host))
		t.postFatal(t.prev, remote.Leave.failure())
		return nil
	}
	if err := t.id.check(remote, t.prev); err != nil {
		t.markKnows(t.rankOf(remote.Host))
		t.postFatal(t.prev, err)
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	l := newLink(t.prev, t.tune.queue)
	defer close(l.served)
	t.mu.Lock()
	if t.closing.Load() {
		why := t.leaveWhy
		t.mu.Unlock()
		if why == nil {
			return status.Errorf(codes.Unavailable, "rank %d is shutting down", t.rank)
		}
		// Leaving with a reason: whoever comes late still gets it.
		t.markKnows(t.rankOf(remote.Host))
		return reasonStatus(t.rank, why)
	}
	if t.in != nil {
		t.mu.Unlock()
		return status.Errorf(codes.AlreadyExists, "rank %d is already connected; links are not re-established", t.prev)
	}
	if t.inPending {
		t.mu.Unlock()
		return status.Errorf(codes.Unavailable, "rank %d is finishing another handshake", t.prev)
	}
	reply := t.id
	if t.laneLis != nil && !remote.NoLane {
		// The link exists once its lane does; until then a failed attempt
		// leaves nothing behind and the sender simply tries again.
		t.inPending = true
		reply.Lane = t.offerLane()
	} else {
		t.in = l
	}
	t.mu.Unlock()
	if err := stream.SendMsg(reply.message(t.prev)); err != nil {
		if reply.Lane != nil {
			t.mu.Lock()
			t.endLaneWait()
			t.mu.Unlock()
			return err
		}
		l.die(fmt.Errorf("handshake reply failed: %w", err))
		t.postFatal(t.prev, l.err)
		close(t.inReady)
		return err
	}
	if reply.Lane != nil {
		lane, err := t.awaitLane(ctx)
		t.mu.Lock()
		t.endLaneWait()
		if err == nil && t.closing.Load() {
			lane.Close()
			err = ErrClosed
		}
		if err != nil {
			why := t.leaveWhy
			t.mu.Unlock()
			if why != nil { // left meanwhile: the sender still gets the reason
				t.markKnows(t.rankOf(remote.Host))
				return reasonStatus(t.rank, why)
			}
			return status.Errorf(codes.Unavailable, "rank %d: %v", t.rank, err)
		}
		l.lane = lane
		t.in = l
		t.mu.Unlock()
	}
	close(t.inReady)

	readerDone := make(chan struct{})
	laneDone := make(chan struct{})
	if l.lane == nil {
		close(laneDone)
	} else {
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			defer close(laneDone)
			t.readLane(ctx, l, max(4<<20, t.chunkBytes+1024), readerDone)
		}()
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		defer close(readerDone)
		for {
			var m Message
			if err := stream.RecvMsg(&m); err != nil {
				switch {
				case err == io.EOF:
					// A sender closes its lane before the stream: let the
					// lane's reader deliver everything first.
					select {
					case <-laneDone:
					case <-l.dead:
					case <-ctx.Done():
					}
					l.die(errors.New("the sender closed the link"))
				case status.Code(err) == codes.Canceled && t.ctx.Err() == nil:
					// How grpc-go reports a client connection that broke.
					l.die(fmt.Errorf("connection lost (the sender crashed or the network failed): %w", err))
				default:
					l.die(fmt.Errorf("connection lost: %w", err))
				}
				t.postFatal(t.prev, l.err)
				return
			}
			if m.Kind == kindAbort {
				t.markKnows(t.prev)
				t.postFatal(t.prev, decodeAbort(m))
			}
			if !l.deliver(ctx, m) {
				return
			}
		}
	}()
	send := func(m Message) {
		if err := stream.SendMsg(&m); err != nil {
			t.logf("distributed: rank %d: could not tell rank %d of the failure: %v", t.rank, t.prev, err)
		}
	}
	sendUp := func() { // an abort the Group sent upstream, if still queued
		select {
		case m := <-l.up:
			send(m)
		default:
		}
	}
	for {
		select {
		case <-readerDone:
			sendUp()
			return nil
		case m := <-l.up:
			send(m) // the stream goes on: the sender's Send fails with it
		case reason := <-l.leave:
			sendUp()
			if reason != nil {
				// Tell the sender on the stream's reverse direction, then wait
				// for its receipt: it ends the stream once it has read this
				// (or it leaves). Only then does the status go out.
				if err := stream.SendMsg(ptr(t.abortFrame(t.prev, reason))); err == nil {
					select {
					case <-readerDone:
					case <-t.ctx.Done():
					}
				}
			}
			l.die(ErrClosed)
			if reason == nil {
				return nil
			}
			return reasonStatus(t.rank, reason)
		case <-t.ctx.Done():
			l.die(ErrClosed)
			return status.Errorf(codes.Unavailable, "rank %d is shutting down", t.rank)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// abortUpstream queues an abort for the previous rank, which reads it as
// the end of its link to us (see watchLoop); the first one counts.
func (t *grpcTransport) abortUpstream(m Message) {
	t.mu.Lock()
	l := t.in
	t.mu.Unlock()
	if l == nil {
		return
	}
	select {
	case l.up <- m:
	default:
	}
}

// decodeAbort reads an abort frame that arrived during rendezvous.
func decodeAbort(m Message) error {
	_, rf := parseAbort(m, m.From)
	return rf
}

// Close leaves gracefully: queued frames are flushed to the next rank and
// the previous rank is told the link ends, then everything stops and every
// goroutine has returned. Idempotent.
func (t *grpcTransport) Close() error {
	t.closeOnce.Do(func() { t.shutdown(nil) })
	return nil
}

// leave is Close with a reason that both neighbours receive, and
// acknowledge, before this host closes anything: the next rank as an abort
// frame on the link (its end of the stream is the receipt), the previous
// one as an abort frame on the link's reverse direction (likewise), and a
// neighbour this host never got a link with by a farewell on a stream of
// its own. A host that connects while we leave is answered with the reason.
// All of it is bounded by leaveGrace.
func (t *grpcTransport) leave(reason error) {
	t.closeOnce.Do(func() { t.shutdown(reason) })
}

func (t *grpcTransport) shutdown(reason error) {
	grace := closeGrace
	if reason != nil {
		grace = leaveGrace
	}
	dctx, dcancel := context.WithTimeout(context.Background(), grace)
	defer dcancel()
	t.mu.Lock()
	t.closing.Store(true)
	t.leaveWhy = reason
	in, out := t.in, t.out
	t.mu.Unlock()
	close(t.leaving)
	if out != nil {
		if reason != nil {
			select { // ahead of anything queued
			case out.urgent <- t.abortFrame(t.next, reason):
			case <-out.dead:
			case <-dctx.Done():
			}
		}
		out.drainOnce.Do(func() { close(out.drain) })
	}
	if in != nil {
		in.leave <- reason
	}
	if out != nil {
		select {
		case <-out.finished:
		case <-dctx.Done():
		}
	}
	if in != nil {
		select {
		case <-in.served:
		case <-dctx.Done():
		}
	}
	if reason != nil && !t.joined.Load() {
		linked := func(r int) bool { return out != nil && out.peer == r || in != nil && in.peer == r }
		var wg sync.WaitGroup
		for _, r := range []int{t.next, t.prev} {
			if linked(r) || t.knows[r].Load() || r == t.prev && t.prev == t.next {
				continue
			}
			wg.Go(func() { t.farewell(dctx, r, reason) })
		}
		wg.Wait()
	}
	t.cancel()
	for _, l := range []*link{in, out} {
		if l != nil {
			l.die(ErrClosed)
		}
	}
	if t.srv != nil {
		stopped := make(chan struct{})
		go func() {
			t.srv.GracefulStop() // lets the statuses above reach the peers
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-time.After(closeGrace):
			t.srv.Stop()
			<-stopped
		}
	} else if t.lis != nil {
		t.lis.Close()
	}
	if t.laneLis != nil {
		t.laneLis.Close()
	}
	if t.conn != nil {
		t.conn.Close()
	}
	t.wg.Wait()
}

// farewell tells a neighbour this host never had a link with why it is not
// joining, over a stream of its own, until the neighbour acknowledges or ctx
// ends (it may still be booting).
func (t *grpcTransport) farewell(ctx context.Context, peer int, reason error) {
	conn := t.conn
	if peer != t.next {
		c, err := grpc.NewClient("passthrough:///"+t.addrs[peer], t.dialOptions()...)
		if err != nil {
			return
		}
		defer c.Close()
		conn = c
	}
	h := t.id
	origin, mismatch, text := reasonParts(t.rank, reason)
	h.Leave = &leaveNote{Origin: origin, Mismatch: mismatch, Text: text}
	for {
		if t.knows[peer].Load() { // it told us meanwhile, or got our refusal
			return
		}
		actx, cancel := context.WithTimeout(ctx, time.Second)
		err := sayFarewell(actx, conn, h, peer)
		cancel()
		if err == nil {
			t.markKnows(peer)
			return
		}
		if st, ok := status.FromError(err); ok && st.Code() != codes.Unavailable && st.Code() != codes.DeadlineExceeded && st.Code() != codes.Canceled {
			// It answered: refused, or it is leaving with a reason of its own.
			return
		}
		select {
		case <-ctx.Done():
			t.logf("distributed: rank %d: could not tell rank %d (%s) why this host leaves: %v", t.rank, peer, t.addrs[peer], err)
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// sayFarewell sends one farewell and waits for its receipt (the stream's OK
// status). It does not wait for a connection that is failing: the caller
// retries while the neighbour may still come up.
func sayFarewell(ctx context.Context, conn *grpc.ClientConn, h hello, peer int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := conn.NewStream(ctx, &ringServiceDesc.Streams[0], linkMethod)
	if err != nil {
		return err
	}
	if err := stream.SendMsg(h.message(peer)); err != nil && err != io.EOF {
		return err
	}
	var m Message
	if err := stream.RecvMsg(&m); err != io.EOF {
		if err == nil {
			return status.Error(codes.Internal, "unexpected reply to a farewell")
		}
		return err
	}
	return nil
}
