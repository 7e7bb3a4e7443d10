package distributed

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Transport moves Messages between ranks. It is all the core needs from a
// network: the ring only ever sends to rank+1 and receives from rank-1.
// Implementations may drop, duplicate or reorder messages (the Group's link
// layer copes with the last two and turns the first into a timeout); they
// must be safe for one concurrent Send and Recv per peer.
//
// A transport may also implement the optional hooks below (Flusher,
// Placer, UpstreamAborter); the Group finds them by type assertion on the
// Transport it was given, so a wrapper hides them unless it implements
// them too.
type Transport interface {
	// Send hands m to the peer `to`; it takes ownership of m.Payload (see
	// Message) and returns once the message is queued or ctx is done.
	Send(ctx context.Context, to int, m Message) error
	// Recv returns the next message from `from`, and ownership of its payload.
	Recv(ctx context.Context, from int) (Message, error)
	// Close releases the transport; further calls fail. Idempotent.
	Close() error
}

// Flusher is implemented by a transport that may still read a Borrowed
// payload after Send returns (a socket writer that sends views of the
// caller's buffer without copying them).
//
// When: after a collective that sent at least one Borrowed message has
// succeeded, and before it returns, the Group calls Flush once for its
// successor (rank+1), the only peer the ring sends to, with the
// collective's remaining time in ctx.
//
// Guarantee: Flush returns nil only once every message Send accepted for
// `to` before the call has been handed to the operating system (or
// copied), so that no Borrowed payload among them is read any more: the
// caller may then overwrite its buffer. An error (the link broke, ctx
// ended) fails the collective and the Group. A transport that copies
// Borrowed payloads before Send returns (Message.Own) needs no Flusher.
type Flusher interface {
	Flush(ctx context.Context, to int) error
}

// Placer is implemented by a transport that can read a payload straight
// into the caller's buffer instead of into a buffer of its own: the
// all-gather's chunks then cost no copy after the socket read.
//
// When: NewGroup calls SetPlacement once, before any collective, with the
// Group's placement function. The transport may call place from any
// goroutine, at any time until the Group is closed, with the header of an
// incoming message (Payload still nil) and its payload's length n. place
// returns nil (the transport allocates with AllocPayload, as usual) or an
// n-byte chunk of the buffer of the collective in progress.
//
// Guarantee: a transport given a chunk reads the payload into all of it,
// then delivers the message through Recv with that very slice as its
// Payload, in its place in the link's order, and writes to it no more. The
// machine recognises its own chunk when the message arrives (no copy,
// nothing to release), and reads or writes that chunk only then, so
// nothing else touches it meanwhile. After a failed collective a read in flight may still land in
// the caller's buffer (whose contents are undefined then anyway) until the
// Group is closed.
type Placer interface {
	SetPlacement(place func(h *Message, n int) []byte)
}

// UpstreamAborter is implemented by a transport that can also carry an
// abort to the previous rank, against the data direction (the gRPC
// transport does, on the reverse direction of the previous rank's link).
//
// When: a Group that fails calls AbortUpstream once, with the abort it
// sends its predecessor (see NewAbort), unless the news came from there.
//
// Guarantee: fire and forget. AbortUpstream must not block; the transport
// delivers the abort if it can, and the predecessor's Send on that link
// then fails with an *AbortError naming the lost rank, so that rank blames
// the lost peer, not this one for going away.
type UpstreamAborter interface {
	AbortUpstream(m Message)
}

// DefaultOpTimeout bounds one collective: a peer that stays silent this long
// is reported as lost.
const DefaultOpTimeout = 60 * time.Second

// maxHeld bounds the messages kept back waiting for a gap in the sequence to
// fill; more means a message was lost, not merely late.
const maxHeld = 1 << 14

// Option configures a Group made with NewGroup.
type Option func(*options)

type options struct {
	chunkBytes  int
	compression Compression
	opTimeout   time.Duration
	peerNames   []string
	logf        func(format string, args ...any)
}

// WithChunkBytes sets the largest payload of one message (default
// DefaultChunkBytes). Every rank must use the same value.
func WithChunkBytes(n int) Option { return func(o *options) { o.chunkBytes = n } }

// WithCompression sets the wire format of float32 all-reduce (default
// NoCompression). Every rank must use the same value.
func WithCompression(c Compression) Option { return func(o *options) { o.compression = c } }

