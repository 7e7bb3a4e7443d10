package distributed

import (
	"fmt"
)

// DefaultChunkBytes is the largest payload of one message unless configured.
// 1 MiB keeps every frame well under gRPC's default 4 MiB receive limit, is
// big enough that per-message overhead is noise, and small enough that the
// pipeline fills quickly (BenchmarkGRPCTuning: 256 KiB and 1 MiB measure
// alike, near-4 MiB chunks are slower).
const DefaultChunkBytes = 1 << 20

// ReduceOp selects how all-reduce combines values.
type ReduceOp int

const (
	Sum  ReduceOp = iota // element-wise sum
	Mean                 // element-wise sum divided by the world size
)

func (op ReduceOp) String() string {
	switch op {
	case Sum:
		return "sum"
	case Mean:
		return "mean"
	}
	return fmt.Sprintf("ReduceOp(%d)", int(op))
}

// Compression selects the wire format of float32 all-reduce payloads.
type Compression int

const (
	// NoCompression sends float32 as is: results are exact sums in a fixed order.
	NoCompression Compression = iota
	// FP16 sends binary16 on the wire (half the bytes) and accumulates in
	// float32. Lossy (about 3 decimal digits per hop, |x| > 65504 overflows to
	// Inf), still deterministic and bit-identical on every rank.
	FP16
)

func (c Compression) String() string {
	switch c {
	case NoCompression:
		return "none"
	case FP16:
		return "fp16"
	}
	return fmt.Sprintf("Compression(%d)", int(c))
}

// RingConfig describes one collective on one rank.
type RingConfig struct {
	Rank, World int
	// Op is stamped on every message and checked by the receiver; every rank
	// must number its collectives the same way (Group counts them from 1).
	Op uint64
	// ChunkBytes bounds the payload of one message; <= 0 means DefaultChunkBytes.
	// Every rank must use the same value.
	ChunkBytes int
	// Compression applies to float32 all-reduce only.
	Compression Compression
}

func (c RingConfig) check() error {
	if c.World < 1 {
		return fmt.Errorf("distributed: world size %d, want >= 1", c.World)
	}
	if c.Rank < 0 || c.Rank >= c.World {
		return fmt.Errorf("distributed: rank %d outside world of %d", c.Rank, c.World)
	}
	if c.Compression != NoCompression && c.Compression != FP16 {
		return fmt.Errorf("distributed: unknown compression %d", int(c.Compression))
	}
	return nil
}

func (c RingConfig) chunkBytes() int {
	if c.ChunkBytes <= 0 {
		return DefaultChunkBytes
	}
	return c.ChunkBytes
}

func (c RingConfig) next() int { return (c.Rank + 1) % c.World }
func (c RingConfig) prev() int { return (c.Rank + c.World - 1) % c.World }

// Position is the message a machine waits for next; errors use it to say
// where a collective stopped.
type Position struct {
	From  int
	Phase Phase
	Step  int
	Chunk int
}

func (p Position) String() string {
	return fmt.Sprintf("%s step %d chunk %d", p.Phase, p.Step, p.Chunk)
}

// Machine is one collective on one rank as a deterministic state machine, in
// the style of etcd's raft: it knows no sockets, clocks or goroutines. The
// driver calls Start once, sends what it returns, then feeds every message
// from Waiting().From to Step, in per-link order, until Done. The same
// inputs produce the same outputs and the same buffer bits, always.
type Machine interface {
	// Start returns the first messages to send.
	Start() []Message
	// Step consumes the next message from Waiting().From and returns the
	// messages it unlocks. An error means the peers disagree (lengths,
	// collective, settings) and the collective cannot finish.
	Step(m Message) ([]Message, error)
	// Done reports whether this rank's part of the collective is complete.
	Done() bool
	// Waiting tells which message Step expects next.
	Waiting() Position
}

func mismatchf(format string, args ...any) error {
	return &MismatchError{Text: fmt.Sprintf(format, args...)}
}

