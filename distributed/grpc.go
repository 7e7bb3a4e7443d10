package distributed

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
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
// as is (no copy on send) and copies it once on receive into a buffer the
// Group then owns.
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
	return mem.BufferSlice{hdr, mem.SliceBuffer(m.Payload)}, nil
}

func (frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*Message)
	if !ok {
		return fmt.Errorf("frame codec cannot unmarshal into %T", v)
	}
	b := make([]byte, data.Len()) // fresh, so 8-byte aligned: payload at offset 48 can be viewed as floats
	data.CopyTo(b)
	return decodeFrame(b, m)
}

// grpcTuning holds the transport knobs; zero values take the defaults
// below. Benchmarks set them; the package does not export them.
type grpcTuning struct {
	streamWindow, connWindow int32 // flow-control windows; both 0 here means the defaults below
	writeBuf, readBuf        int   // socket-side buffers; 0: defaultIOBuffer
	queue                    int   // messages buffered per link in our own queues
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
	giveUp  atomic.Bool // Join failed: finish the attempt in flight, start no other

	srv  *grpc.Server
	lis  net.Listener
	conn *grpc.ClientConn

	mu      sync.Mutex
	out     *link // to next, set once connected
	in      *link // from prev, set once accepted
	inReady chan struct{}
	fatal   chan error // why rendezvous cannot succeed, from a neighbour

	closeOnce sync.Once
}

// link is one direction of one stream.
type link struct {
	peer int
	ch   chan Message
	dead chan struct{}
	once sync.Once
	err  error

	// out-link: stop ends the stream; drain asks the writer to flush and
	// half-close; finished closes when the receiver has ended the stream.
	stop      context.CancelFunc
	drain     chan struct{}
	drainOnce sync.Once
	finished  chan struct{}

	// in-link: leave carries the reason the handler reports upstream;
	// served closes when the handler has returned.
	leave  chan error
	served chan struct{}
}

func newLink(peer, queue int) *link {
	return &link{peer: peer, ch: make(chan Message, queue), dead: make(chan struct{}),
		drain: make(chan struct{}), finished: make(chan struct{}),
		leave: make(chan error, 1), served: make(chan struct{})}
}

