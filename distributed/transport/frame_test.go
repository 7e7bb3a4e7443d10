package transport

import (
	"encoding/hex"
	"testing"

	"github.com/sagefit/sagefit/distributed"
)

// TestFrameHeaderOnTheWire pins the header bytes of a frame (protocol
// version 4): a change here breaks every host running another build, and
// must come with a new protocolVersion.
func TestFrameHeaderOnTheWire(t *testing.T) {
	m := distributed.Message{From: 2, To: 3, Op: 0x0102030405060708, Kind: distributed.KindAllReduce,
		Phase: distributed.PhaseAllGather, Enc: distributed.EncFloat16, Step: 5, Chunk: 6, Seq: 9, Size: 1 << 40}
	const want = "53474631" + "010202" + "00" + "02000000" + "03000000" + "05000000" + "06000000" +
		"0807060504030201" + "0900000000000000" + "0000000000010000"
	got := hex.EncodeToString(appendHeader(nil, &m))
	if got != want {
		t.Fatalf("header\n got %s\nwant %s", got, want)
	}
	var back distributed.Message
	if err := decodeFrame(appendHeader(nil, &m), &back); err != nil || back.String() != m.String() {
		t.Fatalf("decoded %v (%v), want %v", back, err, m)
	}
	// The control kinds' numbers travel too.
	for k, want := range map[distributed.Kind]uint8{distributed.KindAbort: 5, distributed.KindHello: 6, distributed.KindWaiting: 7} {
		if uint8(k) != want {
			t.Errorf("%v is %d on the wire, want %d", k, uint8(k), want)
		}
	}
}