// checkHeader validates the fields every collective shares.
func checkHeader(cfg RingConfig, kind Kind, want Position, size uint64, unit string, m Message) error {
	if m.Kind != kind || m.Op != cfg.Op {
		return mismatchf("rank %d is in %s #%d but rank %d is in %s #%d: every rank must call the same collectives in the same order",
			m.From, m.Kind, m.Op, cfg.Rank, kind, cfg.Op)
	}
	if m.From != want.From || m.To != cfg.Rank {
		return mismatchf("message from rank %d to rank %d arrived at rank %d, which expected rank %d",
			m.From, m.To, cfg.Rank, want.From)
	}
	if m.Size != size {
		return mismatchf("rank %d has %d %s in %s #%d but rank %d has %d: every rank must pass buffers of the same length",
			m.From, m.Size, unit, kind, cfg.Op, cfg.Rank, size)
	}
	if m.Phase != want.Phase || int(m.Step) != want.Step || int(m.Chunk) != want.Chunk {
		return mismatchf("rank %d sent %s step %d chunk %d but rank %d expected %s: every rank must use the same ChunkBytes",
			m.From, m.Phase, m.Step, m.Chunk, cfg.Rank, want)
	}
	return nil
}

// ringReduce is the bandwidth-optimal ring all-reduce: reduce-scatter then
// all-gather, n-1 steps each, so every rank sends and receives 2(n-1)/n of
// the buffer. The buffer is cut into pieces, each piece into n segments and
// each segment into pieceChunks chunks; a chunk is forwarded as soon as it
// is reduced, so sending chunk j overlaps reducing chunk j+1 and the ring
// stays busy (pipelining). Pieces go round the ring one after the other,
// each rank starting the next piece right after its last message of the
// current one, so the link never waits between pieces; a piece's
// all-gather overwrites memory its reduce-scatter touched moments before,
// still in cache (one piece over the whole buffer was 5-8% slower at
// 64 MiB on 3-4 ranks: BENCHMARKS.md).
//
// Determinism: segment i of a piece starts at rank i and travels the ring
// once, each rank adding its own values, so its elements are always
// ((x_i + x_{i+1}) + x_{i+2}) + ... + x_{i-1} (ranks mod n). Rank i-1 ends
// with the final value and the all-gather copies those bits to everyone:
// every rank ends bit-identical and repeated runs agree exactly.
type ringReduce[T float32 | float64] struct {
	cfg   RingConfig
	kind  Kind
	buf   []T
	op    ReduceOp
	codec wireCodec[T]
	unit  string
	k     int // chunks per segment over all pieces (pieces × g), >= 1 so even empty segments send a message
	g     int // chunks per segment in one piece
	pos   Position
	done  bool
}

// pieceChunks is how many chunks each segment of a piece has: two keep the
// link busy while one is summed, and keep a piece small (n × 2 chunks).
const pieceChunks = 2

// NewAllReduce returns the machine for an in-place all-reduce of buf.
func NewAllReduce(cfg RingConfig, buf []float32, op ReduceOp) (Machine, error) {
	var codec wireCodec[float32] = f32Raw{}
	if cfg.Compression == FP16 {
		codec = f32Half{}
	}
	return newRingReduce(cfg, KindAllReduce, buf, op, codec, "float32 values")
}

// NewAllReduceFloat64 returns the machine for an in-place float64
// all-reduce (meant for small vectors such as metric totals and counts;
// Compression does not apply).
func NewAllReduceFloat64(cfg RingConfig, buf []float64, op ReduceOp) (Machine, error) {
	return newRingReduce[float64](cfg, KindAllReduceFloat64, buf, op, f64Raw{}, "float64 values")
}

func newRingReduce[T float32 | float64](cfg RingConfig, kind Kind, buf []T, op ReduceOp, codec wireCodec[T], unit string) (*ringReduce[T], error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if op != Sum && op != Mean {
		return nil, fmt.Errorf("distributed: unknown reduce op %d", int(op))
	}
	n := cfg.World
	chunkElems := max(1, cfg.chunkBytes()/codec.enc().elemSize())
	maxSeg := (len(buf) + n - 1) / n
	k := max(1, (maxSeg+chunkElems-1)/chunkElems)
	// Pieces of equal size with up to pieceChunks chunks per segment (a
	// buffer of fewer chunks is one piece of smaller chunks).
	pieces := (k + pieceChunks - 1) / pieceChunks
	g := (k + pieces - 1) / pieces
	k = pieces * g
	return &ringReduce[T]{
		cfg: cfg, kind: kind, buf: buf, op: op, codec: codec, unit: unit, k: k, g: g,
		pos: Position{From: cfg.prev(), Phase: PhaseReduceScatter},
	}, nil
}