func (l *link) die(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.dead)
		if l.stop != nil {
			l.stop()
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

// postFatal tells a Join in progress that it cannot succeed.
func (t *grpcTransport) postFatal(err error) {
	if t.joined.Load() || t.closing.Load() {
		return
	}
	select {
	case t.fatal <- err:
	default:
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
		var mm *MismatchError
		if errors.As(err, &mm) {
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
	if err := stream.SendMsg(t.id.message(t.next)); err != nil && err != io.EOF {
		return err // io.EOF: the server ended the stream; RecvMsg has its status
	}
	var ack Message
	if err := stream.RecvMsg(&ack); err != nil {
		if st, isStatus := status.FromError(err); isStatus && st.Code() == codes.FailedPrecondition {
			return &MismatchError{Text: st.Message()}
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
	mu.Lock()
	settled = true
	mu.Unlock()
	if err := streamCtx.Err(); err != nil {
		return err
	}
	ok = true
	l := newLink(t.next, t.tune.queue)
	l.stop = stop
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
	for {
		select {
		case m := <-l.ch:
			if !send(m) {
				return
			}
		case <-l.drain: // Close: flush what is queued, then half-close
			for {
				select {
				case m := <-l.ch:
					if !send(m) {
						return
					}
				default:
					stream.CloseSend()
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
// after the handshake: it returns when the receiver ends the stream (its
// status says why) or the connection breaks, so the next Send fails at
// once instead of at a timeout.
func (t *grpcTransport) watchLoop(l *link, stream grpc.ClientStream) {
	defer t.wg.Done()
	defer close(l.finished)
	var m Message
	err := stream.RecvMsg(&m)
	var reason error
	st, isStatus := status.FromError(err)
	switch {
	case err == nil:
		reason = errors.New("unexpected message from the receiver")
	case err == io.EOF:
		reason = errors.New("the receiver closed the link")
	case isStatus && (st.Code() == codes.FailedPrecondition || st.Code() == codes.Aborted):
		reason = &RemoteFailure{ReportedBy: l.peer, Text: st.Message(), Mismatch: st.Code() == codes.FailedPrecondition}
	default:
		reason = fmt.Errorf("connection lost: %w", err)
	}
	l.die(reason)
	t.postFatal(reason)
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
	select {
	case l.ch <- m:
		return nil
	case <-l.dead:
		return l.err
	case <-ctx.Done():
		return ctx.Err()
	case <-t.ctx.Done():
		return ErrClosed
	}
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
	if err := t.id.check(remote, t.prev); err != nil {
		t.postFatal(err)
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	l := newLink(t.prev, t.tune.queue)
	defer close(l.served)
	t.mu.Lock()
	if t.in != nil || t.closing.Load() {
		t.mu.Unlock()
		return status.Errorf(codes.AlreadyExists, "rank %d is already connected; links are not re-established", t.prev)
	}
	t.in = l
	t.mu.Unlock()
	if err := stream.SendMsg(t.id.message(t.prev)); err != nil {
		l.die(fmt.Errorf("handshake reply failed: %w", err))
		t.postFatal(l.err)
		close(t.inReady)
		return err
	}
	close(t.inReady)

	readerDone := make(chan struct{})
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		defer close(readerDone)
		for {
			var m Message
			if err := stream.RecvMsg(&m); err != nil {
				switch {
				case err == io.EOF:
					l.die(errors.New("the sender closed the link"))
				case status.Code(err) == codes.Canceled && t.ctx.Err() == nil:
					// How grpc-go reports a client connection that broke.
					l.die(fmt.Errorf("connection lost (the sender crashed or the network failed): %w", err))
				default:
					l.die(fmt.Errorf("connection lost: %w", err))
				}
				t.postFatal(l.err)
				return
			}
			if m.Kind == kindAbort {
				t.postFatal(decodeAbort(m))
			}
			select {
			case l.ch <- m:
			case <-l.dead:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	select {
	case <-readerDone:
		return nil
	case reason := <-l.leave:
		l.die(ErrClosed)
		var rf *RemoteFailure
		var mm *MismatchError
		switch {
		case reason == nil:
			return nil
		case errors.As(reason, &rf):
			if rf.Mismatch {
				return status.Error(codes.FailedPrecondition, rf.Text)
			}
			return status.Error(codes.Aborted, rf.Text)
		case errors.As(reason, &mm):
			return status.Error(codes.FailedPrecondition, mm.Text)
		default:
			return status.Error(codes.Aborted, reason.Error())
		}
	case <-t.ctx.Done():
		l.die(ErrClosed)
		return status.Errorf(codes.Unavailable, "rank %d is shutting down", t.rank)
	}
}

// decodeAbort reads an abort frame that arrived during rendezvous.
func decodeAbort(m Message) error {
	rf := &RemoteFailure{ReportedBy: m.From, Text: "gave up"}
	if len(m.Payload) >= 12 {
		rf.ReportedBy = int(int32(binary.LittleEndian.Uint32(m.Payload[4:])))
		rf.Mismatch = m.Payload[8] == 1
		rf.Text = string(m.Payload[12:])
	}
	return rf
}

// Close leaves gracefully: queued frames are flushed to the next rank and
// the previous rank is told the link ends, then everything stops and every
// goroutine has returned. Idempotent.
func (t *grpcTransport) Close() error {
	t.closeOnce.Do(func() { t.shutdown(nil) })
	return nil
}

// leave is Close with a reason that both neighbours receive: the next rank
// as an abort frame, the previous one as the stream's status.
func (t *grpcTransport) leave(reason error) {
	t.closeOnce.Do(func() { t.shutdown(reason) })
}

func (t *grpcTransport) shutdown(reason error) {
	t.closing.Store(true)
	deadline := time.After(closeGrace)
	t.mu.Lock()
	in, out := t.in, t.out
	t.mu.Unlock()
	if out != nil {
		if reason != nil {
			lost, origin, mismatch, text := t.rank, t.rank, false, reason.Error()
			var rf *RemoteFailure
			var mm *MismatchError
			if errors.As(reason, &rf) {
				origin, mismatch, text = rf.ReportedBy, rf.Mismatch, rf.Text
			} else if errors.As(reason, &mm) {
				mismatch, text = true, mm.Text
			}
			select {
			case out.ch <- Message{From: t.rank, To: t.next, Kind: kindAbort, Payload: abortPayload(lost, origin, mismatch, text)}:
			default:
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
		case <-deadline:
		}
	}
	if in != nil {
		select {
		case <-in.served:
		case <-deadline:
		}
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
	if t.conn != nil {
		t.conn.Close()
	}
	t.wg.Wait()
}
