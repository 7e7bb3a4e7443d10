package data

import (
	"encoding/binary"
	"math"

	"github.com/sagefit/sagefit/internal/float16"
)

// nativeBigEndian is the byte order of this machine, for numpy's '=' order.
var nativeBigEndian = !float16.HostLittleEndian

// convChunk is how many elements a converter decodes into its buffer
// before encoding them. Decoding and encoding are each one tight loop with
// the type switch hoisted out of it, which is what keeps conversion free
// of per-element dispatch and reflection.
const convChunk = 256

// converter streams elements of one dtype and byte order into a
// contiguous little-endian destination of another dtype. Rows are pushed
// one after another and buffered across row boundaries, so short rows
// (10 features, say) still convert in long loops, and the buffer is
// zeroed once per Gather rather than once per row. It lives on the
// caller's stack.
//
// Integer to integer goes through int64 (wrapping like numpy's astype;
// uint64 survives as its bit pattern); anything involving a float goes
// through float64 (exact for every source but int64/uint64 beyond 2^53).
type converter struct {
	dst      []byte
	dt, st   DType
	big      bool
	useFloat bool
	n        int // elements buffered
	f        [convChunk]float64
	i        [convChunk]int64
	swapped  [convChunk * 8]byte // a big-endian chunk in little-endian order
}

func (c *converter) init(dst []byte, dt DType, st DType, big bool) {
	c.dst, c.dt, c.st, c.big = dst, dt, st, big
	c.useFloat = st.IsFloat() || dt.IsFloat()
	c.n = 0
}

// push converts n elements of src.
func (c *converter) push(src []byte, n int) {
	ss := c.st.Size()
	for n > 0 {
		m := min(convChunk-c.n, n)
		part := src[:m*ss]
		if c.big && ss > 1 {
			part = c.swapped[:m*ss]
			swapCopy(part, src[:m*ss], ss)
		}
		if c.useFloat {
			decode(c.f[c.n:c.n+m], part, c.st)
		} else {
			decode(c.i[c.n:c.n+m], part, c.st)
		}
		c.n += m
		n -= m
		src = src[m*ss:]
		if c.n == convChunk {
			c.flush()
		}
	}
}

// flush encodes the buffered elements; call it after the last push.
func (c *converter) flush() {
	if c.n == 0 {
		return
	}
	if c.useFloat {
		encodeFloat(c.dst, c.dt, c.f[:c.n])
	} else {
		encodeInt(c.dst, c.dt, c.i[:c.n])
	}
	c.dst = c.dst[c.n*c.dt.Size():]
	c.n = 0
}

// convert writes n elements of src (dtype st, stored big-endian when
// srcBig) into dst as dt, little-endian.
func convert(dst []byte, dt DType, src []byte, st DType, srcBig bool, n int) {
	if st == dt && (!srcBig || st.Size() == 1) {
		copy(dst[:n*dt.Size()], src[:n*st.Size()])
		return
	}
	if st == dt {
		swapCopy(dst[:n*dt.Size()], src[:n*st.Size()], st.Size())
		return
	}
	var c converter
	c.init(dst, dt, st, srcBig)
	c.push(src, n)
	c.flush()
}

// swapCopy copies elements of the given size, reversing each one's bytes.
func swapCopy(dst, src []byte, size int) {
	switch size {
	case 2:
		for i := 0; i+2 <= len(src); i += 2 {
			binary.LittleEndian.PutUint16(dst[i:], binary.BigEndian.Uint16(src[i:]))
		}
	case 4:
		for i := 0; i+4 <= len(src); i += 4 {
			binary.LittleEndian.PutUint32(dst[i:], binary.BigEndian.Uint32(src[i:]))
		}
	case 8:
		for i := 0; i+8 <= len(src); i += 8 {
			binary.LittleEndian.PutUint64(dst[i:], binary.BigEndian.Uint64(src[i:]))
		}
	}
}

// decode widens n little-endian elements of dtype st into out (float64
// when a float is involved, int64 otherwise; see converter). The loops
// read bytes through binary.LittleEndian directly, which the compiler turns
// into plain loads; big-endian sources are swapped into order first
// (converter.push), so there is one decoder, not one per byte order.
func decode[T float64 | int64](out []T, src []byte, st DType) {
	le := binary.LittleEndian
	switch st {
	case Bool:
		for i := range out {
			out[i] = T(b2u(src[i]))
		}
	case Int8:
		for i := range out {
			out[i] = T(int8(src[i]))
		}
	case Uint8:
		for i := range out {
			out[i] = T(src[i])
		}
	case Int16:
		for i := range out {
			out[i] = T(int16(le.Uint16(src[2*i:])))
		}
	case Uint16:
		for i := range out {
			out[i] = T(le.Uint16(src[2*i:]))
		}
	case Float16:
		for i := range out {
			out[i] = T(float16.ToFloat32(le.Uint16(src[2*i:])))
		}
	case Int32:
		for i := range out {
			out[i] = T(int32(le.Uint32(src[4*i:])))
		}
	case Uint32:
		for i := range out {
			out[i] = T(le.Uint32(src[4*i:]))
		}
	case Float32:
		for i := range out {
			out[i] = T(math.Float32frombits(le.Uint32(src[4*i:])))
		}
	case Int64:
		for i := range out {
			out[i] = T(int64(le.Uint64(src[8*i:])))
		}
	case Uint64:
		var zero T
		if _, isFloat := any(zero).(float64); isFloat {
			for i := range out {
				out[i] = T(le.Uint64(src[8*i:]))
			}
		} else { // uint64 to an integer keeps its bit pattern
			for i := range out {
				out[i] = T(int64(le.Uint64(src[8*i:])))
			}
		}
	case Float64:
		for i := range out {
			out[i] = T(math.Float64frombits(le.Uint64(src[8*i:])))
		}
	}
}

