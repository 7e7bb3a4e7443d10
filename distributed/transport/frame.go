package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/sagefit/sagefit/distributed"
	"google.golang.org/grpc/mem"
)

// The frame: every message a link carries, on the gRPC stream or on the
// data lane, is a fixed 48-byte header and the payload. 48 is a multiple
// of 8 so a payload that follows it in a freshly allocated buffer stays
// 8-byte aligned and can be viewed as []float32 / []float64 without
// copying. All fields are little-endian.
const (
	headerSize  = 48
	headerMagic = 0x31464753 // "SGF1" little-endian; rejects stray clients early
)

var errBadFrame = errors.New("not a sagefit frame")

// appendHeader encodes m's header (not its payload).
func appendHeader(b []byte, m *distributed.Message) []byte {
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

// decodeFrame parses header and payload; the payload aliases b.
func decodeFrame(b []byte, m *distributed.Message) error {
	if len(b) < headerSize || binary.LittleEndian.Uint32(b) != headerMagic {
		return errBadFrame
	}
	*m = distributed.Message{
		Kind:  distributed.Kind(b[4]),
		Phase: distributed.Phase(b[5]),
		Enc:   distributed.Encoding(b[6]),
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

// frameCodec is the gRPC codec of the link streams. The service is
// hand-written rather than generated from a .proto: the only message is a
// frame, whose payload protobuf would copy into a bytes field and back for
// no gain, and skipping protoc keeps the build to `go build`. frameCodec
// hands the payload to gRPC as is (no copy on send) and copies it once on
// receive into a pooled buffer the Group then owns.
type frameCodec struct{}

func (frameCodec) Name() string { return "sagefit-frame" }

func (frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*distributed.Message)
	if !ok {
		return nil, fmt.Errorf("frame codec cannot marshal %T", v)
	}
	hdr := mem.SliceBuffer(appendHeader(make([]byte, 0, headerSize), m))
	if len(m.Payload) == 0 {
		return mem.BufferSlice{hdr}, nil
	}
	if m.Borrowed || !m.Kind.IsData() {
		// Not ours to recycle: a view of the caller's buffer, or a control
		// payload that may go out on more than one link (an abort).
		return mem.BufferSlice{hdr, mem.SliceBuffer(m.Payload)}, nil
	}
	// The transport owns the payload (see distributed.Message): grpc-go
	// releases it once it has written it.
	p := m.Payload
	return mem.BufferSlice{hdr, mem.NewBuffer(&p, payloadPool{})}, nil
}

func (frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*distributed.Message)
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
		m.Payload = distributed.AllocPayload(n) // 8-byte aligned: can be viewed as floats
		if _, err := io.ReadFull(r, m.Payload); err != nil {
			return err
		}
	}
	return nil
}

// payloadPool lets grpc-go release a payload it has finished writing into
// the core's pool (distributed.ReleasePayload). grpc-go's own mem pools
// are not used: they zero every buffer they hand out, and a payload is
// always overwritten in full before anyone reads it.
type payloadPool struct{}

func (payloadPool) Get(n int) *[]byte {
	b := distributed.AllocPayload(n)
	return &b
}

func (payloadPool) Put(b *[]byte) { distributed.ReleasePayload(*b) }
