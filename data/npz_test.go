package data

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestOpenNPZ opens the archives numpy wrote with np.savez (stored members,
// mapped in place) and np.savez_compressed (deflated, decompressed) and
// checks every member against what numpy reads.
func TestOpenNPZ(t *testing.T) {
	ff := loadFixtures(t, "testdata")
	for _, tt := range []struct {
		file   string
		keys   []string
		mapped bool
	}{
		{"savez.npz", []string{"cube", "labels", "train"}, true},
		{"savez_compressed.npz", []string{"cube", "labels", "train"}, false},
		{"positional.npz", []string{"arr_0", "arr_1"}, true},
		{"tensors.npz", []string{"a", "b", "price"}, false},
	} {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			arrays, err := OpenNPZ(path)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				for _, a := range arrays {
					if err := a.Close(); err != nil {
						t.Error(err)
					}
				}
			}()
			if got := sortedNames(arrays); !reflect.DeepEqual(got, tt.keys) {
				t.Fatalf("members %v, want %v", got, tt.keys)
			}
			for _, key := range tt.keys {
				a := arrays[key]
				name := tt.file + "/" + key + ".npy"
				fx, ok := ff.Files[name]
				if !ok {
					t.Fatalf("expected.json has no %s", name)
				}
				if a.Path() != path+":"+key+".npy" {
					t.Errorf("Path = %q, want %q", a.Path(), path+":"+key+".npy")
				}
				if !reflect.DeepEqual(a.Shape(), fx.Shape) || a.DType().String() != fx.DType || a.Header().Fortran != fx.Fortran {
					t.Errorf("%s: shape %v %v fortran %v, numpy says %v %s %v", name, a.Shape(), a.DType(), a.Header().Fortran, fx.Shape, fx.DType, fx.Fortran)
				}
				if mmapped && (a.mapping != nil) != tt.mapped {
					t.Errorf("%s: memory-mapped = %v, want %v", name, a.mapping != nil, tt.mapped)
				}
				got := make([]byte, a.Len()*a.RowElems()*4)
				if err := a.Gather(got, Float32, allRows(a.Len())); err != nil {
					t.Fatal(err)
				}
				checkElems(t, name, got, Float32, fx.As["float32"])
			}
		})
	}
}

// TestNPZStoredMatchesCompressed: both ways numpy saves the same arrays
// read back the same, row by row, in any order.
func TestNPZStoredMatchesCompressed(t *testing.T) {
	stored, err := OpenNPZ(filepath.Join("testdata", "savez.npz"))
	if err != nil {
		t.Fatal(err)
	}
	deflated, err := OpenNPZ(filepath.Join("testdata", "savez_compressed.npz"))
	if err != nil {
		t.Fatal(err)
	}
	for key, s := range stored {
		d := deflated[key]
		rows := []int{4, 0, 2, 2, 1}
		for _, dt := range []DType{s.DType(), Float64} {
			a := make([]byte, len(rows)*s.RowElems()*dt.Size())
			b := make([]byte, len(a))
			if err := s.Gather(a, dt, rows); err != nil {
				t.Fatal(err)
			}
			if err := d.Gather(b, dt, rows); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Errorf("%s as %v: stored and compressed members differ", key, dt)
			}
		}
		s.Close()
		d.Close()
	}
	if len(stored) != 3 {
		t.Fatalf("savez.npz: %d members", len(stored))
	}
}

