package distributed

import "fmt"

// Kind names the collective a message belongs to. Receivers check it so that
// two ranks that call different collectives at the same point fail with a
// clear error instead of misreading each other's bytes.
type Kind uint8

const (
	KindAllReduce        Kind = 1 + iota // float32 all-reduce
	KindAllReduceFloat64                 // float64 all-reduce (metric state)
	KindBroadcast                        // bytes from a root to all
	KindBarrier                          // no payload

	// Control kinds. The Group sends and takes in KindAbort and
	// KindWaiting itself; a transport sees them in Send and must deliver
	// them as it does data (it may put them ahead of queued data, and may
	// drop a KindWaiting it has no room for: it is a hint the next one
	// replaces). KindHello the core never sends: it is a transport's
	// handshake, numbered here so that no kind of the core can take its
	// value on the wire.
	KindAbort   // a rank tells a neighbour the group failed (see NewAbort)
	KindHello   // rendezvous handshake (a transport's, never the core's)
	KindWaiting // a rank tells its successor whom it is stuck waiting on (suspect relay)
)

// Own replaces a Borrowed payload with a copy in a pooled buffer, for a
// transport that does not put the bytes on the wire before Send returns
// (or before Flusher.Flush returns). The copy is the transport's to
// release (ReleasePayload) once written.
func (m *Message) Own() {
	if m.Borrowed {
		p := AllocPayload(len(m.Payload))
		copy(p, m.Payload)
		m.Payload, m.Borrowed = p, false
	}
}

// IsData reports whether messages of kind k belong to a collective (a
// transport may send them on a separate data path, and recycles their
// payloads once written, see Message) rather than to the control traffic,
// whose payloads it must leave alone (an abort's may go out on more than
// one link).
func (k Kind) IsData() bool {
	return k == KindAllReduce || k == KindAllReduceFloat64 || k == KindBroadcast || k == KindBarrier
}

func (k Kind) String() string {
	switch k {
	case KindAllReduce:
		return "all-reduce"
	case KindAllReduceFloat64:
		return "all-reduce-float64"
	case KindBroadcast:
		return "broadcast"
	case KindBarrier:
		return "barrier"
	case KindAbort:
		return "abort"
	case KindHello:
		return "hello"
	case KindWaiting:
		return "waiting"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Phase is the stage of a collective a message belongs to.
type Phase uint8

const (
	PhaseReduceScatter Phase = 1 + iota
	PhaseAllGather
	PhaseBroadcast
	PhaseBarrier
)

func (p Phase) String() string {
	switch p {
	case PhaseReduceScatter:
		return "reduce-scatter"
	case PhaseAllGather:
		return "all-gather"
	case PhaseBroadcast:
		return "broadcast"
	case PhaseBarrier:
		return "barrier"
	}
	return fmt.Sprintf("phase(%d)", uint8(p))
}

// Encoding says how a payload's elements are laid out on the wire (always
// little-endian).
type Encoding uint8

const (
	EncNone    Encoding = iota // no payload
	EncFloat32                 // IEEE 754 binary32
	EncFloat16                 // IEEE 754 binary16 (lossy wire compression)
	EncFloat64                 // IEEE 754 binary64
	EncBytes                   // opaque bytes
)

func (e Encoding) String() string {
	switch e {
	case EncNone:
		return "none"
	case EncFloat32:
		return "float32"
	case EncFloat16:
		return "float16"
	case EncFloat64:
		return "float64"
	case EncBytes:
		return "bytes"
	}
	return fmt.Sprintf("encoding(%d)", uint8(e))
}

func (e Encoding) elemSize() int {
	switch e {
	case EncFloat32:
		return 4
	case EncFloat16:
		return 2
	case EncFloat64:
		return 8
	}
	return 1
}

// Message is the unit the core exchanges. The core fills everything except
// Seq, which the Group's link layer stamps per (sender, receiver) pair so the
// receiver can drop duplicates and restore order.
//
// Ownership: Send takes ownership of Payload (the sender must not modify it
// afterwards; a transport may still be writing it after Send returns, and
// recycles it with ReleasePayload once written, for a data kind: see
// Kind.IsData), and Recv hands ownership to the caller, which may modify it
// in place. A Borrowed payload is the exception: it views the caller's own
// buffer, valid only until the collective returns, so a transport must
// never recycle it and must either copy it before Send returns (Own) or
// implement Flusher (the Group flushes before a successful op returns;
// after a failed one a transport may still be writing it until the Group
// is closed).
// A transport may also receive a payload straight into the caller's buffer
// where the Group's placement says so (see Placer).
type Message struct {
	From, To int    // ranks
	Op       uint64 // collective number within the group, 1-based; the same on every rank
	Kind     Kind
	Phase    Phase
	Enc      Encoding
	Step     uint32 // ring step within the phase
	Chunk    uint32 // chunk index within the step
	Seq      uint64 // per-link sequence number, 1-based, set by the link layer
	Size     uint64 // elements (bytes for broadcast) in the whole collective, for length checks
	Payload  []byte
	Borrowed bool // Payload views the sender's buffer (not on the wire)
}

func (m Message) String() string {
	return fmt.Sprintf("%s #%d %s step %d chunk %d seq %d from rank %d to %d (%d %s bytes)",
		m.Kind, m.Op, m.Phase, m.Step, m.Chunk, m.Seq, m.From, m.To, len(m.Payload), m.Enc)
}
