package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sagefit/sagefit/distributed"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// The ring service: one bidirectional stream per link, carrying frames
// (frame.go) in the frame codec; no .proto.
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
	Metadata: "sagefit/distributed/transport/grpc.go (no .proto)",
}

// grpcTuning holds the transport knobs; zero values take the defaults
// below. Benchmarks set them; the package does not export them (but for
// the stream window, Config.StreamWindow, for experiments).
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

// Keepalive: the receiving side (server) pings an idle client every 2 s,
// the sending side (client) every 10 s (grpc-go refuses client intervals
// under 10 s); a ping unanswered for the job's peer timeout (OpTimeout, at
// least 3 s) drops the link, and with keepalive on grpc-go sets
// TCP_USER_TIMEOUT to the same, so unacknowledged data fails a dead link
// then too. The timeouts follow the peer timeout rather than a
// fixed few seconds: a peer silent for less than it (a host paused or
// frozen for 5 s) must not end the job, which a fixed 3 s did whatever
// the peer timeout said; a process that is alive answers pings from
// gRPC's own goroutines however busy its training is. The server's
// enforcement policy must allow the client's rate or it would answer with
// GOAWAY "too_many_pings".
const (
	serverPingEvery = 2 * time.Second
	clientPingEvery = 10 * time.Second
	minPingTimeout  = 3 * time.Second
)

var serverEnforcement = keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}

// pingTimeout is how long a keepalive ping may go unanswered, and, as
// grpc-go also sets it as TCP_USER_TIMEOUT, how long sent data may: the
// peer timeout (a link to a frozen peer drops after it and the ping
// interval, about when the op timeout fires).
func pingTimeout(peerTimeout time.Duration) time.Duration {
	return max(minPingTimeout, peerTimeout)
}

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
//
// Its state is in two halves: rendezvous (rendezvous.go), what only
// joining uses (connecting, accepting, handshakes, lane offers, the reason
// a join fails, farewells), and dataPath, the links the Group's messages
// travel on once they exist (send and receive queues, lane reads and
// writes, flush, placement). The rest, below, is shared by both and says
// why.
type grpcTransport struct {
	node
	rv   rendezvous
	data dataPath

	// Lifetime, shared: ctx ends at Close and ends every goroutine of
	// either half, all counted in wg (handshakes and lane accepts as much
	// as stream readers and writers). closing is set, under rv.mu with
	// rv.leaveWhy, when Close or leave starts: Send refuses from then on,
	// and a handshake that sees it refuses the link.
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closing   atomic.Bool
	closeOnce sync.Once
	// finalErr is the final barrier's outcome: rank 0 lost before it
	// finished the job (Close returns it). skipFinal: rank 0 is known
	// lost, so there is no one to wait for (SkipFinalWait).
	finalErr  error
	skipFinal atomic.Bool
	failed    atomic.Pointer[error] // rank 0's failure, told to the hosts at the final barrier (Failed)

	// Sockets, shared: start opens them before rendezvous begins, the
	// links that rendezvous sets up run on them, shutdown closes them.
	srv      *grpc.Server
	accepted *trackingListener // what srv serves: the sockets it accepted, for shutdown
	lis      net.Listener
	conn     *grpc.ClientConn // to the next rank: its link, and a farewell to it
	laneLis  net.Listener     // nil when chunks go on the gRPC streams
}

// node is who this rank is and how it reaches its neighbours. Join fills
// it in before anything starts and nothing changes it afterwards, so both
// halves read it without a lock.
type node struct {
	id          hello // this rank's identity
	rank, world int
	next, prev  int
	addrs       []string
	tune        grpcTuning
	chunkBytes  int
	logf        func(string, ...any)
	allow       *allowList // the job's addresses: handshakes and lane connections are checked against it (it locks itself)
	localIP     net.IP     // bind outgoing connections here (loopback runs only)
	finalWait   time.Duration
	peerTimeout time.Duration // how long a peer may be silent: the keepalive's bound too
}

// dataPath is the half of the transport the Group's messages use: the
// link to each neighbour and the Group's placement. Its links are set once
// each by rendezvous (under rv.mu, so that shutdown finds every link that
// exists) and read here without a lock.
type dataPath struct {
	out     atomic.Pointer[outLink] // to next, set once connected
	in      atomic.Pointer[inLink]  // from prev, set once accepted
	inReady chan struct{}           // closed once in is set (or its handshake failed): Recv waits for it

	placement atomic.Pointer[func(h *distributed.Message, n int) []byte] // the Group's (distributed.Placer), for lane readers
}