// rewriteZip copies the members of a fixture archive, raw (still
// compressed), into a new one, letting edit change each member's header
// and raw bytes.
func rewriteZip(t *testing.T, src, dst string, edit func(h *zip.FileHeader, raw []byte) []byte) {
	t.Helper()
	zr, err := zip.OpenReader(src)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, zf := range zr.File {
		r, err := zf.OpenRaw()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		h := zf.FileHeader
		raw = edit(&h, raw)
		w, err := zw.CreateRaw(&h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(raw)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestNPZErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	savez, err := os.ReadFile(filepath.Join("testdata", "savez.npz"))
	if err != nil {
		t.Fatal(err)
	}
	notZip := write("not_zip.npz", []byte("x,y\n1,2\n"))
	var none bytes.Buffer
	zip.NewWriter(&none).Close()
	empty := write("empty.npz", none.Bytes())      // skipped without a word (a probe)
	cut := write("cut.npz", savez[:len(savez)-30]) // central directory damaged
	// Stored members end where the next local header starts; keep the
	// central directory but drop the data of the last member.
	zipOf := func(name string, h *zip.FileHeader, body string) string {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		w, err := zw.CreateRaw(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(body))
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		return write(name, buf.Bytes())
	}
	extra := zipOf("extra.npz", &zip.FileHeader{Name: "readme.txt", CompressedSize64: 2, UncompressedSize64: 2}, "hi")
	bzip := zipOf("bzip2.npz", &zip.FileHeader{Name: "x.npy", Method: 12, CompressedSize64: 3, UncompressedSize64: 9}, "abc")
	encrypted := zipOf("encrypted.npz", &zip.FileHeader{Name: "x.npy", Flags: 0x1, CompressedSize64: 3, UncompressedSize64: 3}, "abc")
	// A stored member that claims more bytes than the file holds.
	gone := zipOf("gone.npz", &zip.FileHeader{Name: "x.npy", CompressedSize64: 1 << 20, UncompressedSize64: 1 << 20}, "abc")
	// A deflated member whose header, and the archive's sizes, claim 100
	// million rows, from a few hundred bytes: more than deflate inflates to.
	hdr := encodeHeader(Header{DType: Float32, Shape: []int{100_000_000, 4}})
	var comp bytes.Buffer
	fw, _ := flate.NewWriter(&comp, flate.BestCompression)
	fw.Write(append(hdr, make([]byte, 4096)...))
	fw.Close()
	lying := zipOf("lying.npz", &zip.FileHeader{Name: "x.npy", Method: zip.Deflate,
		CompressedSize64: uint64(comp.Len()), UncompressedSize64: uint64(len(hdr)) + 1_600_000_000}, comp.String())
	// The same, its compressed size a lie too (Go's zip reader takes it).
	lyingTwice := zipOf("lying_twice.npz", &zip.FileHeader{Name: "x.npy", Method: zip.Deflate,
		CompressedSize64: 1 << 30, UncompressedSize64: uint64(len(hdr)) + 1_600_000_000}, comp.String())
	// A deflated member whose CRC does not match its data.
	badCRC := filepath.Join(dir, "bad_crc.npz")
	rewriteZip(t, filepath.Join("testdata", "savez_compressed.npz"), badCRC, func(h *zip.FileHeader, raw []byte) []byte {
		if h.Name == "labels.npy" {
			h.CRC32 ^= 1
		}
		return raw
	})
	// A stored member whose .npy header claims more data than it holds.
	short := filepath.Join(dir, "short.npz")
	rewriteZip(t, filepath.Join("testdata", "savez.npz"), short, func(h *zip.FileHeader, raw []byte) []byte {
		h.CompressedSize64 -= 8
		h.UncompressedSize64 -= 8
		return raw[:len(raw)-8]
	})
	for _, tt := range []struct {
		name, path, want string
	}{
		{"not a zip", notZip, "not_zip.npz: not a .npz file (not a zip archive, or a truncated one)"},
		{"no members", empty, "empty.npz holds no arrays (np.savez with none); remove it"},
		{"damaged directory", cut, "cut.npz: not a .npz file"},
		{"member not an array", extra, `extra.npz: member "readme.txt" is not a .npy array`},
		{"unknown compression", bzip, "bzip2.npz:x.npy: compression method 12 is not supported"},
		{"encrypted", encrypted, "encrypted.npz:x.npy: the member is encrypted"},
		{"more than deflate inflates to", lying, "lying.npz:x.npy: the archive says the member inflates to 1600000128 bytes from "},
		{"compressed size past the end", lyingTwice, "lying_twice.npz:x.npy: the archive is truncated: the member needs 1073741824 bytes but only"},
		{"data past the end", gone, "gone.npz:x.npy: the archive is truncated: the member needs 1048576 bytes but only"},
		{"stored member truncated", short, "short.npz:train.npy: file is truncated: header says shape (5, 3) float32 = 60 bytes of data but only 52 follow"},
		{"missing", filepath.Join(dir, "missing.npz"), "no such file"},
		{"directory", dir, "is a directory"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			arrays, err := OpenNPZ(tt.path)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v\nwant %q", err, tt.want)
			}
			if arrays != nil {
				t.Errorf("arrays returned with the error")
			}
		})
	}
	// A deflated member is checked from its header when opened and
	// inflated (its CRC checked) on first use.
	arrays, err := OpenNPZ(badCRC)
	if err != nil {
		t.Fatalf("open %s: %v", badCRC, err)
	}
	defer func() {
		for _, a := range arrays {
			a.Close()
		}
	}()
	if _, err := arrays["labels"].Float32s(); err == nil || !strings.Contains(err.Error(), "bad_crc.npz:labels.npy: the archive's compressed member is corrupt or cut short (inflating it: zip: checksum error)") {
		t.Errorf("bad CRC on first use: err = %v", err)
	}
}

// TestOpenMemberPath: Open takes "<archive>.npz/<member>.npy", the path
// ListChannel lists members as.
func TestOpenMemberPath(t *testing.T) {
	for _, tt := range []struct {
		path, want string
		notExist   bool
	}{
		{path: "testdata/savez.npz/labels.npy"},
		{path: "testdata/savez_compressed.npz/labels.npy"},
		{path: "testdata/savez.npz/labels"},
		{path: "testdata/savez.npz/nope.npy", want: `testdata/savez.npz:nope.npy: no such array in savez.npz, which holds ["train" "labels" "cube"]`, notExist: true},
		{path: "testdata/savez.npz", want: "testdata/savez.npz: is a zip archive (.npz), not a .npy file; open it with OpenNPZ"},
		{path: "testdata/missing.npz/x.npy", want: "no such file", notExist: true},
	} {
		a, err := Open(tt.path)
		if tt.want == "" {
			if err != nil {
				t.Errorf("Open(%s): %v", tt.path, err)
				continue
			}
			if want := strings.Replace(strings.TrimSuffix(tt.path, ".npy"), ".npz/", ".npz:", 1) + ".npy"; a.Len() != 5 || a.DType() != Int64 || a.Path() != want {
				t.Errorf("Open(%s): Len %d %v path %s", tt.path, a.Len(), a.DType(), a.Path())
			}
			a.Close()
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Open(%s): err = %v\nwant %q", tt.path, err, tt.want)
		}
		if errors.Is(err, fs.ErrNotExist) != tt.notExist {
			t.Errorf("Open(%s): errors.Is(err, fs.ErrNotExist) = %v", tt.path, !tt.notExist)
		}
	}
}
