package data

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestOpenCSVFixtures reads the CSV files numpy's savetxt wrote, alone and
// concatenated, and compares with what numpy's loadtxt reads.
func TestOpenCSVFixtures(t *testing.T) {
	ff := loadFixtures(t, "testdata")
	a, b := ff.CSV["csv/part-a.csv"], ff.CSV["csv/part-b.csv"]
	if len(a.Label) == 0 || len(b.Label) == 0 {
		t.Fatal("expected.json has no CSV fixtures")
	}
	for _, tt := range []struct {
		name     string
		files    []string
		label    []num
		features []num
		shape    []int
	}{
		{"one file", []string{"part-a.csv"}, a.Label, a.Features, a.Shape},
		{"two files concatenate in order", []string{"part-a.csv", "part-b.csv"},
			append(append([]num{}, a.Label...), b.Label...), append(append([]num{}, a.Features...), b.Features...),
			[]int{a.Shape[0] + b.Shape[0], a.Shape[1]}},
		{"order given is kept", []string{"part-b.csv", "part-a.csv"},
			append(append([]num{}, b.Label...), a.Label...), append(append([]num{}, b.Features...), a.Features...),
			[]int{a.Shape[0] + b.Shape[0], a.Shape[1]}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var paths []string
			for _, f := range tt.files {
				paths = append(paths, filepath.Join("testdata", "csv", f))
			}
			label, features, err := OpenCSV(paths...)
			if err != nil {
				t.Fatal(err)
			}
			defer label.Close()
			defer features.Close()
			if !reflect.DeepEqual(label.Shape(), tt.shape[:1]) || !reflect.DeepEqual(features.Shape(), tt.shape) ||
				label.DType() != Float32 || features.DType() != Float32 {
				t.Fatalf("label %v %v, features %v %v; want %v float32", label.Shape(), label.DType(), features.Shape(), features.DType(), tt.shape)
			}
			lf, _ := label.Float32s()
			checkElems(t, "label", float32Bytes(lf), Float32, tt.label)
			ff, _ := features.Float32s()
			checkElems(t, "features", float32Bytes(ff), Float32, tt.features)
			if !strings.Contains(features.Path(), "part-") || !strings.Contains(label.Path(), "label") {
				t.Errorf("paths %q and %q do not say where the rows come from", label.Path(), features.Path())
			}
		})
	}
}

