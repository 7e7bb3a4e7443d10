package data

import (
	"github.com/sagefit/sagefit/internal/float16"

	"encoding/binary"
	"math"
	"testing"
)

// TestFloat16Exhaustive checks every half: widening is exact (the value
// narrows back to the same bits), and every midpoint between neighbours
// rounds to the even one while a hair either side rounds to the nearer.
func TestFloat16Exhaustive(t *testing.T) {
	for h := range uint32(1 << 16) {
		h := uint16(h)
		f := float16.ToFloat32(h)
		if math.IsNaN(float64(f)) {
			if h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
				t.Fatalf("half %#04x widened to NaN", h)
			}
			if back := f64ToF16(float64(f)); back&0x7fff != 0x7e00 {
				t.Fatalf("NaN %#04x narrowed to %#04x, want a quiet NaN", h, back)
			}
			continue
		}
		if back := f64ToF16(float64(f)); back != h {
			t.Fatalf("half %#04x -> %v -> %#04x", h, f, back)
		}
		// Neighbour above in magnitude, within the finite range.
		mag := h & 0x7fff
		if mag >= 0x7bff {
			continue
		}
		a, b := float64(f), float64(float16.ToFloat32(h+1))
		mid := (a + b) / 2 // exact in float64
		even := h
		if h&1 == 1 {
			even = h + 1
		}
		if got := f64ToF16(mid); got != even {
			t.Fatalf("midpoint %v of %#04x and %#04x -> %#04x, want %#04x (ties to even)", mid, h, h+1, got, even)
		}
		if got := f64ToF16(math.Nextafter(mid, a)); got != h {
			t.Fatalf("just below midpoint after %#04x -> %#04x", h, got)
		}
		if got := f64ToF16(math.Nextafter(mid, b)); got != h+1 {
			t.Fatalf("just above midpoint after %#04x -> %#04x", h, got)
		}
	}
}

func TestFloat16Edges(t *testing.T) {
	for _, tt := range []struct {
		in   float64
		want uint16
	}{
		{65504, 0x7bff},
		{65519.99, 0x7bff},
		{65520, 0x7c00}, // rounds to infinity
		{1e10, 0x7c00},
		{-1e10, 0xfc00},
		{math.Ldexp(1, -24), 0x0001},         // smallest subnormal
		{math.Ldexp(1, -25), 0x0000},         // half of it: tie to even zero
		{math.Ldexp(1.0000001, -25), 0x0001}, // just above the tie
		{math.Ldexp(3, -25), 0x0002},         // 1.5 ulp: tie to even 2
		{math.Ldexp(1023.5, -24), 0x0400},    // carries from subnormal into the smallest normal
		{1 + math.Ldexp(1, -11), 0x3c00},     // tie, even is 1.0
		{1 + 3*math.Ldexp(1, -11), 0x3c02},   // tie, even is 1+2^-9
		{math.Copysign(0, -1), 0x8000},
		{math.Ldexp(1, -40), 0x0000},
	} {
		if got := f64ToF16(tt.in); got != tt.want {
			t.Errorf("f64ToF16(%v) = %#04x, want %#04x", tt.in, got, tt.want)
		}
	}
}

// TestConvertPairs covers the integer targets the numpy fixtures do not
// (their float sources hold NaN and inf, which numpy leaves undefined).
func TestConvertPairs(t *testing.T) {
	enc := func(dt DType, v float64) []byte {
		b := make([]byte, 8)
		switch dt {
		case Int64:
			binary.LittleEndian.PutUint64(b, uint64(int64(v)))
		case Uint64:
			binary.LittleEndian.PutUint64(b, uint64(v))
		case Float32:
			binary.LittleEndian.PutUint32(b, math.Float32bits(float32(v)))
		case Float64:
			binary.LittleEndian.PutUint64(b, math.Float64bits(v))
		}
		return b[:dt.Size()]
	}
	for _, tt := range []struct {
		name     string
		src      []byte
		st       DType
		big      bool
		dt       DType
		wantBits uint64
	}{
		{"int64 -1 to uint16 wraps", enc(Int64, -1), Int64, false, Uint16, 0xffff},
		{"uint64 max to int8 wraps", []byte{255, 255, 255, 255, 255, 255, 255, 255}, Uint64, false, Int8, 0xff},
		{"float32 -3.7 to int16 truncates", enc(Float32, -3.7), Float32, false, Int16, 0xfffd},
		{"float64 3e9 to uint32", enc(Float64, 3e9), Float64, false, Uint32, 3000000000},
		{"float64 1.8e19 to uint64", enc(Float64, 1.8e19), Float64, false, Uint64, 18000000000000000000},
		{"float64 -2 to uint64 wraps", enc(Float64, -2), Float64, false, Uint64, math.MaxUint64 - 1},
		{"big-endian int32 to int64", []byte{0xff, 0xff, 0xff, 0xfe}, Int32, true, Int64, math.MaxUint64 - 1},
		{"big-endian uint16 to uint16 swaps", []byte{0x12, 0x34}, Uint16, true, Uint16, 0x1234},
		{"big-endian float64 to float32", []byte{0x3f, 0xf8, 0, 0, 0, 0, 0, 0}, Float64, true, Float32, uint64(math.Float32bits(1.5))},
		{"bool byte 7 to int8 is 1", []byte{7}, Bool, false, Int8, 1},
		{"bool byte 7 to float32 is 1", []byte{7}, Bool, false, Float32, uint64(math.Float32bits(1))},
		{"float16 -2 to int32", []byte{0x00, 0xc0}, Float16, false, Int32, 0xfffffffe},
		{"uint8 200 to int8 wraps", []byte{200}, Uint8, false, Int8, 200},
	} {
		dst := make([]byte, tt.dt.Size())
		convert(dst, tt.dt, tt.src, tt.st, tt.big, 1)
		var got uint64
		for i := len(dst) - 1; i >= 0; i-- {
			got = got<<8 | uint64(dst[i])
		}
		if got != tt.wantBits {
			t.Errorf("%s: got %#x, want %#x", tt.name, got, tt.wantBits)
		}
	}
}

// TestConvertChunks converts more elements than one stack chunk holds, so
// the chunk boundaries are crossed.
func TestConvertChunks(t *testing.T) {
	n := 3*convChunk + 17
	src := make([]byte, 8*n)
	for i := range n {
		binary.LittleEndian.PutUint64(src[8*i:], math.Float64bits(float64(i)-500.5))
	}
	dst := make([]byte, 4*n)
	convert(dst, Float32, src, Float64, false, n)
	idst := make([]byte, 2*n)
	convert(idst, Int16, src, Float64, false, n)
	for i := range n {
		want := float64(i) - 500.5
		if got := math.Float32frombits(binary.LittleEndian.Uint32(dst[4*i:])); float64(got) != want {
			t.Fatalf("element %d = %v, want %v", i, got, want)
		}
		if got := int16(binary.LittleEndian.Uint16(idst[2*i:])); got != int16(int64(want)) {
			t.Fatalf("int16 element %d = %v, want %v", i, got, int16(int64(want)))
		}
	}
}