// chunk returns chunk j of segment seg (seg taken mod n): chunk j%g of the
// segment in piece j/g. Pieces, their segments and their chunks each
// differ in length by at most one element, so a chunk is at most
// ChunkBytes on the wire.
func (m *ringReduce[T]) chunk(seg, j int) []T {
	n, L, pieces := m.cfg.World, len(m.buf), m.k/m.g
	seg = ((seg % n) + n) % n
	p, sub := j/m.g, j%m.g
	plo, phi := p*L/pieces, (p+1)*L/pieces
	pl := phi - plo
	lo, hi := plo+seg*pl/n, plo+(seg+1)*pl/n
	l := hi - lo
	return m.buf[lo+sub*l/m.g : lo+(sub+1)*l/m.g]
}

// startPiece returns the first messages of the piece whose chunks begin at j.
func (m *ringReduce[T]) startPiece(j int) []Message {
	out := make([]Message, 0, m.g)
	for c := j; c < j+m.g; c++ {
		out = append(out, m.send(PhaseReduceScatter, 0, c, m.chunk(m.cfg.Rank, c), nil))
	}
	return out
}

// startsNextPiece reports whether taking in the message at (phase, step,
// chunk j) makes this rank send its last message of a piece: then the next
// piece's first chunks follow it on the link. That is the reduce-scatter's
// message for n = 2 and the all-gather's step n-3 otherwise, at the
// piece's last chunk.
func (m *ringReduce[T]) startsNextPiece(phase Phase, step, j int) bool {
	n := m.cfg.World
	last := (n == 2 && phase == PhaseReduceScatter) || (n > 2 && phase == PhaseAllGather && step == n-3)
	return last && (j+1)%m.g == 0 && j+1 < m.k
}

func (m *ringReduce[T]) msg(phase Phase, step, chunk int, p []byte) Message {
	return Message{
		From: m.cfg.Rank, To: m.cfg.next(), Op: m.cfg.Op, Kind: m.kind,
		Phase: phase, Enc: m.codec.enc(), Step: uint32(step), Chunk: uint32(chunk),
		Size: uint64(len(m.buf)), Payload: p,
	}
}

// minBorrow is the smallest chunk sent as a view of the caller's buffer:
// below it a copy costs less than the transport's flush at the end of the
// op (see Message.Borrowed).
const minBorrow = 16 << 10

// send makes the message carrying local, the values this rank holds for a
// chunk. Where the codec allows (raw floats on a little-endian host) and
// the chunk is large, the payload is a view of buf: no copy (the Group
// makes the transport finish with it before the op returns). Otherwise
// local is encoded into p, the payload just received for this chunk, or a
// new buffer.
func (m *ringReduce[T]) send(phase Phase, step, chunk int, local []T, p []byte) Message {
	if v := m.codec.view(local); v != nil && (len(v) >= minBorrow || aliases(p, v)) {
		if p != nil && !aliases(p, v) {
			ReleasePayload(p)
		}
		msg := m.msg(phase, step, chunk, v)
		msg.Borrowed = true
		return msg
	}
	if p == nil {
		return m.msg(phase, step, chunk, m.codec.encode(local))
	}
	m.codec.encodeInto(p, local)
	return m.msg(phase, step, chunk, p)
}

// place returns where the payload of an all-gather message (only its
// header is read so far) can be received straight into: the chunk of buf
// it overwrites, as wire bytes; nil where it cannot (another op, phase or
// shape, or a codec whose wire form differs). See Placer for why this is
// safe.
func (m *ringReduce[T]) place(h *Message, n int) []byte {
	if h.From != m.cfg.prev() || h.To != m.cfg.Rank || h.Op != m.cfg.Op || h.Kind != m.kind || h.Phase != PhaseAllGather || h.Enc != m.codec.enc() ||
		h.Size != uint64(len(m.buf)) || int(h.Step) >= m.cfg.World-1 || int(h.Chunk) >= m.k {
		return nil
	}
	v := m.codec.view(m.chunk(m.cfg.Rank-int(h.Step), int(h.Chunk)))
	if v == nil || len(v) != n {
		return nil
	}
	return v
}

