package data

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"github.com/sagefit/sagefit/internal/float16"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// fixture is one entry of testdata/expected.json, written by
// testdata/gen_fixtures.py from what numpy reads back.
type fixture struct {
	Error     string           `json:"error"`
	DType     string           `json:"dtype"`
	BigEndian bool             `json:"big_endian"`
	Fortran   bool             `json:"fortran"`
	Shape     []int            `json:"shape"`
	Version   []int            `json:"version"`
	HeaderLen int              `json:"header_len"`
	Values    []num            `json:"values"`
	As        map[string][]num `json:"as"`
}

// num is a JSON number kept as text (exact for int64 and uint64 extremes),
// or one of the strings "nan", "inf", "-inf" that JSON cannot spell.
type num string

func (n *num) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*n = num(s)
		return nil
	}
	*n = num(b)
	return nil
}

type fixtureFile struct {
	Numpy string                `json:"numpy"`
	Files map[string]fixture    `json:"files"` // .npy files and .npz members ("x.npz/a.npy")
	CSV   map[string]csvFixture `json:"csv"`
}

// csvFixture is what numpy's loadtxt reads from a CSV fixture: the label
// column and the features, flattened, of the given shape.
type csvFixture struct {
	Label    []num `json:"label"`
	Features []num `json:"features"`
	Shape    []int `json:"shape"`
}

func loadFixtures(t testing.TB, dir string) fixtureFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ff fixtureFile
	if err := json.Unmarshal(b, &ff); err != nil {
		t.Fatal(err)
	}
	if len(ff.Files) == 0 {
		t.Fatal("expected.json lists no fixtures")
	}
	return ff
}

// checkElems compares little-endian elements of dtype dt in got with the
// JSON numbers numpy wrote. Floats compare by bits (so -0.0 and the
// infinities count) except NaN, which only has to be NaN.
func checkElems(t *testing.T, what string, got []byte, dt DType, want []num) {
	t.Helper()
	if len(got) != len(want)*dt.Size() {
		t.Fatalf("%s: %d bytes for %d %v elements", what, len(got), len(want), dt)
	}
	le := binary.LittleEndian
	for i, w := range want {
		b := got[i*dt.Size():]
		var ok bool
		var have string
		switch dt {
		case Bool, Uint8, Uint16, Uint32, Uint64:
			var u uint64
			switch dt.Size() {
			case 1:
				u = uint64(b[0])
			case 2:
				u = uint64(le.Uint16(b))
			case 4:
				u = uint64(le.Uint32(b))
			case 8:
				u = le.Uint64(b)
			}
			wu, err := strconv.ParseUint(string(w), 10, 64)
			ok, have = err == nil && wu == u, strconv.FormatUint(u, 10)
		case Int8, Int16, Int32, Int64:
			var n int64
			switch dt.Size() {
			case 1:
				n = int64(int8(b[0]))
			case 2:
				n = int64(int16(le.Uint16(b)))
			case 4:
				n = int64(int32(le.Uint32(b)))
			case 8:
				n = int64(le.Uint64(b))
			}
			wn, err := strconv.ParseInt(string(w), 10, 64)
			ok, have = err == nil && wn == n, strconv.FormatInt(n, 10)
		default:
			var f float64
			switch dt {
			case Float16:
				f = float64(float16.ToFloat32(le.Uint16(b)))
			case Float32:
				f = float64(math.Float32frombits(le.Uint32(b)))
			case Float64:
				f = math.Float64frombits(le.Uint64(b))
			}
			wf := jsonFloat(t, w)
			ok = math.Float64bits(f) == math.Float64bits(wf) || (math.IsNaN(f) && math.IsNaN(wf))
			have = strconv.FormatFloat(f, 'g', -1, 64)
		}
		if !ok {
			t.Errorf("%s: element %d = %s, numpy says %s", what, i, have, w)
		}
	}
}

func jsonFloat(t *testing.T, n num) float64 {
	switch n {
	case "nan":
		return math.NaN()
	case "inf":
		return math.Inf(1)
	case "-inf":
		return math.Inf(-1)
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		t.Fatalf("bad number %q in expected.json", n)
	}
	return f
}

func allRows(n int) []int {
	rows := make([]int, n)
	for i := range rows {
		rows[i] = i
	}
	return rows
}

// orderRows is an epoch's order as the row indices Gather takes.
func orderRows(n int, seed int64, epoch int) []int {
	var rows []int
	for _, r := range epochOrder(n, seed, epoch) {
		rows = append(rows, int(r))
	}
	return rows
}

