package data

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestListChannel(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{
		"train.npy", "labels.NPY", ".hidden.npy", "notes.txt", "sub/part.npy",
		".meta/skip.npy", "sub/deeper/too-deep.npy", "a.npy.bak",
	} {
		p := filepath.Join(dir, f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(dir, "train.npy"), filepath.Join(dir, "linked.npy")); err != nil {
		t.Fatal(err)
	}
	os.Symlink(filepath.Join(dir, "gone.npy"), filepath.Join(dir, "dangling.npy"))
	got, err := ListChannel(dir)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range []string{"labels.NPY", "linked.npy", "sub/part.npy", "train.npy"} {
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