func (m *ringReduce[T]) Start() []Message {
	if m.cfg.World == 1 {
		m.done = true // sum and mean of one value are the value itself
		return nil
	}
	return m.startPiece(0)
}

func (m *ringReduce[T]) Done() bool        { return m.done }
func (m *ringReduce[T]) Waiting() Position { return m.pos }

func (m *ringReduce[T]) Step(in Message) ([]Message, error) {
	if m.done {
		return nil, mismatchf("rank %d sent %s after rank %d finished %s #%d", in.From, in, m.cfg.Rank, m.kind, m.cfg.Op)
	}
	if err := checkHeader(m.cfg, m.kind, m.pos, uint64(len(m.buf)), m.unit, in); err != nil {
		return nil, err
	}
	if in.Enc != m.codec.enc() {
		return nil, mismatchf("rank %d sends %s payloads but rank %d expects %s: every rank must use the same compression",
			in.From, in.Enc, m.cfg.Rank, m.codec.enc())
	}
	n, r, s, j := m.cfg.World, m.cfg.Rank, m.pos.Step, m.pos.Chunk
	var local []T
	if m.pos.Phase == PhaseReduceScatter {
		local = m.chunk(r-s-1, j)
	} else {
		local = m.chunk(r-s, j)
	}
	if want := len(local) * m.codec.enc().elemSize(); len(in.Payload) != want {
		return nil, mismatchf("rank %d sent %d payload bytes for %s but rank %d expected %d: every rank must use the same ChunkBytes and buffer length",
			in.From, len(in.Payload), m.pos, r, want)
	}
	p := in.Payload // ours now: reuse it as the outgoing payload, no copy
	var out []Message
	switch {
	case m.pos.Phase == PhaseReduceScatter && s < n-2:
		m.codec.addInto(p, local) // p = partial + mine, forwarded as is
		out = []Message{m.msg(PhaseReduceScatter, s+1, j, p)}
	case m.pos.Phase == PhaseReduceScatter:
		// Last reduce step: this rank owns segment r+1. Finish it here once,
		// so the all-gather spreads identical bits.
		m.codec.addFrom(local, p)
		if m.op == Mean {
			d := T(n)
			for i := range local {
				local[i] /= d
			}
		}
		m.codec.quantize(local)
		out = []Message{m.send(PhaseAllGather, 0, j, local, p)}
	default: // all-gather
		placed := false
		if v := m.codec.view(local); v != nil && aliases(p, v) {
			placed = true // the transport received it into buf already
		} else {
			m.codec.copyFrom(local, p)
		}
		switch {
		case s < n-2 && placed:
			out = []Message{m.send(PhaseAllGather, s+1, j, local, nil)}
		case s < n-2:
			out = []Message{m.msg(PhaseAllGather, s+1, j, p)} // forward what came, as is
		case !placed:
			ReleasePayload(p) // the last hop: nobody needs it any more
		}
	}
	if m.startsNextPiece(m.pos.Phase, s, j) {
		out = append(out, m.startPiece(j+1)...)
	}
	m.pos.Chunk++
	if m.pos.Chunk%m.g == 0 {
		m.pos.Chunk -= m.g
		m.pos.Step++
		if m.pos.Step == n-1 {
			m.pos.Step = 0
			if m.pos.Phase == PhaseReduceScatter {
				m.pos.Phase = PhaseAllGather
			} else {
				m.pos.Phase = PhaseReduceScatter
				m.pos.Chunk += m.g
				m.done = m.pos.Chunk == m.k
			}
		}
	}
	return out, nil
}

// ringBroadcast sends root's bytes along the ring root -> root+1 -> ...,
// chunk by chunk, each rank forwarding a chunk as soon as it has it, so the
// time is about size/bandwidth + (n-2) chunk times rather than (n-1) full
// copies.
type ringBroadcast struct {
	cfg  RingConfig
	buf  []byte
	root int
	k    int
	pos  Position
	done bool
}

// NewBroadcast returns the machine that copies root's buf into every rank's
// buf (all ranks pass buffers of the same length).
func NewBroadcast(cfg RingConfig, buf []byte, root int) (Machine, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if root < 0 || root >= cfg.World {
		return nil, fmt.Errorf("distributed: broadcast root %d outside world of %d", root, cfg.World)
	}
	cb := cfg.chunkBytes()
	return &ringBroadcast{
		cfg: cfg, buf: buf, root: root,
		k:   max(1, (len(buf)+cb-1)/cb),
		pos: Position{From: cfg.prev(), Phase: PhaseBroadcast},
	}, nil
}

