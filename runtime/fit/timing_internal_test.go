package fit

import (
	"math"
	"slices"
	"testing"
	"time"
)

// The step-time histogram's percentiles are within its bucket width of the
// exact nearest-rank ones.
func TestHistogramQuantiles(t *testing.T) {
	cases := []struct {
		name  string
		steps []time.Duration
	}{
		{"one step", []time.Duration{3 * time.Millisecond}},
		{"below a microsecond", []time.Duration{100, 200, 300}},
		{"1..1000 µs", func() (d []time.Duration) {
			for i := 1000; i >= 1; i-- {
				d = append(d, time.Duration(i)*time.Microsecond)
			}
			return d
		}()},
		{"a slow first step", append([]time.Duration{2 * time.Second}, repeat(120*time.Microsecond, 999)...)},
	}
	for _, c := range cases {
		var h histogram
		largest := time.Duration(0)
		for _, d := range c.steps {
			h.add(d)
			largest = max(largest, d)
		}
		sorted := append([]time.Duration{}, c.steps...)
		slices.Sort(sorted)
		for _, q := range []float64{0.5, 0.9, 0.99, 1} {
			want := sorted[int(math.Ceil(q*float64(len(sorted))))-1].Seconds()
			got := h.quantile(q, largest)
			if want >= 1e-6 && math.Abs(got-want) > want*(math.Exp2(1.0/bucketsPerOctave)-1) {
				t.Errorf("%s: q%v = %v, want %v within a bucket", c.name, q, got, want)
			}
			if want < 1e-6 && got > 1e-6 {
				t.Errorf("%s: q%v = %v, want under a microsecond", c.name, q, got)
			}
		}
	}
	var empty histogram
	if q := empty.quantile(0.5, 0); q != 0 {
		t.Errorf("empty histogram: p50 %v", q)
	}
}

func repeat(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}
