package distributed

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Kind names the collective a message belongs to. Receivers check it so that
// two ranks that call different collectives at the same point fail with a
// clear error instead of misreading each other's bytes.
type Kind uint8

const (
	KindAllReduce        Kind = 1 + iota // float32 all-reduce
	KindAllReduceFloat64                 // float64 all-reduce (metric state)
	KindBroadcast                        // bytes from a root to all
	KindBarrier                          // no payload
	kindAbort                            // a rank tells its successor the group failed
	kindHello                            // rendezvous handshake (gRPC transport only)
	kindWaiting                          // a rank tells its successor whom it is stuck waiting on (suspect relay)
)

// own replaces a Borrowed payload with a copy in a pooled buffer, for a
// transport that does not put the bytes on the wire before Send returns.
func (m *Message) own() {
	if m.Borrowed {
		p := allocPayload(len(m.Payload))
		copy(p, m.Payload)
		m.Payload, m.Borrowed = p, false
	}
}

// isData reports whether messages of kind k belong to a collective (they
// travel on a link's data lane, and their payloads are recycled once
// written) rather than to the control traffic.
func (k Kind) isData() bool {
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
	case kindAbort:
		return "abort"
	case kindHello:
		return "hello"
	case kindWaiting:
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
// recycles it once written), and Recv hands ownership to the caller, which
// may modify it in place. A Borrowed payload is the exception: it views
// the caller's own buffer, valid only until the collective returns, so a
// transport must never recycle it and must either copy it before Send
// returns or implement flusher (the Group flushes before a successful op
// returns; after a failed one a transport may still be writing it until
// the Group is closed).
// A transport may also receive a payload straight into the caller's buffer
// where the Group's placement says so (see Group.place).
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

	flushed chan struct{} // a transport's flush marker (no payload), closed once reached
}

func (m Message) String() string {
	return fmt.Sprintf("%s #%d %s step %d chunk %d seq %d from rank %d to %d (%d %s bytes)",
		m.Kind, m.Op, m.Phase, m.Step, m.Chunk, m.Seq, m.From, m.To, len(m.Payload), m.Enc)
}

// Wire header: fixed 48 bytes, a multiple of 8 so a payload that follows it in
// a freshly allocated buffer stays 8-byte aligned and can be viewed as
// []float32 / []float64 without copying.
const (
	headerSize  = 48
	headerMagic = 0x31464753 // "SGF1" little-endian; rejects stray clients early
)

// appendHeader encodes m's header (not its payload).
func (m *Message) appendHeader(b []byte) []byte {
	var h [headerSize]byte
	binary.LittleEndian.PutUint32(h[0:], headerMagic)
	h[4] = byte(m.Kind)
	h[5] = byte(m.Phase)
	h[6] = byte(m.Enc)
	binary.LittleEndian.PutUint32(h[8:], uint32(int32(m.From)))
	binary.LittleEndian.PutUint32(h[12:], uint32(int32(m.To)))
	binary.LittleEndian.PutUint32(h[16:], m.Step)
	binary.LittleEndian.PutUint32(h[20:], m.Chunk)
	binary.LittleEndian.PutUint64(h[24:], m.Op)
	binary.LittleEndian.PutUint64(h[32:], m.Seq)
	binary.LittleEndian.PutUint64(h[40:], m.Size)
	return append(b, h[:]...)
}

var errBadFrame = errors.New("not a sagefit frame")

// decodeFrame parses header and payload; the payload aliases b.
func decodeFrame(b []byte, m *Message) error {
	if len(b) < headerSize || binary.LittleEndian.Uint32(b) != headerMagic {
		return errBadFrame
	}
	*m = Message{
		Kind:  Kind(b[4]),
		Phase: Phase(b[5]),
		Enc:   Encoding(b[6]),
		From:  int(int32(binary.LittleEndian.Uint32(b[8:]))),
		To:    int(int32(binary.LittleEndian.Uint32(b[12:]))),
		Step:  binary.LittleEndian.Uint32(b[16:]),
		Chunk: binary.LittleEndian.Uint32(b[20:]),
		Op:    binary.LittleEndian.Uint64(b[24:]),
		Seq:   binary.LittleEndian.Uint64(b[32:]),
		Size:  binary.LittleEndian.Uint64(b[40:]),
	}
	if len(b) > headerSize {
		m.Payload = b[headerSize:]
	}
	return nil
}