// link is what both directions of a stream have: the peer, the data lane,
// and how the link ends (die: once, with the error every later call
// returns).
type link struct {
	peer int
	lane net.Conn // the data lane, if any; set before the link is used
	dead chan struct{}
	once sync.Once
	err  error
	stop context.CancelFunc // out-link: ends the stream
}

// outLink is the link to the next rank: the writer's queues (urgent ahead
// of data), and drain asks the writer to flush and half-close; finished
// closes when the receiver has ended the stream.
type outLink struct {
	link
	ch        chan queued
	urgent    chan distributed.Message // aborts and waiting notices, sent ahead of data
	drain     chan struct{}
	drainOnce sync.Once
	finished  chan struct{}
}

// queued is an entry of an out-link's data queue: a message, or a flush
// marker (no message) that the writer closes once it reaches it.
type queued struct {
	m       distributed.Message
	flushed chan struct{}
}

// inLink is the link from the previous rank: ch feeds Recv; up carries an
// abort the handler sends upstream (the Group failed); leave carries the
// reason the handler reports upstream as it ends; served closes when the
// handler has returned.
type inLink struct {
	link
	ch     chan distributed.Message
	up     chan distributed.Message
	leave  chan error
	served chan struct{}
}

func newLink(peer int) link { return link{peer: peer, dead: make(chan struct{})} }

func newOutLink(peer, queue int) *outLink {
	return &outLink{link: newLink(peer), ch: make(chan queued, queue), urgent: make(chan distributed.Message, 4),
		drain: make(chan struct{}), finished: make(chan struct{})}
}

func newInLink(peer, queue int) *inLink {
	return &inLink{link: newLink(peer), ch: make(chan distributed.Message, queue),
		up: make(chan distributed.Message, 1), leave: make(chan error, 1), served: make(chan struct{})}
}

// deliver queues an in-link message for Recv; false once the link or
// ctx has ended.
func (l *inLink) deliver(ctx context.Context, m distributed.Message) bool {
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

func (t *grpcTransport) serverOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(frameCodec{}),
		grpc.MaxRecvMsgSize(max(4<<20, t.chunkBytes+headerSize+1024)),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: serverPingEvery, Timeout: pingTimeout(t.peerTimeout)}),
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
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: clientPingEvery, Timeout: pingTimeout(t.peerTimeout), PermitWithoutStream: true}),
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
	t.accepted = &trackingListener{Listener: lis, conns: map[net.Conn]struct{}{}}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		if err := t.srv.Serve(t.accepted); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
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