func encodeFloat(dst []byte, dt DType, in []float64) {
	le := binary.LittleEndian
	switch dt {
	case Bool:
		for i, v := range in {
			dst[i] = b2u(v != 0)
		}
	case Int8:
		for i, v := range in {
			dst[i] = byte(int8(int64(v)))
		}
	case Uint8:
		for i, v := range in {
			dst[i] = byte(int64(v))
		}
	case Int16:
		for i, v := range in {
			le.PutUint16(dst[2*i:], uint16(int64(v)))
		}
	case Uint16:
		for i, v := range in {
			le.PutUint16(dst[2*i:], uint16(int64(v)))
		}
	case Float16:
		for i, v := range in {
			le.PutUint16(dst[2*i:], f64ToF16(v))
		}
	case Int32:
		for i, v := range in {
			le.PutUint32(dst[4*i:], uint32(int64(v)))
		}
	case Uint32:
		for i, v := range in {
			le.PutUint32(dst[4*i:], uint32(int64(v)))
		}
	case Float32:
		for i, v := range in {
			le.PutUint32(dst[4*i:], math.Float32bits(float32(v)))
		}
	case Int64:
		for i, v := range in {
			le.PutUint64(dst[8*i:], uint64(int64(v)))
		}
	case Uint64:
		for i, v := range in {
			le.PutUint64(dst[8*i:], f64ToU64(v))
		}
	case Float64:
		for i, v := range in {
			le.PutUint64(dst[8*i:], math.Float64bits(v))
		}
	}
}

// f64ToU64 converts like numpy on x86: values at or above 2^63 are kept
// (a plain int64 conversion would lose them), negative values wrap.
func f64ToU64(v float64) uint64 {
	if v >= 1<<63 {
		return uint64(v)
	}
	return uint64(int64(v))
}

func encodeInt(dst []byte, dt DType, in []int64) {
	le := binary.LittleEndian
	switch dt {
	case Bool:
		for i, v := range in {
			dst[i] = b2u(v != 0)
		}
	case Int8, Uint8:
		for i, v := range in {
			dst[i] = byte(v)
		}
	case Int16, Uint16:
		for i, v := range in {
			le.PutUint16(dst[2*i:], uint16(v))
		}
	case Int32, Uint32:
		for i, v := range in {
			le.PutUint32(dst[4*i:], uint32(v))
		}
	case Int64, Uint64:
		for i, v := range in {
			le.PutUint64(dst[8*i:], uint64(v))
		}
	}
}

// b2u maps any truthy value to 1: numpy bools are 0/1 bytes, but a
// hand-made file with other non-zero bytes still means true.
func b2u[T byte | bool](v T) byte {
	var zero T
	if v != zero {
		return 1
	}
	return 0
}

// f64ToF16 rounds a float64 to the nearest half, ties to even, in one step
// (going through float32 would round twice and can differ from numpy).
func f64ToF16(f float64) uint16 {
	b := math.Float64bits(f)
	sign := uint16(b>>48) & 0x8000
	exp := int(b>>52) & 0x7ff
	mant := b & (1<<52 - 1)
	if exp == 0x7ff {
		if mant != 0 {
			return sign | 0x7e00 // quiet NaN
		}
		return sign | 0x7c00
	}
	e := exp - 1023 + 15
	if e >= 31 {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Subnormal half (or zero): value = m * 2^(e-43) in units of 2^-24.
		if e < -10 {
			return sign
		}
		m := mant | 1<<52
		shift := uint(43 - e)
		q := m >> shift
		rem := m & (1<<shift - 1)
		half := uint64(1) << (shift - 1)
		if rem > half || (rem == half && q&1 == 1) {
			q++ // may carry into the smallest normal, which encodes right
		}
		return sign | uint16(q)
	}
	q := mant >> 42
	rem := mant & (1<<42 - 1)
	if rem > 1<<41 || (rem == 1<<41 && q&1 == 1) {
		q++
		if q == 0x400 {
			q = 0
			e++
			if e >= 31 {
				return sign | 0x7c00
			}
		}
	}
	return sign | uint16(e)<<10 | uint16(q)
}
