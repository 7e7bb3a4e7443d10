package float16

import (
	"math"
	"testing"
)

// Every half widens and narrows back to itself (NaNs keep being NaN).
func TestRoundTripEveryHalf(t *testing.T) {
	for h := range 1 << 16 {
		f := ToFloat32(uint16(h))
		if math.IsNaN(float64(f)) {
			if g := FromFloat32(f); g&0x7c00 != 0x7c00 || g&0x3ff == 0 {
				t.Fatalf("NaN %#04x came back as %#04x", h, g)
			}
			continue
		}
		if g := FromFloat32(f); g != uint16(h) {
			t.Fatalf("%#04x -> %v -> %#04x", h, f, g)
		}
	}
}

func TestKnownValues(t *testing.T) {
	for _, c := range []struct {
		h uint16
		f float32
	}{
		{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, 5.960464477539063e-08},
		{0x8001, -5.960464477539063e-08}, {0x03ff, 6.097555160522461e-05}, {0x7c00, float32(math.Inf(1))},
	} {
		if got := ToFloat32(c.h); got != c.f {
			t.Errorf("ToFloat32(%#04x) = %v, want %v", c.h, got, c.f)
		}
	}
	if got := FromFloat32(65520); got != 0x7c00 {
		t.Errorf("65520 rounds to %#04x, want +Inf", got)
	}
	if got := FromFloat32(1 + 1.0/2048); got != 0x3c00 { // a tie rounds to even
		t.Errorf("1+2^-11 rounds to %#04x, want 0x3c00", got)
	}
}