// writeLoop is the only goroutine that calls SendMsg on the out stream.
func (t *grpcTransport) writeLoop(l *outLink, stream grpc.ClientStream) {
	defer t.wg.Done()
	send := func(q queued) bool {
		if q.flushed != nil { // everything queued before it is written
			close(q.flushed)
			return true
		}
		m := q.m
		if l.lane != nil && m.Kind.IsData() {
			err := writeLaneFrame(l.lane, &m)
			if err == nil {
				if !m.Borrowed {
					distributed.ReleasePayload(m.Payload) // written: the socket has its bytes
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
		m.Own() // grpc-go writes later, from its own goroutine
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
	pop := func() (queued, bool) { // urgent first
		select {
		case m := <-l.urgent:
			return queued{m: m}, true
		default:
		}
		select {
		case q := <-l.ch:
			return q, true
		default:
			return queued{}, false
		}
	}
	for {
		if q, ok := pop(); ok {
			if !send(q) {
				return
			}
			continue
		}
		select {
		case m := <-l.urgent:
			if !send(queued{m: m}) {
				return
			}
		case q := <-l.ch:
			if !send(q) {
				return
			}
		case <-l.drain: // Close: flush what is queued, then half-close
			for {
				q, ok := pop()
				if !ok {
					if tc, isTCP := l.lane.(*net.TCPConn); isTCP {
						tc.CloseWrite() // after the data, so the receiver reads it all
					}
					stream.CloseSend()
					return
				}
				if !send(q) {
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
func (t *grpcTransport) watchLoop(l *outLink, stream grpc.ClientStream) {
	defer t.wg.Done()
	defer close(l.finished)
	var m distributed.Message
	err := stream.RecvMsg(&m)
	var reason error
	st, isStatus := status.FromError(err)
	switch {
	case err == nil && m.Kind == distributed.KindAbort:
		lost, rf := distributed.ParseAbort(m, l.peer)
		reason = &distributed.AbortError{Lost: lost, Report: rf}
		t.rv.markKnows(l.peer)
	case err == nil:
		reason = errors.New("unexpected message from the receiver")
	case err == io.EOF:
		reason = errors.New("the receiver closed the link")
	case isStatus && (st.Code() == codes.FailedPrecondition || st.Code() == codes.Aborted):
		reason = &distributed.RemoteFailure{ReportedBy: l.peer, Text: st.Message(), Mismatch: st.Code() == codes.FailedPrecondition}
		t.rv.markKnows(l.peer)
	default:
		reason = fmt.Errorf("connection lost: %w", err)
	}
	l.die(reason)
	t.postFatal(l.peer, reason)
}

// Send implements distributed.Transport: it queues m for the next rank's
// writer (aborts and waiting notices ahead of data).
func (t *grpcTransport) Send(ctx context.Context, to int, m distributed.Message) error {
	if t.closing.Load() {
		return distributed.ErrClosed
	}
	l := t.data.out.Load()
	if to != t.next || l == nil {
		return fmt.Errorf("no link from rank %d to rank %d", t.rank, to)
	}
	if l.isDead() {
		return l.err
	}
	if m.Kind == distributed.KindAbort || m.Kind == distributed.KindWaiting {
		select {
		case l.urgent <- m:
			return nil
		default:
		}
		if m.Kind == distributed.KindWaiting {
			return nil // a hint; the next one will do
		}
		select {
		case l.urgent <- m:
			return nil
		case <-l.dead:
			return l.err
		case <-ctx.Done():
			return ctx.Err()
		case <-t.ctx.Done():
			return distributed.ErrClosed
		}
	}
	select {
	case l.ch <- queued{m: m}:
		return nil
	case <-l.dead:
		return l.err
	case <-ctx.Done():
		return ctx.Err()
	case <-t.ctx.Done():
		return distributed.ErrClosed
	}
}

// Flush implements distributed.Flusher: it returns once the out-link's
// writer has handed every message queued so far to the socket (or to
// grpc-go, as a copy), so Borrowed payloads are no longer read.
func (t *grpcTransport) Flush(ctx context.Context, to int) error {
	l := t.data.out.Load()
	if to != t.next || l == nil {
		return fmt.Errorf("no link from rank %d to rank %d", t.rank, to)
	}
	done := make(chan struct{})
	select {
	case l.ch <- queued{flushed: done}:
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

// SetPlacement implements distributed.Placer: lane readers ask place where
// a payload goes (readLane).
func (t *grpcTransport) SetPlacement(place func(h *distributed.Message, n int) []byte) {
	t.data.placement.Store(&place)
}

// Recv implements distributed.Transport: the next message from the
// previous rank, once its link exists.
func (t *grpcTransport) Recv(ctx context.Context, from int) (distributed.Message, error) {
	if from != t.prev {
		return distributed.Message{}, fmt.Errorf("no link from rank %d to rank %d", from, t.rank)
	}
	select {
	case <-t.data.inReady:
	case <-ctx.Done():
		return distributed.Message{}, ctx.Err()
	case <-t.ctx.Done():
		return distributed.Message{}, distributed.ErrClosed
	}
	l := t.data.in.Load()
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
		return distributed.Message{}, l.err
	case <-ctx.Done():
		return distributed.Message{}, ctx.Err()
	case <-t.ctx.Done():
		return distributed.Message{}, distributed.ErrClosed
	}
}

// serveLink runs for the predecessor's stream: rendezvous accepts it
// (address, identity, reply, lane: acceptLink), then the data path moves
// its frames into the in-link queue until the stream ends or this rank
// leaves (then the status tells the sender why).
func (t *grpcTransport) serveLink(stream grpc.ServerStream) error {
	l := newInLink(t.prev, t.tune.queue)
	defer close(l.served)
	if linked, err := t.acceptLink(stream, l); !linked {
		return err
	}
	return t.serveData(stream, l)
}

// serveData is the in-link's life once accepted: a reader per path (the
// lane, if any, and the stream) delivers frames to Recv, and the handler
// sends upstream what the Group or a leaving host has to say.
func (t *grpcTransport) serveData(stream grpc.ServerStream, l *inLink) error {
	ctx := stream.Context()
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
			var m distributed.Message
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
			if m.Kind == distributed.KindAbort {
				t.rv.markKnows(t.prev)
				t.postFatal(t.prev, decodeAbort(m))
			}
			if !l.deliver(ctx, m) {
				return
			}
		}
	}()
	send := func(m distributed.Message) {
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
			l.die(distributed.ErrClosed)
			if reason == nil {
				return nil
			}
			return reasonStatus(t.rank, reason)
		case <-t.ctx.Done():
			l.die(distributed.ErrClosed)
			return status.Errorf(codes.Unavailable, "rank %d is shutting down", t.rank)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// AbortUpstream implements distributed.UpstreamAborter: it queues an abort
// for the previous rank, which reads it as the end of its link to us (see
// watchLoop); the first one counts.
func (t *grpcTransport) AbortUpstream(m distributed.Message) {
	l := t.data.in.Load()
	if l == nil {
		return
	}
	select {
	case l.up <- m:
	default:
	}
}

// Close leaves gracefully: queued frames are flushed to the next rank and
// the previous rank is told the link ends, then everything stops and every
// goroutine has returned. Idempotent.
//
// A host other than rank 0 then waits for rank 0 to finish the job (the
// final barrier, Config.FinalWait); Close returns an error when rank 0 was
// lost meanwhile: the job's model and outputs may not be written.
func (t *grpcTransport) Close() error {
	t.closeOnce.Do(func() { t.shutdown(nil) })
	return t.finalErr
}

// SkipFinalWait tells a closing host not to wait for rank 0 at the final
// barrier: the job already failed on rank 0's loss, and a frozen rank 0
// would hold the wait for a connection timeout.
func (t *grpcTransport) SkipFinalWait() { t.skipFinal.Store(true) }

// Failed tells rank 0's transport that the job failed there (after
// training: writing the model, say), so that the hosts waiting at the final
// barrier fail too, with the reason, instead of ending as if it had
// succeeded. Call it before Close.
func (t *grpcTransport) Failed(reason error) { t.failed.Store(&reason) }

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
	// The final barrier's wait for rank 0 starts first, beside the ring's
	// teardown (up to closeGrace): a rank 0 that failed and closed
	// meanwhile refused it, which read as rank 0 done.
	var final chan error
	if reason == nil && t.rank != 0 && t.finalWait > 0 && t.rv.joined.Load() && !t.skipFinal.Load() {
		final = make(chan error, 1)
		go func() { final <- t.awaitRank0() }()
	}
	grace := closeGrace
	if reason != nil {
		grace = leaveGrace
	}
	dctx, dcancel := context.WithTimeout(context.Background(), grace)
	defer dcancel()
	t.rv.mu.Lock()
	t.closing.Store(true)
	t.rv.leaveWhy = reason
	in, out := t.data.in.Load(), t.data.out.Load()
	t.rv.mu.Unlock()
	close(t.rv.leaving)
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
	if reason != nil && !t.rv.joined.Load() {
		linked := func(r int) bool { return out != nil && out.peer == r || in != nil && in.peer == r }
		var wg sync.WaitGroup
		for _, r := range []int{t.next, t.prev} {
			if linked(r) || t.rv.knows[r].Load() || r == t.prev && t.prev == t.next {
				continue
			}
			wg.Go(func() { t.farewell(dctx, r, reason) })
		}
		wg.Wait()
	}
	t.cancel()
	if in != nil {
		in.die(distributed.ErrClosed)
	}
	if out != nil {
		out.die(distributed.ErrClosed)
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
			// A connection still in its HTTP/2 handshake (a stranger that
			// connected and said nothing) would hold Stop until grpc-go's
			// 120 s handshake limit: close every accepted socket first.
			t.accepted.closeAll()
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
	if final != nil {
		t.finalErr = <-final
	}
}

// trackingListener remembers the connections it accepted until they are
// closed, so shutdown can close those grpc-go still waits on.
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns[tc] = struct{}{}
	l.mu.Unlock()
	return tc, nil
}

// closeAll closes every accepted connection still open.
func (l *trackingListener) closeAll() {
	l.mu.Lock()
	conns := make([]net.Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

type trackedConn struct {
	net.Conn
	l    *trackingListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
