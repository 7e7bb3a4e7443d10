package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sagefit/sagefit/distributed"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// rendezvous is the half of the transport that only joining uses: the
// connection attempts to the next rank, the handshake slot for the
// previous one and its data lane, why the join cannot succeed, and which
// neighbour already knows it. Once Join has returned, nothing here
// changes but at Close.
type rendezvous struct {
	joined  atomic.Bool   // Join succeeded: from now on the Group reports failures
	giveUp  atomic.Bool   // Join failed: finish the attempt in flight, start no other
	stopped chan struct{} // closed with giveUp, to cut a backoff sleep short
	stopOne sync.Once

	// mu guards the handshake slot and the hand-over of each link to the
	// data path (dataPath.in and .out are stored under mu, so that
	// shutdown, which reads them under mu, finds every link there is), and
	// leaveWhy, set with grpcTransport.closing.
	mu sync.Mutex
	// A handshake with the previous rank is waiting for its lane: no other
	// may start, and laneToken is the token that handshake gave out;
	// laneConns hands it the lane connection that presents it.
	inPending bool
	laneToken string
	laneConns chan net.Conn
	leaveWhy  error         // set when this host leaves with a reason
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
}

func newRendezvous(world int) rendezvous {
	return rendezvous{stopped: make(chan struct{}), leaving: make(chan struct{}),
		fatal: make(chan struct{}, 1), knows: make([]atomic.Bool, world)}
}

// stopConnecting lets the connection attempt in flight finish and starts no
// other.
func (rv *rendezvous) stopConnecting() {
	rv.stopOne.Do(func() {
		rv.giveUp.Store(true)
		close(rv.stopped)
	})
}

// postFatal tells a Join in progress that it cannot succeed, and why; peer
// is the neighbour concerned. A reason (mismatch, or relayed from another
// host) replaces a bare connection loss, never the other way round. The
// data path calls it too, for a link that breaks: it counts only while
// joining.
func (t *grpcTransport) postFatal(peer int, err error) {
	if t.rv.joined.Load() || t.closing.Load() {
		return
	}
	rv := &t.rv
	rv.fatalMu.Lock()
	if rv.fatalErr == nil || !isReason(rv.fatalErr) && isReason(err) {
		rv.fatalErr, rv.fatalPeer = err, peer
		select {
		case rv.fatal <- struct{}{}:
		default:
		}
	}
	rv.fatalMu.Unlock()
}

func (rv *rendezvous) fatalReason() (int, error) {
	rv.fatalMu.Lock()
	defer rv.fatalMu.Unlock()
	return rv.fatalPeer, rv.fatalErr
}

func (rv *rendezvous) markKnows(rank int) {
	if rank >= 0 && rank < len(rv.knows) {
		rv.knows[rank].Store(true)
	}
}

// isReason tells a failure that explains itself (a disagreement, or one
// another host reported) from a bare connection loss.
func isReason(err error) bool {
	var mm *distributed.MismatchError
	var rf *distributed.RemoteFailure
	return errors.As(err, &mm) || errors.As(err, &rf)
}