// WithOpTimeout bounds each collective (default DefaultOpTimeout); a context
// deadline that comes sooner wins.
func WithOpTimeout(d time.Duration) Option { return func(o *options) { o.opTimeout = d } }

// WithPeerNames gives each rank a name for error messages, such as
// "algo-2 at 10.0.0.2:7001".
func WithPeerNames(names []string) Option { return func(o *options) { o.peerNames = names } }

// WithLogf receives the group's rare log lines (failures, rendezvous
// progress). Default: discard.
func WithLogf(logf func(format string, args ...any)) Option {
	return func(o *options) { o.logf = logf }
}

// Stats counts what the link layer saw; tests use it to prove faults
// were injected and absorbed.
type Stats struct {
	Ops        uint64 // collectives started
	Duplicates uint64 // messages dropped as already seen
	OutOfOrder uint64 // messages held back until a gap filled
}

// Group runs collectives over a Transport. Every rank must call the same
// collectives in the same order with buffers of the same length; calls on
// one Group are serialised. After a failure the group is unusable: every
// later collective returns the first error (a lost peer cannot rejoin).
type Group struct {
	rank, world int
	tr          Transport
	o           options

	mu      sync.Mutex // serialises collectives and guards what follows
	op      uint64
	sendSeq []uint64  // last sequence number sent to each peer
	in      []inbound // receive state per peer
	broken  error     // sticky first failure
	aborted bool      // this rank has told its successor about the failure

	dups, ooo, ops atomic.Uint64

	placeMu sync.Mutex
	placing chunkPlacer // the collective in progress, if its machine can place payloads

	closeOnce sync.Once
	closeErr  error
	closed    atomic.Bool
}

// chunkPlacer is implemented by machines that know, from a header alone,
// where a payload belongs in the caller's buffer.
type chunkPlacer interface {
	place(h *Message, n int) []byte
}

type inbound struct {
	next uint64             // next sequence number to deliver
	held map[uint64]Message // arrived early, waiting for next
}

// NewGroup makes a Group for rank of world over tr. tr may be nil when world
// is 1: a single host needs no network.
func NewGroup(tr Transport, rank, world int, opts ...Option) (*Group, error) {
	o := options{opTimeout: DefaultOpTimeout, logf: func(string, ...any) {}}
	for _, f := range opts {
		f(&o)
	}
	if world < 1 || rank < 0 || rank >= world {
		return nil, fmt.Errorf("distributed: rank %d outside world of %d", rank, world)
	}
	if tr == nil && world > 1 {
		return nil, errors.New("distributed: a group of more than one rank needs a transport")
	}
	if o.opTimeout <= 0 {
		o.opTimeout = DefaultOpTimeout
	}
	if o.logf == nil {
		o.logf = func(string, ...any) {}
	}
	g := &Group{rank: rank, world: world, tr: tr, o: o,
		sendSeq: make([]uint64, world), in: make([]inbound, world)}
	for i := range g.in {
		g.in[i] = inbound{next: 1, held: map[uint64]Message{}}
	}
	if pt, ok := tr.(Placer); ok {
		pt.SetPlacement(g.place)
	}
	return g, nil
}

// Rank is this host's index in the host list.
func (g *Group) Rank() int { return g.rank }

// World is the number of hosts.
func (g *Group) World() int { return g.world }

// OpTimeout is the bound of the collectives that start from now on.
func (g *Group) OpTimeout() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.o.opTimeout
}

// SetOpTimeout changes the bound of the collectives that start from now on
// (see WithOpTimeout; d <= 0 means DefaultOpTimeout). It waits for a
// collective in progress to end, and returns the bound it replaces. Join
// uses it to give the barrier that ends rendezvous what is left of the
// connect timeout; the fit loop, to wait for a checkpoint's write or a
// late Pipe stream.
func (g *Group) SetOpTimeout(d time.Duration) (previous time.Duration) {
	if d <= 0 {
		d = DefaultOpTimeout
	}
	g.mu.Lock()
	previous, g.o.opTimeout = g.o.opTimeout, d
	g.mu.Unlock()
	return previous
}

// Stats returns link-layer counters.
func (g *Group) Stats() Stats {
	return Stats{Ops: g.ops.Load(), Duplicates: g.dups.Load(), OutOfOrder: g.ooo.Load()}
}

func (g *Group) cfg(op uint64) RingConfig {
	return RingConfig{Rank: g.rank, World: g.world, Op: op, ChunkBytes: g.o.chunkBytes, Compression: g.o.compression}
}

