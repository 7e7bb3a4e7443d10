package data

import (
	"path/filepath"
	"testing"
)

// Sample tells datasets of other values apart, rows alike, and gives the
// same digest for the same files opened again.
func TestSampleTellsOtherValuesApart(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, first byte) string {
		raw := make([]byte, 8*3*4)
		raw[0] = first
		path := filepath.Join(dir, name)
		if err := WriteNPY(path, Float32, []int{8, 3}, raw); err != nil {
			t.Fatal(err)
		}
		return path
	}
	sample := func(path string) string {
		a, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		d, err := NewDataset(map[string]*Array{"x": a})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		s, err := d.Sample()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, again, other := sample(write("a.npy", 1)), sample(write("a2.npy", 1)), sample(write("b.npy", 2))
	if a != again || a == other || len(a) != 16 {
		t.Errorf("samples %q, %q (same values), %q (other values)", a, again, other)
	}
}