func (m *ringBroadcast) chunk(j int) []byte {
	L := len(m.buf)
	return m.buf[j*L/m.k : (j+1)*L/m.k]
}

func (m *ringBroadcast) msg(j int, p []byte) Message {
	return Message{
		From: m.cfg.Rank, To: m.cfg.next(), Op: m.cfg.Op, Kind: KindBroadcast,
		Phase: PhaseBroadcast, Enc: EncBytes, Chunk: uint32(j), Size: uint64(len(m.buf)), Payload: p,
	}
}

func (m *ringBroadcast) Start() []Message {
	if m.cfg.World == 1 || m.cfg.Rank != m.root {
		m.done = m.cfg.World == 1
		return nil
	}
	out := make([]Message, m.k)
	for j := range m.k {
		// A copy: the caller may reuse buf once Broadcast returns, while a
		// transport may still be writing the payload.
		p := AllocPayload(len(m.chunk(j)))
		copy(p, m.chunk(j))
		out[j] = m.msg(j, p)
	}
	m.done = true
	return out
}

func (m *ringBroadcast) Done() bool        { return m.done }
func (m *ringBroadcast) Waiting() Position { return m.pos }

func (m *ringBroadcast) Step(in Message) ([]Message, error) {
	if m.done {
		return nil, mismatchf("rank %d sent %s after rank %d finished broadcast #%d", in.From, in, m.cfg.Rank, m.cfg.Op)
	}
	if err := checkHeader(m.cfg, KindBroadcast, m.pos, uint64(len(m.buf)), "bytes", in); err != nil {
		return nil, err
	}
	dst := m.chunk(m.pos.Chunk)
	if len(in.Payload) != len(dst) {
		return nil, mismatchf("rank %d sent %d bytes for %s but rank %d expected %d: every rank must use the same ChunkBytes",
			in.From, len(in.Payload), m.pos, m.cfg.Rank, len(dst))
	}
	copy(dst, in.Payload)
	var out []Message
	if m.cfg.next() != m.root {
		out = []Message{m.msg(m.pos.Chunk, in.Payload)}
	} else {
		ReleasePayload(in.Payload)
	}
	m.pos.Chunk++
	m.done = m.pos.Chunk == m.k
	return out, nil
}

// ringBarrier passes an empty token n-1 times round the ring. The token a
// rank receives at step s was sent after its predecessor had received step
// s-1, so step n-2 proves every other rank has entered the barrier. All
// ranks pass tokens at once: n-1 hops of latency, not 2n.
type ringBarrier struct {
	cfg  RingConfig
	pos  Position
	done bool
}

// NewBarrier returns the machine for a barrier.
func NewBarrier(cfg RingConfig) (Machine, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return &ringBarrier{cfg: cfg, pos: Position{From: cfg.prev(), Phase: PhaseBarrier}}, nil
}

func (m *ringBarrier) msg(step int) Message {
	return Message{From: m.cfg.Rank, To: m.cfg.next(), Op: m.cfg.Op, Kind: KindBarrier, Phase: PhaseBarrier, Enc: EncNone, Step: uint32(step)}
}

func (m *ringBarrier) Start() []Message {
	if m.cfg.World == 1 {
		m.done = true
		return nil
	}
	return []Message{m.msg(0)}
}

func (m *ringBarrier) Done() bool        { return m.done }
func (m *ringBarrier) Waiting() Position { return m.pos }

func (m *ringBarrier) Step(in Message) ([]Message, error) {
	if m.done {
		return nil, mismatchf("rank %d sent %s after rank %d finished barrier #%d", in.From, in, m.cfg.Rank, m.cfg.Op)
	}
	if err := checkHeader(m.cfg, KindBarrier, m.pos, 0, "bytes", in); err != nil {
		return nil, err
	}
	m.pos.Step++
	if m.pos.Step == m.cfg.World-1 {
		m.done = true
		return nil, nil
	}
	return []Message{m.msg(m.pos.Step)}, nil
}