func TestOpenCSV(t *testing.T) {
	dir := t.TempDir()
	n := 0
	write := func(content string) string {
		n++
		p := filepath.Join(dir, "f"+string(rune('a'+n))+".csv")
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tt := range []struct {
		name     string
		files    []string // contents
		label    []float32
		features []float32
		wantErr  string // with %s for the failing file, the last one
	}{
		{name: "plain", files: []string{"1,2,3\n0,4,5\n"}, label: []float32{1, 0}, features: []float32{2, 3, 4, 5}},
		{name: "spaces, quotes, CRLF, blank lines, BOM", files: []string{"\ufeff 1 , \"2.5\",3\r\n\r\n0,4,-5e-1\r\n"},
			label: []float32{1, 0}, features: []float32{2.5, 3, 4, -0.5}},
		{name: "no newline at the end", files: []string{"1,2"}, label: []float32{1}, features: []float32{2}},
		{name: "nan and inf are numbers", files: []string{"nan,inf,-inf\n"}, label: []float32{float32(math.NaN())},
			features: []float32{float32(math.Inf(1)), float32(math.Inf(-1))}},
		{name: "an empty file among others", files: []string{"", "1,2\n"}, label: []float32{1}, features: []float32{2}},
		{name: "non-numeric cell", files: []string{"1,2,3\n0,x7,5\n"}, wantErr: `%s line 2 column 2: "x7" is not a number`},
		// As np.loadtxt reads them: to float64, then float32 (a decimal
		// halfway between two float32s was rounded straight to float32,
		// the other way), and no Go literal syntax.
		{name: "halfway between two float32s", files: []string{"2.0409191846847534,1\n"}, label: []float32{float32(viaFloat64(2.0409191846847534))}, features: []float32{1}},
		{name: "a signed nan, as C writes it", files: []string{"-nan,1\n"}, label: []float32{float32(math.NaN())}, features: []float32{1}},
		{name: "past float32 on the first row is no header", files: []string{"1,1e39\n"}, wantErr: `%s line 1 column 2: "1e39" is out of float32 range$`},
		{name: "digit separator", files: []string{"1_000,2\n"}, wantErr: `%s line 1 column 1: "1_000" is not a number`},
		{name: "hex float", files: []string{"1,-0x1p-2\n"}, wantErr: `%s line 1 column 2: "-0x1p-2" is not a number`},
		{name: "lone carriage returns", files: []string{"1,2\r0,3\r"}, wantErr: `%s line 1 column 2: "2\r0" is not a number (its lines end in a lone carriage return`},
		{name: "a quoted cell over two lines", files: []string{"1,\"2\n\",x\n"}, wantErr: `%s line 2 column 3: "x" is not a number`},
		{name: "header row", files: []string{"label,a,b\n1,2,3\n"}, wantErr: `%s line 1 column 1: "label" is not a number (text/csv channels have no header row; remove it)`},
		{name: "header row of a later file", files: []string{"1,2,3\n", "y,a,b\n"}, wantErr: `%s line 1 column 1: "y" is not a number (text/csv channels have no header row`},
		{name: "ragged row", files: []string{"1,2,3\n0,4\n"}, wantErr: "%s line 2 has 2 columns but "},
		{name: "ragged across files", files: []string{"1,2,3\n", "\n\n0,4,5,6\n"}, wantErr: "%s line 3 has 4 columns but "},
		{name: "empty cell", files: []string{"1,,3\n"}, wantErr: "%s line 1 column 2: empty cell; every cell needs a number"},
		{name: "one column", files: []string{"1\n2\n"}, wantErr: "%s line 1 has 1 column; a CSV channel needs the label in the first column and at least one feature"},
		{name: "no rows", files: []string{"\n\n"}, wantErr: "%s: CSV file holds no rows"},
		{name: "out of float32 range", files: []string{"1,1e39\n"}, wantErr: `%s line 1 column 2: "1e39" is out of float32 range`},
		{name: "bad quoting", files: []string{"1,\"2\n"}, wantErr: "%s line 1 column"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var paths []string
			for _, c := range tt.files {
				paths = append(paths, write(c))
			}
			label, features, err := OpenCSV(paths...)
			if tt.wantErr != "" {
				want := strings.ReplaceAll(tt.wantErr, "%s", paths[len(paths)-1])
				whole, ok := strings.CutSuffix(want, "$") // $: the message ends there
				if err == nil || !strings.Contains(err.Error(), whole) || ok && !strings.HasSuffix(err.Error(), whole) {
					t.Fatalf("err = %v\nwant %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			lf, _ := label.Float32s()
			ff, _ := features.Float32s()
			if !sameFloats(lf, tt.label) || !sameFloats(ff, tt.features) {
				t.Errorf("label %v features %v, want %v %v", lf, ff, tt.label, tt.features)
			}
			if features.Len() != len(tt.label) || label.Len() != len(tt.label) {
				t.Errorf("rows: label %d features %d, want %d", label.Len(), features.Len(), len(tt.label))
			}
		})
	}
	if _, _, err := OpenCSV(); err == nil {
		t.Error("OpenCSV() without files: no error")
	}
	if _, _, err := OpenCSV(filepath.Join(dir, "missing.csv")); err == nil || !strings.Contains(err.Error(), "missing.csv") {
		t.Errorf("missing file: err = %v", err)
	}
}

// sameFloats compares by value, NaN equal to NaN.
func sameFloats(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && !(a[i] != a[i] && b[i] != b[i]) {
			return false
		}
	}
	return true
}

// TestCSVTextFeatures reads the feature columns as text for a string
// input: cells as written (quotes removed), NUL-padded to the widest.
func TestCSVTextFeatures(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "train.csv")
	// " h\u00e9" keeps its space, as Python's csv module reads it (it was
	// trimmed, and the model saw other text than fit).
	if err := os.WriteFile(path, []byte("1,red,\"big, round\"\n 0,, h\u00e9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	label, features, err := openCSV(func(p string) string { return p }, true, path)
	if err != nil {
		t.Fatal(err)
	}
	defer label.Close()
	defer features.Close()
	if features.DType() != String || features.TextWidth() != len("big, round") {
		t.Fatalf("features %s of width %d, want text of width %d", features.Header(), features.TextWidth(), len("big, round"))
	}
	w := features.TextWidth()
	dst := make([]byte, 2*2*w)
	if err := features.Gather(dst, String, []int{1, 0}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for e := 0; e < 4; e++ {
		got = append(got, strings.TrimRight(string(dst[e*w:(e+1)*w]), "\x00"))
	}
	if want := []string{"", " h\u00e9", "red", "big, round"}; !slices.Equal(got, want) {
		t.Errorf("cells %q, want %q", got, want)
	}
	lv := make([]byte, 8)
	if err := label.Gather(lv, Float32, []int{0, 1}); err != nil {
		t.Fatal(err)
	}
	if l := []float32{math.Float32frombits(binary.LittleEndian.Uint32(lv)), math.Float32frombits(binary.LittleEndian.Uint32(lv[4:]))}; l[0] != 1 || l[1] != 0 {
		t.Errorf("labels %v, want [1 0]", l)
	}
}

// viaFloat64 is v as a float64 variable: float32(viaFloat64(c)) rounds the
// constant c twice, as numpy does, where float32(c) rounds it once.
func viaFloat64(v float64) float64 { return v }