// reasonParts is what travels in abort frames, farewells and statuses.
func reasonParts(self int, reason error) (origin int, mismatch bool, text string) {
	var rf *distributed.RemoteFailure
	var mm *distributed.MismatchError
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

func (t *grpcTransport) abortFrame(to int, reason error) distributed.Message {
	origin, mismatch, text := reasonParts(t.rank, reason)
	return distributed.NewAbort(t.rank, to, t.rank, &distributed.RemoteFailure{ReportedBy: origin, Mismatch: mismatch, Text: text})
}

// decodeAbort reads an abort frame that arrived during rendezvous.
func decodeAbort(m distributed.Message) error {
	_, rf := distributed.ParseAbort(m, m.From)
	return rf
}

func (n *node) rankOf(host string) int { return slices.Index(n.id.Hosts, host) }

// checkHello is hello.check (want: the peer's rank) that also logs both
// host lists in full when they differ: the sentence abbreviates them.
func (n *node) checkHello(r hello, want int) error {
	err := n.id.check(r, want)
	if err != nil && !slices.Equal(r.Hosts, n.id.Hosts) {
		n.logf("distributed: rank %d: host %s has %d hosts: %s", n.rank, r.Host, len(r.Hosts), strings.Join(r.Hosts, " "))
		n.logf("distributed: rank %d: this host (%s) has %d hosts: %s", n.rank, n.id.Host, len(n.id.Hosts), strings.Join(n.id.Hosts, " "))
	}
	return err
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
		if t.rv.giveUp.Load() {
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
			if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("joining was cancelled: %w (last attempt: %v)", ctx.Err(), lastErr)
			}
			return fmt.Errorf("no handshake within the connect timeout: %w (last attempt: %v)", ctx.Err(), lastErr)
		case <-t.ctx.Done():
			timer.Stop()
			return distributed.ErrClosed
		case <-t.rv.stopped:
			timer.Stop()
			return err
		case <-timer.C:
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// tryConnect makes one attempt: open the stream, shake hands, open the
// lane the reply offers, and hand the link to the data path.
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
	var ack distributed.Message
	if err := stream.RecvMsg(&ack); err != nil {
		if st, isStatus := status.FromError(err); isStatus {
			switch st.Code() {
			case codes.FailedPrecondition: // it saw the mismatch itself
				t.rv.markKnows(t.next)
				return &distributed.MismatchError{Text: st.Message()}
			case codes.Aborted: // it is leaving, and says why
				t.rv.markKnows(t.next)
				return &distributed.RemoteFailure{ReportedBy: t.next, Text: st.Message()}
			}
		}
		return err
	}
	remote, err := parseHello(ack)
	if err != nil {
		return err
	}
	if err := t.checkHello(remote, t.next); err != nil {
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
	l := newOutLink(t.next, t.tune.queue)
	l.stop = stop
	l.lane = lane
	t.rv.mu.Lock()
	t.data.out.Store(l)
	t.rv.mu.Unlock()
	t.wg.Add(2)
	go t.writeLoop(l, stream)
	go t.watchLoop(l, stream)
	return nil
}

// acceptLink is the rendezvous side of serveLink: check where the
// predecessor's stream comes from, check who it is, reply, wait for its
// lane, and hand l (with its lane) to the data path. linked is false when
// the stream ends here, with err as its status (nil: a farewell received).
func (t *grpcTransport) acceptLink(stream grpc.ServerStream, l *inLink) (linked bool, err error) {
	ctx := stream.Context()
	remoteAddr := "unknown address"
	if p, ok := peer.FromContext(ctx); ok {
		remoteAddr = p.Addr.String()
		if !t.allow.allows(ctx, p.Addr) {
			t.logf("distributed: rank %d: refused connection from %s: not an address of any host in job %q", t.rank, remoteAddr, t.id.Job)
			return false, status.Errorf(codes.PermissionDenied, "connection from %s refused: not an address of any host in job %q", remoteAddr, t.id.Job)
		}
	}
	first := make(chan error, 1)
	var hm distributed.Message
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
			return false, status.Errorf(codes.InvalidArgument, "expected a handshake: %v", err)
		}
	case <-timer.C:
		return false, status.Error(codes.DeadlineExceeded, "no handshake within 10s")
	case <-t.ctx.Done():
		// A host's final wait among them (its hello unread): rank 0's
		// failure is its answer, which a refusal would not carry.
		if why := t.failed.Load(); why != nil {
			return false, status.Error(codes.Aborted, (*why).Error())
		}
		return false, status.Error(codes.Unavailable, "shutting down")
	}
	remote, err := parseHello(hm)
	if err != nil {
		return false, status.Errorf(codes.PermissionDenied, "connection from %s refused: %v", remoteAddr, err)
	}
	if remote.Job != t.id.Job {
		t.logf("distributed: rank %d: refused %s from %s: job %q, not %q", t.rank, remote.Host, remoteAddr, remote.Job, t.id.Job)
		return false, status.Errorf(codes.PermissionDenied, "connection from %s (host %q of job %q) refused: this is job %q", remoteAddr, remote.Host, remote.Job, t.id.Job)
	}
	if remote.Leave != nil {
		// A host of this job that is not joining after all tells us why
		// (it may disagree with us: only the job is checked). Returning
		// OK is the receipt it waits for.
		t.rv.markKnows(t.rankOf(remote.Host))
		t.postFatal(t.prev, remote.Leave.failure())
		return false, nil
	}
	if remote.Linger {
		return false, t.serveLinger(ctx, remote)
	}
	// A host leaving with a reason (Decline: it failed before it joined)
	// gives it to whoever comes, before checking them: its own hello lacks
	// what the check compares (the model's fingerprint, where the model
	// did not load), and a mismatch would have gone round the ring instead.
	t.rv.mu.Lock()
	closing, why := t.closing.Load(), t.rv.leaveWhy
	t.rv.mu.Unlock()
	if closing && why != nil {
		t.rv.markKnows(t.rankOf(remote.Host))
		return false, reasonStatus(t.rank, why)
	}
	if err := t.checkHello(remote, t.prev); err != nil {
		t.rv.markKnows(t.rankOf(remote.Host))
		t.postFatal(t.prev, err)
		return false, status.Error(codes.FailedPrecondition, err.Error())
	}
	rv := &t.rv
	rv.mu.Lock()
	if t.closing.Load() {
		why := rv.leaveWhy
		rv.mu.Unlock()
		if why == nil {
			return false, status.Errorf(codes.Unavailable, "rank %d is shutting down", t.rank)
		}
		// Leaving with a reason: whoever comes late still gets it.
		rv.markKnows(t.rankOf(remote.Host))
		return false, reasonStatus(t.rank, why)
	}
	if t.data.in.Load() != nil {
		rv.mu.Unlock()
		return false, status.Errorf(codes.AlreadyExists, "rank %d is already connected; links are not re-established", t.prev)
	}
	if rv.inPending {
		rv.mu.Unlock()
		return false, status.Errorf(codes.Unavailable, "rank %d is finishing another handshake", t.prev)
	}
	reply := t.id
	if t.laneLis != nil && !remote.NoLane {
		// The link exists once its lane does; until then a failed attempt
		// leaves nothing behind and the sender simply tries again.
		rv.inPending = true
		reply.Lane = t.offerLane()
	} else {
		t.data.in.Store(l)
	}
	rv.mu.Unlock()
	if err := stream.SendMsg(reply.message(t.prev)); err != nil {
		if reply.Lane != nil {
			rv.mu.Lock()
			rv.endLaneWait()
			rv.mu.Unlock()
			return false, err
		}
		l.die(fmt.Errorf("handshake reply failed: %w", err))
		t.postFatal(t.prev, l.err)
		close(t.data.inReady)
		return false, err
	}
	if reply.Lane != nil {
		lane, err := t.awaitLane(ctx)
		rv.mu.Lock()
		rv.endLaneWait()
		if err == nil && t.closing.Load() {
			lane.Close()
			err = distributed.ErrClosed
		}
		if err != nil {
			why := rv.leaveWhy
			rv.mu.Unlock()
			if why != nil { // left meanwhile: the sender still gets the reason
				rv.markKnows(t.rankOf(remote.Host))
				return false, reasonStatus(t.rank, why)
			}
			return false, status.Errorf(codes.Unavailable, "rank %d: %v", t.rank, err)
		}
		l.lane = lane
		t.data.in.Store(l)
		rv.mu.Unlock()
	}
	close(t.data.inReady)
	return true, nil
}

