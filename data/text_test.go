package data

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestTextMatchesNumpy writes text arrays with numpy ('S' bytes, 'U'
// unicode in both byte orders, 2-D and 3-D ones in C and Fortran order, an
// .npz member) and checks that
// Gather yields, per element, exactly the UTF-8 bytes Python's own
// str.encode gives (numpy strips trailing NULs the same way), NUL-padded to
// TextWidth.
func TestTextMatchesNumpy(t *testing.T) {
	py := pythonWithNumpy(t)
	dir := t.TempDir()
	script := `
import json, sys, os, numpy as np
d = sys.argv[1]
arrays = {
    "bytes.npy": np.array([b"red", b"", b"blue\x00x", b"green"], dtype="S7"),
    "unicode.npy": np.array(["h\u00e9llo", "", "\u65e5\u672c", "\U0001F600!"], dtype="<U5"),
    "unicode_be.npy": np.array(["ab", "\u00df", "c", "d"], dtype=">U2"),
    "grid.npy": np.array([["a", "bb"], ["ccc", ""], ["d", "e"], ["f", "g"]], dtype="<U3"),
    # Fortran order (column-major in the file): np.save keeps it for an
    # F-contiguous array.
    "cube_fortran.npy": np.asfortranarray(np.array(
        [[[f"{r}{c}{k}é"[:3] for k in range(3)] for c in range(2)] for r in range(4)], dtype="<U3")),
    "bytes_fortran.npy": np.asfortranarray(np.array([[b"a", b"bb", b""], [b"cccc", b"d", b"e"],
                                                     [b"f", b"g", b"h"], [b"i", b"j", b"kk"]], dtype="S4")),
    "unicode_be_fortran.npy": np.asfortranarray(np.array([["ab", "\u00df"], ["c", ""], ["d", "e"], ["f", "g"]], dtype=">U2")),
}
for name, a in arrays.items():
    assert ("fortran" in name) == (a.ndim > 1 and not a.flags.c_contiguous), name
want = {}
for name, a in arrays.items():
    np.save(os.path.join(d, name), a, allow_pickle=False)
    want[name] = [(x if isinstance(x, bytes) else x.encode("utf-8")).hex() for x in a.reshape(-1).tolist()]
np.savez(os.path.join(d, "texts.npz"), words=arrays["unicode.npy"])
want["texts.npz/words"] = want["unicode.npy"]
print(json.dumps(want))
`
	out, err := exec.Command(py, "-c", script, dir).Output()
	if err != nil {
		t.Fatalf("numpy: %v", err)
	}
	var want map[string][]string
	if err := json.Unmarshal(out, &want); err != nil {
		t.Fatal(err)
	}
	open := func(name string) *Array {
		if name == "texts.npz/words" {
			z, err := OpenNPZ(filepath.Join(dir, "texts.npz"))
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range z {
				t.Cleanup(func() { a.Close() })
			}
			a := z["words"]
			if a == nil {
				t.Fatalf("texts.npz has members %v, not words", z)
			}
			return a
		}
		a, err := Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		return a
	}
	for name, elems := range want {
		t.Run(name, func(t *testing.T) {
			a := open(name)
			if a.DType() != String {
				t.Fatalf("dtype %s, want string", a.DType())
			}
			if fortran := strings.Contains(name, "fortran"); a.Header().Fortran != fortran {
				t.Fatalf("header's fortran_order %v, want %v", a.Header().Fortran, fortran)
			}
			w := a.TextWidth()
			rows := []int{3, 0, 2, 1} // out of order: the gather, not the file's layout
			per := len(elems) / a.Len()
			dst := make([]byte, len(rows)*per*w)
			if err := a.Gather(dst, String, rows); err != nil {
				t.Fatal(err)
			}
			for i, r := range rows {
				for e := 0; e < per; e++ {
					got := dst[(i*per+e)*w : (i*per+e+1)*w]
					got = bytes.TrimRight(got, "\x00")
					wantB, err := hex.DecodeString(elems[r*per+e])
					if err != nil {
						t.Fatal(err)
					}
					wantB = bytes.TrimRight(wantB, "\x00")
					if !bytes.Equal(got, wantB) {
						t.Errorf("row %d element %d = %q, numpy says %q", r, e, got, wantB)
					}
				}
			}
			if err := a.Gather(make([]byte, len(rows)*per*4), Float32, rows); err == nil {
				t.Error("text gathered as float32 without an error")
			}
		})
	}
}

// A part of a text array (validation_split's last rows) gathers its rows as
// the whole array does; it had gathered them into a buffer of 0 bytes and
// failed at its first batch ("needs 24 bytes but dst has 0").
func TestTextRowsGatherAsTheArray(t *testing.T) {
	py := pythonWithNumpy(t)
	path := filepath.Join(t.TempDir(), "words.npy")
	if out, err := exec.Command(py, "-c", `import sys, numpy as np
np.save(sys.argv[1], np.asarray(["ab", "c\u00e9d", "", "fgh", "i"], dtype=str))`, path).CombinedOutput(); err != nil {
		t.Fatalf("numpy: %v\n%s", err, out)
	}
	a, d := datasetOf(t, path)
	part, err := d.Rows(2, 5)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 3*a.TextWidth())
	if err := a.Gather(want, String, []int{2, 3, 4}); err != nil {
		t.Fatal(err)
	}
	it := part.Epoch(context.Background(), 0, BatchOptions{BatchSize: 3, DTypes: map[string]DType{"x": String}})
	defer it.Close()
	b, err := it.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Tensors["x"]; !bytes.Equal(got, want) {
		t.Errorf("part's batch %q, want the array's rows %q", got, want)
	}
	b.Release()
}
