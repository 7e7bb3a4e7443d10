package distributed

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Faults configures the in-memory network's misbehaviour. Every decision
// comes from a generator seeded with Seed and the link's endpoints, so the
// same seed injects the same faults into the same message sequence on every
// run, whatever the goroutine schedule.
type Faults struct {
	Seed      uint64
	Drop      float64       // probability a message vanishes
	Duplicate float64       // probability a message is delivered twice
	Reorder   float64       // probability a message is overtaken by the next one on its link
	MaxDelay  time.Duration // each message is delayed uniformly in [0, MaxDelay)
}

// MemStats counts the faults a MemNetwork injected.
type MemStats struct {
	Sent, Dropped, Duplicated, Reordered uint64
}

// MemNetwork connects world in-process ranks with one FIFO per directed
// link. It is the test double for the gRPC transport.
type MemNetwork struct {
	world  int
	faults Faults
	links  [][]*memLink // [from][to]
	gone   []atomic.Pointer[goneState]

	sent, dropped, duplicated, reordered atomic.Uint64
}

// reorderHold bounds how long a message held back for reordering waits for
// a successor to overtake it; the last message of a burst goes out then.
const reorderHold = 2 * time.Millisecond

type goneState struct {
	why   string
	crash bool // queued messages are lost (a crash), else delivered (a close)
}

type memItem struct {
	m       Message
	readyAt time.Time
}

type memLink struct {
	nw       *MemNetwork
	from, to int
	rng      *rand.Rand // guarded by mu

	mu        sync.Mutex
	q         []memItem
	lastReady time.Time
	held      *Message
	heldTimer *time.Timer
	notify    chan struct{} // closed and replaced whenever q changes
}

// NewMemNetwork returns a network of world ranks with the given faults
// (the zero Faults is a perfect network).
func NewMemNetwork(world int, f Faults) *MemNetwork {
	nw := &MemNetwork{world: world, faults: f, links: make([][]*memLink, world), gone: make([]atomic.Pointer[goneState], world)}
	for i := range world {
		nw.links[i] = make([]*memLink, world)
		for j := range world {
			nw.links[i][j] = &memLink{nw: nw, from: i, to: j, notify: make(chan struct{}),
				rng: rand.New(rand.NewPCG(f.Seed, uint64(i*world+j)))}
		}
	}
	return nw
}

// Transport returns rank's endpoint.
func (nw *MemNetwork) Transport(rank int) Transport { return &memTransport{nw: nw, rank: rank} }

// Kill makes rank vanish as a crashed process would: its queued messages are
// lost and peers' Send and Recv involving it fail at once, as a reset TCP
// connection does.
func (nw *MemNetwork) Kill(rank int) { nw.leave(rank, goneState{why: "was killed", crash: true}) }

func (nw *MemNetwork) leave(rank int, st goneState) {
	if !nw.gone[rank].CompareAndSwap(nil, &st) {
		return
	}
	for i := range nw.world {
		for _, l := range []*memLink{nw.links[rank][i], nw.links[i][rank]} {
			l.mu.Lock()
			if st.crash || l.to == rank {
				l.q = nil
			} else if l.held != nil { // a closing sender's last words still arrive
				l.enqueueLocked(*l.held, 0)
			}
			l.held = nil
			l.wakeLocked()
			l.mu.Unlock()
		}
	}
}

// Stats returns the fault counters.
func (nw *MemNetwork) Stats() MemStats {
	return MemStats{Sent: nw.sent.Load(), Dropped: nw.dropped.Load(), Duplicated: nw.duplicated.Load(), Reordered: nw.reordered.Load()}
}

func (nw *MemNetwork) goneErr(rank int) error {
	if st := nw.gone[rank].Load(); st != nil {
		return fmt.Errorf("connection reset: rank %d %s", rank, st.why)
	}
	return nil
}

func (l *memLink) wakeLocked() {
	close(l.notify)
	l.notify = make(chan struct{})
}

func (l *memLink) enqueueLocked(m Message, delay time.Duration) {
	ready := time.Now().Add(delay)
	if ready.Before(l.lastReady) {
		ready = l.lastReady // FIFO: delay never reorders by itself
	}
	l.lastReady = ready
	l.q = append(l.q, memItem{m: m, readyAt: ready})
}

func (l *memLink) send(m Message) {
	nw := l.nw
	l.mu.Lock()
	defer l.mu.Unlock()
	// Always draw four numbers so each message's fate depends only on its
	// place in the link's sequence.
	pDrop, pDup, pReorder, pDelay := l.rng.Float64(), l.rng.Float64(), l.rng.Float64(), l.rng.Float64()
	nw.sent.Add(1)
	delay := time.Duration(pDelay * float64(nw.faults.MaxDelay))
	if pDrop < nw.faults.Drop {
		nw.dropped.Add(1)
		return
	}
	if l.held != nil { // m overtakes the held message
		held := *l.held
		l.held = nil
		l.heldTimer.Stop()
		l.enqueueLocked(m, delay)
		l.enqueueLocked(held, 0)
	} else if pReorder < nw.faults.Reorder {
		nw.reordered.Add(1)
		held := m
		l.held = &held
		l.heldTimer = time.AfterFunc(reorderHold, func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.held == &held {
				l.held = nil
				l.enqueueLocked(held, 0)
				l.wakeLocked()
			}
		})
	} else {
		l.enqueueLocked(m, delay)
	}
	if pDup < nw.faults.Duplicate {
		nw.duplicated.Add(1)
		d := m
		d.Payload = append([]byte(nil), m.Payload...) // the receiver may write into the first copy
		l.enqueueLocked(d, delay)
	}
	l.wakeLocked()
}

type memTransport struct {
	nw     *MemNetwork
	rank   int
	closed atomic.Bool
}

func (t *memTransport) check(peer int) error {
	if t.closed.Load() {
		return ErrClosed
	}
	if peer < 0 || peer >= t.nw.world || peer == t.rank {
		return fmt.Errorf("distributed: no link from rank %d to rank %d", t.rank, peer)
	}
	return t.nw.goneErr(t.rank)
}

func (t *memTransport) Send(ctx context.Context, to int, m Message) error {
	if err := t.check(to); err != nil {
		return err
	}
	if err := t.nw.goneErr(to); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.Own() // in memory, the receiver would otherwise write into the sender's buffer
	t.nw.links[t.rank][to].send(m)
	return nil
}

func (t *memTransport) Recv(ctx context.Context, from int) (Message, error) {
	if err := t.check(from); err != nil {
		return Message{}, err
	}
	l := t.nw.links[from][t.rank]
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		l.mu.Lock()
		if err := t.check(from); err != nil {
			l.mu.Unlock()
			return Message{}, err
		}
		var wait <-chan time.Time
		if len(l.q) == 0 {
			if err := t.nw.goneErr(from); err != nil {
				l.mu.Unlock()
				return Message{}, err
			}
		} else {
			if d := time.Until(l.q[0].readyAt); d <= 0 {
				m := l.q[0].m
				l.q[0] = memItem{}
				l.q = l.q[1:]
				l.mu.Unlock()
				return m, nil
			} else if timer == nil {
				timer = time.NewTimer(d)
				wait = timer.C
			} else {
				timer.Reset(d)
				wait = timer.C
			}
		}
		notify := l.notify
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			return Message{}, ctx.Err()
		case <-notify:
		case <-wait:
		}
	}
}

// Close makes this rank leave the network; peers see it as gone.
func (t *memTransport) Close() error {
	if t.closed.CompareAndSwap(false, true) {
		t.nw.leave(t.rank, goneState{why: "closed its connections"})
	}
	return nil
}
