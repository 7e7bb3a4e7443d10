package callbacks

import (
	"math"
	"testing"
)

// Floats are written as Python's repr writes them (CSVLogger's cells).
func TestPyRepr(t *testing.T) {
	for _, c := range []struct {
		v    float64
		want string
	}{
		{0.6931471824645996, "0.6931471824645996"}, {1, "1.0"}, {0.1, "0.1"}, {0.0001, "0.0001"},
		{1e-05, "1e-05"}, {1.5e-07, "1.5e-07"}, {1e15, "1000000000000000.0"}, {1e16, "1e+16"},
		{-2.5, "-2.5"}, {0, "0.0"}, {math.Copysign(0, -1), "-0.0"}, {math.NaN(), "nan"}, {math.Inf(-1), "-inf"},
	} {
		if got := pyRepr(c.v); got != c.want {
			t.Errorf("pyRepr(%v) = %q, want %q", c.v, got, c.want)
		}
	}
}