// TestFixtures opens every fixture numpy wrote and compares header, values
// and every conversion with what numpy itself reads and casts.
func TestFixtures(t *testing.T) {
	ff := loadFixtures(t, "testdata")
	for _, name := range sortedNames(ff.Files) {
		fx := ff.Files[name]
		t.Run(name, func(t *testing.T) {
			path := filepath.Join("testdata", name)
			a, err := Open(path)
			if fx.Error != "" {
				if err == nil {
					a.Close()
					t.Fatalf("Open succeeded, want error %q", fx.Error)
				}
				if !strings.HasSuffix(err.Error(), fx.Error) && !strings.Contains(err.Error(), fx.Error) {
					t.Fatalf("err = %q, want %q", err, fx.Error)
				}
				if !strings.HasPrefix(err.Error(), path+": ") {
					t.Errorf("err = %q does not start with the file name", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			h := a.Header()
			if h.DType.String() != fx.DType || h.BigEndian != fx.BigEndian || h.Fortran != fx.Fortran ||
				!reflect.DeepEqual(a.Shape(), fx.Shape) || h.HeaderLen != fx.HeaderLen {
				t.Fatalf("header %+v, numpy says dtype %s big-endian %v fortran %v shape %v header length %d",
					h, fx.DType, fx.BigEndian, fx.Fortran, fx.Shape, fx.HeaderLen)
			}
			raw := fixtureBytes(t, path)
			if got := []int{int(raw[6]), int(raw[7])}; !reflect.DeepEqual(got, fx.Version) {
				t.Errorf("file version %v, numpy says %v", got, fx.Version)
			}
			if len(fx.Shape) == 0 {
				checkScalar(t, a, fx)
				return
			}
			if a.Len() != fx.Shape[0] || !reflect.DeepEqual(a.RowShape(), fx.Shape[1:]) {
				t.Errorf("Len %d RowShape %v for shape %v", a.Len(), a.RowShape(), fx.Shape)
			}
			targets := map[string]DType{"values": a.DType(), "float32": Float32, "float64": Float64,
				"float16_bits": Uint16, "bool": Bool, "int64": Int64, "uint8": Uint8, "int32": Int32}
			for _, key := range append([]string{"values"}, sortedNames(fx.As)...) {
				want := fx.Values
				if key != "values" {
					want = fx.As[key]
				}
				dt, gatherAs := targets[key], targets[key]
				if key == "float16_bits" {
					gatherAs = Float16
				}
				// In order, then in reverse, which breaks the run-copy fast
				// path and, for Fortran files, walks rows out of order.
				rows := allRows(a.Len())
				got := make([]byte, len(rows)*a.RowElems()*dt.Size())
				if err := a.Gather(got, gatherAs, rows); err != nil {
					t.Fatal(err)
				}
				checkElems(t, name+" as "+key, got, dt, want)
				rev := make([]int, len(rows))
				for i := range rev {
					rev[i] = len(rows) - 1 - i
				}
				if err := a.Gather(got, gatherAs, rev); err != nil {
					t.Fatal(err)
				}
				checkElems(t, name+" as "+key+" reversed", got, dt, reverseRows(want, a.RowElems()))
			}
			f32, err := a.Float32s()
			if err != nil {
				t.Fatal(err)
			}
			checkElems(t, name+" Float32s", float32Bytes(f32), Float32, fx.As["float32"])
		})
	}
}

// fixtureBytes reads a fixture file, or the bytes of a .npz member named
// "x.npz/a.npy".
func fixtureBytes(t testing.TB, path string) []byte {
	t.Helper()
	archive, member, ok := splitMemberPath(path)
	if !ok {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	zr, err := zip.OpenReader(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	rc, err := zr.Open(member)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkScalar(t *testing.T, a *Array, fx fixture) {
	t.Helper()
	if a.Len() != 0 || len(a.RowShape()) != 0 {
		t.Errorf("0-d array: Len %d RowShape %v, want 0 and []", a.Len(), a.RowShape())
	}
	if err := a.Gather(nil, Float32, nil); err == nil || !strings.Contains(err.Error(), "0-d array") {
		t.Errorf("Gather on a 0-d array: err = %v, want a 0-d error", err)
	}
	f32, err := a.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	checkElems(t, "scalar Float32s", float32Bytes(f32), Float32, fx.As["float32"])
}

func reverseRows(v []num, per int) []num {
	out := make([]num, 0, len(v))
	for r := len(v)/max(per, 1) - 1; r >= 0; r-- {
		out = append(out, v[r*per:(r+1)*per]...)
	}
	return out
}

func float32Bytes(f []float32) []byte {
	b := make([]byte, 4*len(f))
	for i, v := range f {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

// TestWriteNPYMatchesNumpy writes each little-endian C-order fixture again
// with WriteNPY and expects np.save's exact bytes.
func TestWriteNPYMatchesNumpy(t *testing.T) {
	ff := loadFixtures(t, "testdata")
	n := 0
	for _, name := range sortedNames(ff.Files) {
		fx := ff.Files[name]
		if fx.Error != "" || fx.BigEndian || fx.Fortran || fx.Version[0] != 1 {
			continue
		}
		path := filepath.Join("testdata", name)
		want := fixtureBytes(t, path)
		h, err := ParseHeader(bytes.NewReader(want))
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), filepath.Base(name))
		if err := WriteNPY(out, h.DType, h.Shape, want[h.HeaderLen:]); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(out)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: WriteNPY wrote\n%q\nnumpy wrote\n%q", name, got[:h.HeaderLen], want[:h.HeaderLen])
		}
		n++
	}
	if n < 10 {
		t.Fatalf("compared only %d fixtures", n)
	}
}

func TestWriteNPYErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name  string
		dt    DType
		shape []int
		data  []byte
		want  string
	}{
		{"short", Float32, []int{2, 2}, make([]byte, 15), "needs 16 bytes of data but 15 were given"},
		{"invalid dtype", Invalid, []int{1}, []byte{0}, "invalid dtype"},
		{"negative", Int8, []int{-1}, nil, "negative dimension"},
	} {
		err := WriteNPY(filepath.Join(dir, tt.name+".npy"), tt.dt, tt.shape, tt.data)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.npy")
	os.WriteFile(empty, nil, 0o644)
	for _, tt := range []struct {
		path, want string
	}{
		{filepath.Join(dir, "missing.npy"), "no such file"},
		{dir, "is a directory"},
		{empty, "empty.npy: file is empty, not a .npy file"},
	} {
		a, err := Open(tt.path)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Open(%s): err = %v, want %q", tt.path, err, tt.want)
		}
		if a != nil {
			t.Errorf("Open(%s) returned an array with its error", tt.path)
		}
	}
}

// writeRows writes an (n, per) float32 array whose element (r, e) is
// r*1000+e, so any gathered element tells where it came from.
func writeRows(t testing.TB, path string, n, per int) {
	t.Helper()
	b := make([]byte, 4*n*per)
	for r := range n {
		for e := range per {
			binary.LittleEndian.PutUint32(b[4*(r*per+e):], math.Float32bits(float32(r*1000+e)))
		}
	}
	if err := WriteNPY(path, Float32, []int{n, per}, b); err != nil {
		t.Fatal(err)
	}
}

func TestGather(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rows.npy")
	writeRows(t, path, 50, 3)
	a, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	for _, rows := range [][]int{{}, {0}, {49}, {3, 4, 5, 6}, {7, 2, 3, 4, 40, 41, 0}, {5, 5, 5}, allRows(50)} {
		for _, dt := range []DType{Float32, Float64, Int32, Float16} {
			dst := make([]byte, len(rows)*3*dt.Size())
			if err := a.Gather(dst, dt, rows); err != nil {
				t.Fatal(err)
			}
			var f64 [convChunk]float64
			for i, r := range rows {
				decode(f64[:3], dst[i*3*dt.Size():], dt)
				for e := range 3 {
					want := float64(float32(r*1000 + e))
					if dt == Float16 {
						want = float64(float16.ToFloat32(f64ToF16(want)))
					}
					if f64[e] != want {
						t.Fatalf("rows %v as %v: element (%d, %d) = %v, want %v", rows, dt, i, e, f64[e], want)
					}
				}
			}
		}
	}
	tests := []struct {
		name string
		dst  []byte
		dt   DType
		rows []int
		want string
	}{
		{"dst too short", make([]byte, 11), Float32, []int{0}, "needs 12 bytes but dst has 11"},
		{"dst too long", make([]byte, 13), Float32, []int{0}, "needs 12 bytes but dst has 13"},
		{"row past end", make([]byte, 12), Float32, []int{50}, "row 50 is out of range [0, 50)"},
		{"negative row", make([]byte, 12), Float32, []int{-1}, "row -1 is out of range"},
		{"invalid dtype", make([]byte, 12), Invalid, []int{0}, "invalid dtype"},
	}
	for _, tt := range tests {
		if err := a.Gather(tt.dst, tt.dt, tt.rows); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Gather(make([]byte, 12), Float32, []int{0}); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Gather after Close: err = %v, want a closed error", err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestFortranIndex(t *testing.T) {
	// shape (2, 3, 4) column-major: element (i, j, k) is at i + 2j + 6k.
	got := fortranIndex([]int{2, 3, 4})
	var want []int
	for j := range 3 {
		for k := range 4 {
			want = append(want, 2*j+6*k)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("fortranIndex = %v, want %v", got, want)
	}
	if got := fortranIndex([]int{5, 0}); len(got) != 0 {
		t.Fatalf("fortranIndex of an empty row = %v", got)
	}
}

// TestGatherAfterTruncate cuts a mapped file short: the next Gather must
// fail with an error naming the file instead of killing the process.
func TestGatherAfterTruncate(t *testing.T) {
	if !mmapped {
		t.Skip("arrays are read into memory on this platform, nothing can fault")
	}
	path := filepath.Join(t.TempDir(), "shrinks.npy")
	writeRows(t, path, 4096, 4) // 64 KiB of data: several pages
	a, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := os.Truncate(path, 128); err != nil {
		t.Fatal(err)
	}
	err = a.Gather(make([]byte, 16), Float32, []int{4000})
	if err == nil || !strings.Contains(err.Error(), "shrinks.npy: reading the mapped file failed") {
		t.Fatalf("err = %v, want a mapped-file error naming the file", err)
	}
}