// farewell tells a neighbour this host never had a link with why it is not
// joining, over a stream of its own, until the neighbour acknowledges or ctx
// ends (it may still be booting). It reports whether the neighbour
// answered: it has the reason, or refused it, leaving with one of its own.
func (t *grpcTransport) farewell(ctx context.Context, peer int, reason error) (answered bool) {
	conn := t.conn
	if peer != t.next {
		c, err := grpc.NewClient("passthrough:///"+t.addrs[peer], t.dialOptions()...)
		if err != nil {
			return false
		}
		defer c.Close()
		conn = c
	}
	h := t.id
	origin, mismatch, text := reasonParts(t.rank, reason)
	h.Leave = &leaveNote{Origin: origin, Mismatch: mismatch, Text: text}
	for {
		if t.rv.knows[peer].Load() { // it told us meanwhile, or got our refusal
			return true
		}
		actx, cancel := context.WithTimeout(ctx, time.Second)
		err := sayFarewell(actx, conn, h, peer)
		cancel()
		if err == nil {
			t.rv.markKnows(peer)
			return true
		}
		if st, ok := status.FromError(err); ok && st.Code() != codes.Unavailable && st.Code() != codes.DeadlineExceeded && st.Code() != codes.Canceled {
			// It answered: refused, or it is leaving with a reason of its own.
			return true
		}
		select {
		case <-ctx.Done():
			t.logf("distributed: rank %d: could not tell rank %d (%s) why this host leaves: %v", t.rank, peer, t.addrs[peer], err)
			return false
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
	var m distributed.Message
	if err := stream.RecvMsg(&m); err != io.EOF {
		if err == nil {
			return status.Error(codes.Internal, "unexpected reply to a farewell")
		}
		return err
	}
	return nil
}
