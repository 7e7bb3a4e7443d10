package distributed

import (
	"math/bits"
	"sync"
)

// Payload buffers are recycled: a ring all-reduce moves every byte of the
// buffer through a fresh chunk-sized payload on each hop, and allocating
// those (the runtime zeroes them, and large ones fault in new pages) cost
// 16% of a rank's CPU at 64 MiB. Send hands a payload's ownership to the
// transport and Recv hands it to the caller (see Message), so whoever ends
// a payload's life (a transport that has written it, a ring step that has
// consumed it) releases it here, and a transport takes the payloads it
// receives from here too: the core and its transports share one pool.
//
// Pools that zero every buffer they hand out (grpc-go's) are not used: a
// payload is always overwritten in full before anyone reads it.
// Buffers are pooled by power-of-two capacity; small ones are left to the
// garbage collector.
const minPooledPayload = 4 << 10

var payloadPools [64]sync.Pool // index: log2 of the capacity

// AllocPayload returns an n-byte buffer whose contents are undefined, for
// a payload (a transport receiving one that the Group's placement did not
// claim, see Placer). Its start is 8-byte aligned, so the ring can view it
// as floats in place.
func AllocPayload(n int) []byte {
	if n < minPooledPayload {
		return make([]byte, n)
	}
	class := bits.Len(uint(n - 1))
	if p, ok := payloadPools[class].Get().(*[]byte); ok {
		return (*p)[:n]
	}
	return make([]byte, n, 1<<class)
}

// ReleasePayload recycles b: a transport calls it once it has written a
// data payload it owns (see Message). The caller must own b and keep no
// reference to it. Buffers that AllocPayload did not make (their capacity
// is not a pooled power of two) are left to the garbage collector, so
// releasing any owned payload is safe.
func ReleasePayload(b []byte) {
	c := cap(b)
	if c < minPooledPayload || c&(c-1) != 0 {
		return
	}
	b = b[:0]
	payloadPools[bits.Len(uint(c))-1].Put(&b)
}