// AllReduce replaces buf, on every rank, with the element-wise Sum or Mean
// of all ranks' buf. Results are bit-identical on every rank and from run
// to run.
func (g *Group) AllReduce(ctx context.Context, buf []float32, op ReduceOp) error {
	return g.run(ctx, KindAllReduce, func(c RingConfig) (Machine, error) { return NewAllReduce(c, buf, op) })
}

// AllReduceFloat64 sums buf over all ranks in float64 (for metric state
// such as totals and counts).
func (g *Group) AllReduceFloat64(ctx context.Context, buf []float64) error {
	return g.run(ctx, KindAllReduceFloat64, func(c RingConfig) (Machine, error) {
		return NewAllReduceFloat64(c, buf, Sum)
	})
}

// Broadcast copies root's buf into every other rank's buf (for example the
// initial weights); all ranks pass buffers of the same length.
func (g *Group) Broadcast(ctx context.Context, buf []byte, root int) error {
	return g.run(ctx, KindBroadcast, func(c RingConfig) (Machine, error) { return NewBroadcast(c, buf, root) })
}

// Barrier returns once every rank has entered it.
func (g *Group) Barrier(ctx context.Context) error {
	return g.run(ctx, KindBarrier, NewBarrier)
}

// Close releases the transport. Idempotent; a collective running
// concurrently fails with an error.
func (g *Group) Close() error {
	g.closeOnce.Do(func() {
		g.closed.Store(true)
		var errs []error
		if g.tr != nil {
			errs = append(errs, g.tr.Close())
		}
		g.closeErr = errors.Join(errs...)
	})
	return g.closeErr
}

// SkipFinalWait tells a transport with a final barrier (a host other than
// rank 0 waits at Close for rank 0 to finish) not to wait: the job failed
// on rank 0's loss.
func (g *Group) SkipFinalWait() {
	if s, ok := g.tr.(interface{ SkipFinalWait() }); ok {
		s.SkipFinalWait()
	}
}

// Abandon tells the ring that this rank fails of its own (its input, its
// step), as a collective's failure is told: the abort with reason goes to
// the successor and, where the transport can, the predecessor, so the
// others' collectives fail naming this rank and the reason, not a link
// closed. Call it before Close. A failure the group already carries, or a
// collective still running, is left alone.
func (g *Group) Abandon(reason error) {
	if !g.mu.TryLock() {
		return
	}
	defer g.mu.Unlock()
	if g.broken == nil {
		g.fail(reason)
	}
}

// Failed tells a transport with a final barrier that the job failed on
// this rank (rank 0: the hosts waiting for it then fail with reason).
// Call it before Close.
func (g *Group) Failed(reason error) {
	if s, ok := g.tr.(interface{ Failed(error) }); ok {
		s.Failed(reason)
	}
}

// place tells a Placer transport where an incoming payload goes: a chunk
// of the caller's buffer when the message belongs to the collective in
// progress and its machine can say, else nil (the transport allocates).
// See Placer for what the transport guarantees in return.
func (g *Group) place(h *Message, n int) []byte {
	g.placeMu.Lock()
	defer g.placeMu.Unlock()
	if g.placing == nil {
		return nil
	}
	return g.placing.place(h, n)
}

func (g *Group) peerName(rank int) string {
	if rank >= 0 && rank < len(g.o.peerNames) {
		return g.o.peerNames[rank]
	}
	return ""
}

// errOpTimeout is the cause of a collective's context when its own bound
// (the op timeout), not the caller's context, ended it.
var errOpTimeout = errors.New("distributed: op timeout")

