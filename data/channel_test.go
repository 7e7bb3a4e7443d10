package data

import (
	"context"
	"encoding/binary"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// makeChannel creates files (empty unless they are fixtures: "x=fixture"
// copies testdata/fixture to x) under a new channel directory.
func makeChannel(t *testing.T, files ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range files {
		name, fixture, copyIt := strings.Cut(f, "=")
		var body []byte
		if copyIt {
			var err error
			if body, err = os.ReadFile(filepath.Join("testdata", fixture)); err != nil {
				t.Fatal(err)
			}
		}
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestListChannel(t *testing.T) {
	dir := makeChannel(t,
		"train.npy", "labels.NPY", ".hidden.npy", "sub/part.npy", ".meta/skip.npy", "sub/.deeper/skip.npy", "sub/empty/.keep",
		"_SUCCESS", "_temporary/0/part.parquet", "train.manifest", ".DS_Store", "arch.npz=savez.npz")
	if err := os.Symlink(filepath.Join(dir, "train.npy"), filepath.Join(dir, "linked.npy")); err != nil {
		t.Fatal(err)
	}
	got, err := ListChannel(dir)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range []string{"arch.npz/cube.npy", "arch.npz/labels.npy", "arch.npz/train.npy",
		"labels.NPY", "linked.npy", "sub/part.npy", "train.npy"} {
		want = append(want, filepath.Join(dir, f))
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ListChannel = %v\nwant %v", got, want)
	}
	if _, err := ListChannel(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing dir: err = %v, want one naming the dir", err)
	}
	empty := t.TempDir()
	if got, err := ListChannel(empty); err != nil || len(got) != 0 {
		t.Errorf("empty channel: %v, %v; want no files and no error", got, err)
	}

	// A dangling link and a file two folders down were skipped without a
	// word (a sample_weight.npy among them left the rows unweighted). They
	// are named from the channel's root, as the user laid them out.
	dangling := makeChannel(t, "train.npy")
	os.Symlink(filepath.Join(dangling, "gone.npy"), filepath.Join(dangling, "sample_weight.npy"))
	if _, err := ListChannel(dangling); err == nil || !strings.Contains(err.Error(), "file sample_weight.npy is a link to "+filepath.Join(dangling, "gone.npy")+", which cannot be read (no such file or directory)") {
		t.Errorf("dangling link: err = %v", err)
	}
	deep := makeChannel(t, "train.npy", "a/b/sample_weight.npy")
	if _, err := ListChannel(deep); err == nil || !strings.Contains(err.Error(), "file "+filepath.Join("a", "b", "sample_weight.npy")+" is two folders down") {
		t.Errorf("two folders down: err = %v", err)
	}
}

// TestListChannelFormats: what a channel may hold, and the errors for
// what it may not.
func TestListChannelFormats(t *testing.T) {
	for _, tt := range []struct {
		name    string
		files   []string
		want    []string
		wantErr string // %s is the channel directory
	}{
		{name: "csv files", files: []string{"b.csv", "a.CSV", "sub/c.csv", "_SUCCESS"}, want: []string{"a.CSV", "b.csv", "sub/c.csv"}},
		{name: "npz only", files: []string{"d.npz=tensors.npz"}, want: []string{"d.npz/a.npy", "d.npz/b.npy", "d.npz/price.npy"}},
		{name: "npy and npz", files: []string{"z.npy", "d.npz=positional.npz"}, want: []string{"d.npz/arr_0.npy", "d.npz/arr_1.npy", "z.npy"}},
		{name: "parquet", files: []string{"train.npy", "part-0.parquet"},
			wantErr: "channel file part-0.parquet: .parquet files are not supported; sagefit reads .npy, .npz and text/csv (.csv) files"},
		{name: "tfrecord", files: []string{"sub/train.tfrecord"}, wantErr: "channel file sub/train.tfrecord: .tfrecord files are not supported; sagefit reads .npy, .npz and text/csv (.csv)"},
		{name: "json", files: []string{"a.json"}, wantErr: ".json files are not supported"},
		{name: "backup", files: []string{"a.npy.bak"}, wantErr: "a.npy.bak: .bak files are not supported"},
		{name: "no extension", files: []string{"part-00000"},
			wantErr: "channel file part-00000 has no extension; sagefit reads .npy, .npz and text/csv (.csv) files (files without one only with the channel's ContentType set to text/csv)"},
		{name: "csv and npy", files: []string{"a.csv", "b.npy", "c.npz=savez.npz"},
			wantErr: "channel %s mixes CSV files [a.csv] with numpy files [b.npy c.npz]; keep one format per channel"},
		{name: "npz that is not a zip", files: []string{"bad.npz=float32_le.npy"}, wantErr: "bad.npz: not a .npz file"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := makeChannel(t, tt.files...)
			got, err := ListChannel(dir)
			if tt.wantErr != "" {
				want := strings.ReplaceAll(tt.wantErr, "%s", dir)
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("err = %v\nwant %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, f := range tt.want {
				want = append(want, filepath.Join(dir, f))
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("ListChannel = %v\nwant %v", got, want)
			}
		})
	}
}

func TestMapTensors(t *testing.T) {
	ch := func(names ...string) []string {
		var out []string
		for _, n := range names {
			out = append(out, "/opt/ml/input/data/train/"+n)
		}
		return out
	}
	const p = "/opt/ml/input/data/train/"
	tests := []struct {
		name      string
		files     []string
		inputs    []string
		targets   []string
		overrides map[string]string
		want      map[string]string
		wantErr   string
	}{
		{
			name: "conventional names", files: ch("labels.npy", "train.npy"),
			inputs: []string{"dense_input"}, targets: []string{"output_1"},
			want: map[string]string{"dense_input": p + "train.npy", "output_1": p + "labels.npy"},
		},
		{
			name: "x and y", files: ch("x.npy", "y.npy"), inputs: []string{"in"}, targets: []string{"out"},
			want: map[string]string{"in": p + "x.npy", "out": p + "y.npy"},
		},
		{
			name: "tensor names win over conventions", files: ch("a.npy", "b.npy", "labels.npy", "target.npy"),
			inputs: []string{"a", "b"}, targets: []string{"target"},
			want: map[string]string{"a": p + "a.npy", "b": p + "b.npy", "target": p + "target.npy"},
		},
		{
			name: "target by name, input by convention", files: ch("features.npy", "y.npy", "extra.npy"),
			inputs: []string{"pixels"}, targets: []string{"y"},
			want: map[string]string{"pixels": p + "features.npy", "y": p + "y.npy"},
		},
		{
			name: "no targets", files: ch("data.npy"), inputs: []string{"in"},
			want: map[string]string{"in": p + "data.npy"},
		},
		{
			name: "overrides by base name, by .npy name and by path", files: ch("f1.npy", "f2.npy", "sub/lab.npy", "other/lab.npy"),
			inputs: []string{"a", "b"}, targets: []string{"y"},
			overrides: map[string]string{"a": "f2", "b": "f1.npy", "y": "sub/lab.npy"},
			want:      map[string]string{"a": p + "f2.npy", "b": p + "f1.npy", "y": p + "sub/lab.npy"},
		},
		{
			name: "override beats the tensor's own name", files: ch("a.npy", "b.npy"),
			inputs: []string{"a"}, overrides: map[string]string{"a": "b"},
			want: map[string]string{"a": p + "b.npy"},
		},
		{
			// It said "name it b.npy", which was there, taken by the override.
			name: "own file taken by an override", files: ch("a.npy", "b.npy", "labels.npy"),
			inputs: []string{"a", "b"}, targets: []string{"y"}, overrides: map[string]string{"a": "b.npy"},
			wantErr: `no file for model input "b": its file b.npy feeds "a" by hyperparameter sagefit_inputs; name a file for "b" there too (one file may feed both: {"b": "b.npy", "a": "b.npy"})`,
		},
		{
			// An autoencoder's target mapped onto its only input's
			// train.npy: it said "name it x.npy or train.npy" (found by a
			// probe).
			name: "only input's conventional file taken by an override", files: ch("train.npy"),
			inputs: []string{"x"}, targets: []string{"recon"}, overrides: map[string]string{"recon": "train.npy"},
			wantErr: `no file for model input "x": its file train.npy feeds "recon" by hyperparameter sagefit_inputs; name a file for "x" there too (one file may feed both: {"x": "train.npy", "recon": "train.npy"})`,
		},
		{
			name: "missing input", files: ch("a.npy", "labels.npy"),
			inputs: []string{"a", "b"}, targets: []string{"y"},
			wantErr: `no file for model input "b" in channel files [a.npy labels.npy]; name it b.npy or set hyperparameter sagefit_inputs`,
		},
		{
			name: "missing target", files: ch("train.npy"), inputs: []string{"x"}, targets: []string{"out"},
			wantErr: `no file for model target "out" in channel files [train.npy]; name it out.npy or labels.npy or set hyperparameter sagefit_inputs`,
		},
		{
			name: "empty channel", files: nil, inputs: []string{"x"},
			wantErr: `no file for model input "x" in channel files []`,
		},
		{
			name: "two conventional inputs", files: ch("train.npy", "x.npy"), inputs: []string{"in"},
			wantErr: `model tensor "in" could come from any of the channel files [train.npy x.npy]`,
		},
		{
			name: "override for unknown tensor", files: ch("train.npy"), inputs: []string{"in"},
			overrides: map[string]string{"inp": "train"},
			wantErr:   `file override for "inp" names no model tensor`,
		},
		{
			name: "override matches nothing", files: ch("train.npy"), inputs: []string{"in"},
			overrides: map[string]string{"in": "features"},
			wantErr:   `file override for "in": "features" matches no file in channel files [train.npy]`,
		},
		{
			name: "ambiguous override", files: ch("sub/lab.npy", "other/lab.npy"), targets: []string{"y"},
			overrides: map[string]string{"y": "lab"},
			wantErr:   `"lab" matches several files`,
		},
		{
			name: "tensor name in two folders", files: ch("a/x.npy", "b/x.npy"), inputs: []string{"x"},
			wantErr: `model tensor "x" matches several channel files [x.npy x.npy]`,
		},
		{
			name: "npz members map like files", files: ch("data.npz/labels.npy", "data.npz/train.npy"),
			inputs: []string{"dense_input"}, targets: []string{"output_1"},
			want: map[string]string{"dense_input": p + "data.npz/train.npy", "output_1": p + "data.npz/labels.npy"},
		},
		{
			name: "npz members named after tensors", files: ch("d.npz/a.npy", "d.npz/b.npy", "d.npz/price.npy"),
			inputs: []string{"a", "b"}, targets: []string{"price"},
			want: map[string]string{"a": p + "d.npz/a.npy", "b": p + "d.npz/b.npy", "price": p + "d.npz/price.npy"},
		},
		{
			name: "override picks one archive's member", files: ch("d.npz/x.npy", "e.npz/x.npy"),
			inputs: []string{"in"}, overrides: map[string]string{"in": "e.npz/x"},
			want: map[string]string{"in": p + "e.npz/x.npy"},
		},
		{
			// The name the errors give a member works too (a probe found it
			// refused, naming it among the channel's files).
			name: "override names a member as errors do", files: ch("d.npz/x.npy", "e.npz/x.npy"),
			inputs: []string{"in"}, overrides: map[string]string{"in": "e.npz:x.npy"},
			want: map[string]string{"in": p + "e.npz/x.npy"},
		},
		{
			name: "member and file of one name", files: ch("x.npy", "d.npz/x.npy"), inputs: []string{"x"},
			wantErr: `model tensor "x" matches several channel files [x.npy d.npz:x.npy]`,
		},
		{
			name: "csv does not map by name", files: ch("a.csv", "b.csv"), inputs: []string{"a"},
			wantErr: "channel files [a.csv b.csv] are CSV, which feeds a model by column (the label first), not by file name",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MapTensors(tt.files, tt.inputs, tt.targets, tt.overrides)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v\nwant %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v\nwant %v", got, tt.want)
			}
		})
	}
}

// epochFloats reads one unshuffled epoch of a dataset, every tensor as
// float32, in batches of 2.
func epochFloats(t *testing.T, d *Dataset) map[string][]float32 {
	t.Helper()
	dts := map[string]DType{}
	for _, n := range d.Names() {
		dts[n] = Float32
	}
	it := d.Epoch(context.Background(), 0, BatchOptions{BatchSize: 2, DTypes: dts})
	defer it.Close()
	out := map[string][]float32{}
	for {
		b, err := it.Next(context.Background())
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		for name, raw := range b.Tensors {
			for i := 0; i < len(raw); i += 4 {
				out[name] = append(out[name], math.Float32frombits(binary.LittleEndian.Uint32(raw[i:])))
			}
		}
		b.Release()
	}
}

// TestOpenChannelFormats opens channels of every format end to end and
// checks which data feeds which tensor, row for row.
func TestOpenChannelFormats(t *testing.T) {
	ff := loadFixtures(t, "testdata")
	fixture := func(name string) []float32 {
		var out []float32
		for _, v := range ff.Files[name].As["float32"] {
			out = append(out, float32(jsonFloat(t, v)))
		}
		return out
	}
	csvA, csvB := ff.CSV["csv/part-a.csv"], ff.CSV["csv/part-b.csv"]
	nums := func(parts ...[]num) []float32 {
		var out []float32
		for _, p := range parts {
			for _, v := range p {
				out = append(out, float32(jsonFloat(t, v)))
			}
		}
		return out
	}
	for _, tt := range []struct {
		name            string
		files           []string
		contentType     string
		inputs, targets []string
		overrides       map[string]string
		want            map[string][]float32 // tensor -> values
		paths           map[string]string    // tensor -> end of its Array's Path
		wantErr         string               // %s is the channel directory
	}{
		{
			name: "savez archive with train and labels", files: []string{"data.npz=savez.npz"},
			inputs: []string{"dense_input"}, targets: []string{"output_1"},
			want:  map[string][]float32{"dense_input": fixture("savez.npz/train.npy"), "output_1": fixture("savez.npz/labels.npy")},
			paths: map[string]string{"dense_input": "data.npz:train.npy", "output_1": "data.npz:labels.npy"},
		},
		{
			name: "savez_compressed archive named after the tensors", files: []string{"sub/t.npz=tensors.npz"},
			inputs: []string{"a", "b"}, targets: []string{"price"},
			want: map[string][]float32{"a": fixture("tensors.npz/a.npy"), "b": fixture("tensors.npz/b.npy"),
				"price": fixture("tensors.npz/price.npy")},
		},
		{
			name: "archive member and a .npy file", files: []string{"x.npz=savez_compressed.npz", "y.npy=vector.npy"},
			contentType: "application/x-npy", inputs: []string{"cube"}, targets: []string{"labels"},
			want: map[string][]float32{"cube": fixture("savez_compressed.npz/cube.npy"), "labels": fixture("savez_compressed.npz/labels.npy")},
		},
		{
			name: "csv files concatenate in sorted order", files: []string{"b/part-b.csv=csv/part-b.csv", "a/part-a.csv=csv/part-a.csv"},
			inputs: []string{"features_in"}, targets: []string{"target"},
			want:  map[string][]float32{"features_in": nums(csvA.Features, csvB.Features), "target": nums(csvA.Label, csvB.Label)},
			paths: map[string]string{"features_in": "a/part-a.csv (and 1 more CSV files) columns 2-4 (features)", "target": "a/part-a.csv (and 1 more CSV files) column 1 (label)"},
		},
		{
			name: "text/csv reads files without an extension", files: []string{"part-00000=csv/part-b.csv", "part-00001.txt=csv/part-a.csv"},
			contentType: "text/csv; label_size=1", inputs: []string{"x"}, targets: []string{"y"},
			want: map[string][]float32{"x": nums(csvB.Features, csvA.Features), "y": nums(csvB.Label, csvA.Label)},
		},
		{
			name: "csv feeds one input and one target", files: []string{"a.csv=csv/part-a.csv"},
			inputs: []string{"a", "b"}, targets: []string{"y"},
			wantErr: `channel %s is CSV (label in the first column, features after it), which feeds a model with one input and one target; this model has inputs ["a" "b"] and targets ["y"]`,
		},
		{
			name: "csv takes no file overrides", files: []string{"a.csv=csv/part-a.csv"},
			inputs: []string{"x"}, targets: []string{"y"}, overrides: map[string]string{"x": "a"},
			wantErr: "channel %s is CSV, whose columns map to the model's only input and target, so hyperparameter sagefit_inputs",
		},
		{
			name: "text/csv with a numpy file", files: []string{"a.csv=csv/part-a.csv", "b.npy=vector.npy"}, contentType: "text/csv",
			inputs: []string{"x"}, targets: []string{"y"},
			wantErr: "channel %s has ContentType text/csv but holds the numpy file b.npy",
		},
		{
			// It trained as CSV without a word.
			name: "a numpy ContentType on CSV files", files: []string{"b.csv=csv/part-b.csv", "a.csv=csv/part-a.csv"}, contentType: "application/x-npy",
			inputs: []string{"x"}, targets: []string{"y"},
			wantErr: "channel %s has ContentType application/x-npy but holds CSV files (a.csv); set the ContentType to text/csv, or drop it",
		},
		{
			name: "text/csv with no files", contentType: "text/csv", inputs: []string{"x"}, targets: []string{"y"},
			wantErr: "channel %s has ContentType text/csv but holds no files",
		},
		{
			name: "label_size other than 1", files: []string{"a.csv=csv/part-a.csv"}, contentType: "text/csv;label_size=2",
			inputs: []string{"x"}, targets: []string{"y"},
			wantErr: `ContentType "text/csv;label_size=2": only label_size=1 is supported`,
		},
		{
			name: "csv with sample weights", files: []string{"a.csv=csv/part-a.csv", "sample_weight.npy=vector.npy"},
			inputs: []string{"x"}, targets: []string{"y"},
			wantErr: "channel %s mixes CSV files [a.csv] with numpy files [sample_weight.npy]; a CSV channel carries no sample weights",
		},
		{
			// Dropped without a word, the header row then refused as "not a number".
			name: "a CSV parameter sagefit does not read", files: []string{"a.csv=csv/part-a.csv"}, contentType: "text/csv; header=present",
			inputs: []string{"x"}, targets: []string{"y"},
			wantErr: `ContentType "text/csv; header=present": parameter header=present is not read: sagefit's CSV has no header row`,
		},
		{
			name: "bad csv names file and line", files: []string{"a.csv=csv/part-a.csv", "b.csv=v3.npy"},
			inputs: []string{"x"}, targets: []string{"y"},
			wantErr: "b.csv line 1 column 1:",
		},
		{
			name: "member and file of one name", files: []string{"data.npz=savez.npz", "labels.npy=vector.npy"},
			inputs: []string{"train"}, targets: []string{"labels"},
			wantErr: "matches several channel files [data.npz:labels.npy labels.npy]",
		},
		{
			name: "member rows differ from a file's", files: []string{"data.npz=savez.npz", "y.npy=int8.npy"},
			inputs: []string{"train"}, targets: []string{"y"},
			wantErr: "data.npz:train.npy has 5 rows but y.npy has 3",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := makeChannel(t, tt.files...)
			d, err := OpenChannel(dir, tt.inputs, tt.targets, tt.overrides, WithContentType(tt.contentType))
			if tt.wantErr != "" {
				want := strings.ReplaceAll(tt.wantErr, "%s", dir)
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("err = %v\nwant %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			got := epochFloats(t, d)
			for name, want := range tt.want {
				if !sameFloats(got[name], want) {
					t.Errorf("%s = %v\nwant %v", name, got[name], want)
				}
			}
			if len(got) != len(tt.want) {
				t.Errorf("tensors %v, want %v", sortedNames(got), sortedNames(tt.want))
			}
			for name, end := range tt.paths {
				if a := soleArray(d, name); a == nil || a.Path() != end {
					t.Errorf("%q is not one array named %q (relative to the channel)", name, end)
				}
			}
			if d.Arrays("nope") != nil {
				t.Error("Arrays of an unknown tensor is not nil")
			}
		})
	}
}

// soleArray is the one array behind the named tensor, nil if there is none
// or several.
func soleArray(d *Dataset, name string) *Array {
	if as := d.Arrays(name); len(as) == 1 {
		return as[0]
	}
	return nil
}