// run drives one collective: it starts the machine, feeds it messages from
// the link layer and sends what it produces from a separate goroutine, so
// that receiving never waits on sending (a ring where everyone blocks in Send
// would deadlock under flow control).
func (g *Group) run(ctx context.Context, kind Kind, build func(RingConfig) (Machine, error)) error {
	if g.closed.Load() {
		return ErrClosed
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.broken != nil {
		return fmt.Errorf("distributed: group unusable after an earlier failure: %w", g.broken)
	}
	g.op++
	g.ops.Add(1)
	m, err := build(g.cfg(g.op))
	if err != nil {
		g.op-- // nothing was sent: the ranks' counters still agree
		return err
	}
	desc := fmt.Sprintf("%s #%d", kind, g.op)
	out := m.Start()
	if m.Done() && len(out) == 0 {
		return nil
	}
	if pl, ok := m.(chunkPlacer); ok {
		g.placeMu.Lock()
		g.placing = pl
		g.placeMu.Unlock()
		defer func() {
			g.placeMu.Lock()
			g.placing = nil
			g.placeMu.Unlock()
		}()
	}
	start := time.Now()
	// runCtx lives until the collective ends or fails: the sender uses it,
	// so notices keep flowing while a timed-out rank decides whom to blame.
	// opCtx is the receive side's bound.
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	opCtx, cancelT := context.WithTimeoutCause(runCtx, g.o.opTimeout, errOpTimeout)
	defer cancelT()

	q := newMsgQueue()
	sendErr := make(chan error, 1)
	var borrowed atomic.Bool
	go func() { sendErr <- g.sendLoop(runCtx, cancel, q, desc, &borrowed) }()
	for _, msg := range out {
		q.push(msg)
	}

	ws := g.newWait(m.Waiting().From, start)
	defer ws.stop()
	var failure error
	for !m.Done() {
		want := m.Waiting()
		if want.From != ws.from { // not in a ring; the relay restarts for the new peer
			now := time.Now()
			ws.from, ws.lastHeard, ws.waitSince, ws.head = want.From, now, now, -1
		}
		in, err := g.recv(opCtx, ws, q)
		if err != nil {
			if errors.Is(context.Cause(opCtx), errOpTimeout) && ctx.Err() == nil {
				failure = g.verdict(runCtx, ws, q, desc, want, start)
			} else {
				failure = g.recvFailure(opCtx, ctx, desc, want, start, err)
			}
			break
		}
		if in.Kind == KindAbort {
			failure = g.abortFailure(desc, want, in)
			break
		}
		out, err := m.Step(in)
		if err != nil {
			failure = &PeerError{Rank: in.From, Peer: g.peerName(in.From), Op: desc, At: want.String(), Err: err}
			break
		}
		for _, msg := range out {
			q.push(msg)
		}
	}
	q.close()
	if failure != nil {
		cancel(failure)
	}
	if err := <-sendErr; err != nil && failure == nil {
		failure = err
	}
	if failure == nil && borrowed.Load() {
		// The transport may still be writing views of the caller's buffer.
		if f, ok := g.tr.(Flusher); ok {
			next := (g.rank + 1) % g.world
			if err := f.Flush(opCtx, next); err != nil {
				failure = &PeerError{Rank: next, Peer: g.peerName(next), Op: desc, At: "the end", Err: fmt.Errorf("send: %w", err)}
				if ctx.Err() != nil { // the caller gave up, not the peer
					failure = fmt.Errorf("distributed: %s: %w", desc, context.Cause(ctx))
				}
			}
		}
	}
	if failure == nil {
		return nil
	}
	g.fail(failure)
	return failure
}

func (g *Group) sendLoop(ctx context.Context, cancel context.CancelCauseFunc, q *msgQueue, desc string, borrowed *atomic.Bool) error {
	for {
		msg, ok := q.pop(ctx)
		if !ok {
			return nil // queue drained, or the op already failed
		}
		if msg.Kind == KindWaiting {
			// A hint, outside the sequence: losing one costs nothing, and a
			// successor that has already finished may be gone.
			_ = g.tr.Send(ctx, msg.To, msg)
			continue
		}
		g.sendSeq[msg.To]++
		msg.Seq = g.sendSeq[msg.To]
		if msg.Borrowed {
			borrowed.Store(true)
		}
		if err := g.tr.Send(ctx, msg.To, msg); err != nil {
			if ctx.Err() != nil {
				return nil // the receive side reports why the op ended
			}
			perr := &PeerError{Rank: msg.To, Peer: g.peerName(msg.To), Op: desc,
				At:  Position{Phase: msg.Phase, Step: int(msg.Step), Chunk: int(msg.Chunk)}.String(),
				Err: fmt.Errorf("send: %w", err)}
			var ae *AbortError
			if errors.As(err, &ae) && ae.Lost >= 0 && ae.Lost < g.world {
				perr.Rank, perr.Peer, perr.Err = ae.Lost, g.peerName(ae.Lost), ae.Report
			}
			cancel(perr)
			return perr
		}
	}
}

// The suspect relay. A rank that has waited a while on its predecessor
// tells its successor so, every relayEvery, with a "waiting" notice that
// names the head of the chain of waiting ranks: its predecessor if that
// one has been silent (no data, no notice) for relaySilence, else whatever
// head the predecessor's own latest notice named. A silent (stopped,
// partitioned, hung) rank sends nothing, so its successor names it and the
// name travels downstream hop by hop, while every rank in the chain proves
// by its notices that it is alive. When a rank's op timeout fires it names
// that head instead of its own innocent predecessor; if no head is known
// yet it waits (bounded) for one, for an abort, or for its predecessor to
// fall silent. Notices are unsequenced hints: a lost one is replaced by the
// next.
type relayTiming struct {
	every, silence, grace time.Duration
}

// relayTimingFor scales the relay with the op timeout: silence at a third
// of it (0.2-5 s), notices ten times as often, and up to two silences more
// to reach a verdict after the timeout.
func relayTimingFor(opTimeout time.Duration) relayTiming {
	s := min(max(opTimeout/3, 200*time.Millisecond), 5*time.Second)
	return relayTiming{every: s / 10, silence: s, grace: 2*s + s/5}
}

// waitState is what one collective knows about the peer it waits on.
type waitState struct {
	rt        relayTiming
	from      int       // the peer waited on
	lastHeard time.Time // last message of any kind from it in this op
	waitSince time.Time // last data message from it (or the op's start)

	head     int           // from its latest notice: where the chain of waiting ends; -1 unknown
	headBy   int           // the rank that saw head silent
	headFor  time.Duration // for how long, as that rank saw it
	sentHead int           // head named in our last notice; -2 before the first
	lastSent time.Time

	tickCtx    context.Context
	tickCancel context.CancelFunc
	tickAt     time.Time
}

func (g *Group) newWait(from int, start time.Time) *waitState {
	return &waitState{rt: relayTimingFor(g.o.opTimeout), from: from, lastHeard: start, waitSince: start,
		head: -1, headBy: -1, sentHead: -2, tickAt: start}
}

// tick returns a context that ends at the next notice tick (or with ctx).
// One context serves until it fires, so a busy link costs one per tick.
func (ws *waitState) tick(ctx context.Context) context.Context {
	if ws.tickCtx == nil {
		for !ws.tickAt.After(time.Now()) {
			ws.tickAt = ws.tickAt.Add(ws.rt.every)
		}
		ws.tickCtx, ws.tickCancel = context.WithDeadline(ctx, ws.tickAt)
	}
	return ws.tickCtx
}

func (ws *waitState) stop() {
	if ws.tickCancel != nil {
		ws.tickCancel()
		ws.tickCtx, ws.tickCancel = nil, nil
	}
}

// isTick reports whether a failed Recv only means the tick context ended.
func (ws *waitState) isTick(ctx context.Context, err error) bool {
	if ws.tickCtx == nil || ctx.Err() != nil || ws.tickCtx.Err() == nil || !errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	ws.stop()
	return true
}

// suspect is the head this rank would name now: its predecessor if silent,
// else the head its predecessor reported.
func (ws *waitState) suspect(now time.Time, self int) (head, by int, silent time.Duration) {
	if d := now.Sub(ws.lastHeard); d >= ws.rt.silence {
		return ws.from, self, d
	}
	return ws.head, ws.headBy, ws.headFor
}

// notify queues a waiting notice for the successor if this rank has waited
// at least one notice interval, and when due (an interval since the last,
// or the head changed).
func (g *Group) notify(q *msgQueue, ws *waitState, now time.Time) {
	if now.Sub(ws.waitSince) < ws.rt.every {
		return
	}
	head, by, silent := ws.suspect(now, g.rank)
	if head == ws.sentHead && now.Sub(ws.lastSent) < ws.rt.every {
		return
	}
	ws.sentHead, ws.lastSent = head, now
	p := make([]byte, 12)
	binary.LittleEndian.PutUint32(p, uint32(int32(head)))
	binary.LittleEndian.PutUint32(p[4:], uint32(int32(by)))
	binary.LittleEndian.PutUint32(p[8:], uint32(min(silent.Milliseconds(), math.MaxUint32)))
	next := (g.rank + 1) % g.world
	q.push(Message{From: g.rank, To: next, Op: g.op, Kind: KindWaiting, Enc: EncBytes, Payload: p})
}

// observe takes in a waiting notice from the peer waited on. Its op does
// not matter: a predecessor still stuck in the previous collective (it sent
// us all its data for that one, then waited on its own predecessor for the
// rest) is as alive, and its head as telling, as one in this collective. A
// notice that sat queued between collectives is older than it looks, but a
// stale head is replaced by the sender's next notice, and a sender that
// sends none falls silent soon after: silence is judged before heads.
func (g *Group) observe(q *msgQueue, ws *waitState, m Message, now time.Time) {
	if m.From != ws.from || len(m.Payload) < 12 {
		return
	}
	ws.lastHeard = now
	ws.head = int(int32(binary.LittleEndian.Uint32(m.Payload)))
	ws.headBy = int(int32(binary.LittleEndian.Uint32(m.Payload[4:])))
	ws.headFor = time.Duration(binary.LittleEndian.Uint32(m.Payload[8:])) * time.Millisecond
	if ws.head >= g.world || ws.head < -1 {
		ws.head = -1
	}
	if ws.head != ws.sentHead {
		g.notify(q, ws, now) // pass a new head on at once
	}
}

// recv returns the next in-sequence message from the peer waited on:
// duplicates are dropped, early messages held until the gap before them
// fills, waiting notices taken in. An abort is delivered at once, whatever
// its place.
func (g *Group) recv(ctx context.Context, ws *waitState, q *msgQueue) (Message, error) {
	l := &g.in[ws.from]
	for {
		if m, ok := l.held[l.next]; ok {
			delete(l.held, l.next)
			l.next++
			ws.waitSince, ws.head = time.Now(), -1
			return m, nil
		}
		m, err := g.tr.Recv(ws.tick(ctx), ws.from)
		now := time.Now()
		if err != nil {
			if ws.isTick(ctx, err) {
				g.notify(q, ws, now)
				continue
			}
			return Message{}, err
		}
		if m.Kind == KindWaiting {
			g.observe(q, ws, m, now)
			continue
		}
		ws.lastHeard = now
		switch {
		case m.Kind == KindAbort:
			return m, nil
		case m.Seq == l.next:
			l.next++
			ws.waitSince, ws.head = now, -1
			return m, nil
		case m.Seq < l.next:
			g.dups.Add(1)
		default:
			if _, dup := l.held[m.Seq]; dup {
				g.dups.Add(1)
				continue
			}
			if len(l.held) >= maxHeld {
				return Message{}, fmt.Errorf("message seq %d never arrived while %d later ones did", l.next, len(l.held))
			}
			l.held[m.Seq] = m
			g.ooo.Add(1)
		}
	}
}

// verdict decides whom a rank whose op timeout fired names. A lost message
// (later ones arrived) or a silent predecessor is named at once; so is the
// head of the chain of waiting ranks when the predecessor's notices name
// one. Otherwise the predecessor is alive but sends no data: wait, at most
// the relay's grace, for a head, an abort or for it to fall silent, and
// keep telling the successor that this rank is waiting meanwhile.
func (g *Group) verdict(ctx context.Context, ws *waitState, q *msgQueue, desc string, want Position, start time.Time) error {
	elapsed := time.Since(start).Round(time.Millisecond)
	blame := func(rank int, format string, args ...any) error {
		return &PeerError{Rank: rank, Peer: g.peerName(rank), Op: desc, At: want.String(),
			Err: fmt.Errorf(format+": %w", append(args, context.DeadlineExceeded)...)}
	}
	l := &g.in[ws.from]
	if len(l.held) > 0 {
		return blame(ws.from, "no message for %v: message seq %d was lost (%d later messages arrived)", elapsed, l.next, len(l.held))
	}
	until := time.Now().Add(ws.rt.grace)
	// What is queued already is read first: a rank that was itself paused
	// (CPU starved) as its timeout fired would find its predecessor silent
	// for the pause, its notices unread, and blame a live rank. A receive
	// may take a passed deadline over a queued message (a select chooses
	// at random), and a starved one may find its deadline passed: three
	// empty polls end the draining.
	drainPolls := 3
	for {
		now := time.Now()
		head, by, silent := ws.suspect(now, g.rank)
		switch {
		case drainPolls > 0:
		case head == ws.from && by == g.rank:
			if elapsed-silent > elapsed/10 { // it was heard from after the op began
				return blame(ws.from, "no message for %v, nothing at all for the last %v: peer lost or stalled", elapsed, silent.Round(time.Millisecond))
			}
			return blame(ws.from, "no message for %v: peer lost or stalled", elapsed)
		case head == g.rank:
			next := (g.rank + 1) % g.world
			return blame(next, "no message for %v from rank %d, which relays that rank %d hears nothing from this rank: the link to it is stalled",
				elapsed, ws.from, next)
		case head >= 0:
			return blame(head, "no message for %v from rank %d, which is stuck behind it: rank %d has heard nothing from it for %v: peer lost or stalled",
				elapsed, ws.from, by, silent.Round(time.Millisecond))
		case !now.Before(until):
			return blame(ws.from, "no message for %v: peer stalled (it is alive, waiting on nobody silent, but sends no data)", elapsed)
		}
		// Wake for the next tick, or when the predecessor would count as
		// silent; while draining, as soon as nothing is queued.
		wake := minTime(until, ws.lastHeard.Add(ws.rt.silence), now.Add(ws.rt.every))
		if drainPolls > 0 {
			wake = now.Add(10 * time.Millisecond)
		}
		wctx, cancel := context.WithDeadline(ctx, wake)
		m, err := g.tr.Recv(wctx, ws.from)
		cancel()
		now = time.Now()
		switch {
		case err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
			drainPolls--
			g.notify(q, ws, now)
		case err != nil:
			return g.recvFailure(ctx, ctx, desc, want, start, err)
		case m.Kind == KindWaiting:
			g.observe(q, ws, m, now)
		case m.Kind == KindAbort:
			return g.abortFailure(desc, want, m)
		default: // data, too late for this op: the predecessor is alive
			ws.lastHeard, ws.waitSince, ws.head = now, now, -1
		}
	}
}

func minTime(ts ...time.Time) time.Time {
	m := ts[0]
	for _, t := range ts[1:] {
		if t.Before(m) {
			m = t
		}
	}
	return m
}

// recvFailure turns a failed receive into an error naming the peer we were
// waiting for, unless the op was ended by a send failure (then that one).
func (g *Group) recvFailure(opCtx, parent context.Context, desc string, want Position, start time.Time, err error) error {
	if cause := context.Cause(opCtx); cause != nil {
		var perr *PeerError
		if errors.As(cause, &perr) {
			return cause
		}
	}
	l := &g.in[want.From]
	switch {
	case parent.Err() != nil && !errors.Is(parent.Err(), context.DeadlineExceeded):
		err = fmt.Errorf("cancelled while waiting: %w", context.Cause(parent))
	case errors.Is(err, context.DeadlineExceeded):
		detail := "peer lost or stalled"
		if len(l.held) > 0 {
			detail = fmt.Sprintf("message seq %d was lost (%d later messages arrived)", l.next, len(l.held))
		}
		err = fmt.Errorf("no message for %v: %s: %w", time.Since(start).Round(time.Millisecond), detail, context.DeadlineExceeded)
	case g.closed.Load():
		err = fmt.Errorf("%w (while waiting: %v)", ErrClosed, err)
	}
	return &PeerError{Rank: want.From, Peer: g.peerName(want.From), Op: desc, At: want.String(), Err: err}
}

// NewAbort returns the abort frame that tells rank `to` the group failed:
// lost is the rank to blame, why what the rank that detected the failure
// reported. The Group sends one round the ring when it fails; a transport
// sends them for its own failures (a host that gives up joining, or
// leaves, tells its neighbours why) in the same form, so every rank reads
// them alike (ParseAbort).
func NewAbort(from, to, lost int, why *RemoteFailure) Message {
	return Message{From: from, To: to, Kind: KindAbort, Payload: abortPayload(lost, why.ReportedBy, why.Mismatch, why.Text)}
}

// Abort frames carry the lost peer, the detecting rank, whether the cause
// was a disagreement rather than a failure, and the detecting rank's text.
func abortPayload(lost, origin int, mismatch bool, text string) []byte {
	b := make([]byte, 12, 12+len(text))
	binary.LittleEndian.PutUint32(b, uint32(int32(lost)))
	binary.LittleEndian.PutUint32(b[4:], uint32(int32(origin)))
	if mismatch {
		b[8] = 1
	}
	return append(b, text...)
}

// ParseAbort reads an abort frame (Kind KindAbort): the lost rank (def if
// the frame names none) and the report of the rank that detected the
// failure.
func ParseAbort(m Message, def int) (lost int, rf *RemoteFailure) {
	lost, rf = def, &RemoteFailure{ReportedBy: m.From, Text: "group aborted"}
	if len(m.Payload) >= 12 {
		lost = int(int32(binary.LittleEndian.Uint32(m.Payload)))
		rf.ReportedBy = int(int32(binary.LittleEndian.Uint32(m.Payload[4:])))
		rf.Mismatch = m.Payload[8] == 1
		rf.Text = string(m.Payload[12:])
	}
	return lost, rf
}

// AbortError is how a transport reports an abort that came against the
// data direction, from the rank this one sends to (see UpstreamAborter):
// Send fails with it, and the Group's error then names the lost rank, not
// the successor that passed the news on.
type AbortError struct {
	Lost   int            // the rank to blame
	Report *RemoteFailure // what the rank that detected the failure said
}

func (e *AbortError) Error() string {
	if e.Lost == e.Report.ReportedBy {
		return e.Report.Error()
	}
	return fmt.Sprintf("rank %d lost, %s", e.Lost, e.Report.Error())
}

// Unwrap exposes the report (a *RemoteFailure).
func (e *AbortError) Unwrap() error { return e.Report }

func (g *Group) abortFailure(desc string, want Position, m Message) error {
	lost, rf := ParseAbort(m, want.From)
	return &PeerError{Rank: lost, Peer: g.peerName(lost), Op: desc, At: want.String(), Err: rf}
}

// fail marks the group broken and tells the successor, once, so the news
// travels round the ring: every survivor names the lost peer within about
// one hop per rank instead of each timing out on its innocent predecessor.
// Each rank sends at most one abort, so the news dies out after one lap.
func (g *Group) fail(err error) {
	g.broken = err
	g.o.logf("distributed: rank %d: %v", g.rank, err)
	if g.aborted || g.closed.Load() || g.world < 2 {
		return
	}
	g.aborted = true
	lost, origin, text := g.rank, g.rank, err.Error()
	var mm *MismatchError
	mismatch := errors.As(err, &mm)
	var perr *PeerError
	if errors.As(err, &perr) {
		lost, text = perr.Rank, perr.Err.Error() // receivers re-add op, place and peer
		var rf *RemoteFailure
		if errors.As(perr.Err, &rf) {
			origin, text, mismatch = rf.ReportedBy, rf.Text, rf.Mismatch
		}
	}
	// Forward even to the "lost" peer: it may be alive (a mismatch, a stall)
	// and a dead one costs a failed Send. Stop where the news started.
	// Upstream too, where the transport can: when the lost peer is our
	// successor, our predecessor would otherwise only see us go away and
	// blame us.
	next, prev := (g.rank+1)%g.world, (g.rank+g.world-1)%g.world
	payload := abortPayload(lost, origin, mismatch, text)
	if up, ok := g.tr.(UpstreamAborter); ok && prev != origin && prev != next {
		up.AbortUpstream(Message{From: g.rank, To: prev, Op: g.op, Kind: KindAbort, Payload: payload})
	}
	if next == origin {
		return
	}
	// Send only queues (transports put aborts ahead of data), so this is
	// quick unless the link is stuck, which is no reason to hold up
	// reporting the failure for long.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	g.sendSeq[next]++
	_ = g.tr.Send(ctx, next, Message{From: g.rank, To: next, Op: g.op, Kind: KindAbort,
		Seq: g.sendSeq[next], Payload: payload})
}

// msgQueue is an unbounded FIFO with one consumer: pushing never blocks, so
// the receive loop is never held up by a slow link. Its size is bounded by
// the collective itself (at most one message per chunk and step).
type msgQueue struct {
	mu     sync.Mutex
	items  []Message
	closed bool
	signal chan struct{}
}

func newMsgQueue() *msgQueue { return &msgQueue{signal: make(chan struct{}, 1)} }

func (q *msgQueue) push(m Message) {
	q.mu.Lock()
	q.items = append(q.items, m)
	q.mu.Unlock()
	q.wake()
}

func (q *msgQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.wake()
}

func (q *msgQueue) wake() {
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

func (q *msgQueue) pop(ctx context.Context) (Message, bool) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			m := q.items[0]
			q.items[0] = Message{}
			q.items = q.items[1:]
			q.mu.Unlock()
			return m, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return Message{}, false
		}
		select {
		case <-q.signal:
		case <-ctx.Done():
			return Message{}, false
		}
	}
}
