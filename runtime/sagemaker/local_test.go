package sagemaker

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestWriteLocalRoundTrip(t *testing.T) {
	train, test := t.TempDir(), t.TempDir()
	tests := []struct {
		name        string
		spec        LocalSpec
		wantHosts   []string
		wantCurrent string
		wantRank    int
		wantType    string
		wantHPs     map[string]any
		wantCh      map[string]Channel // Dir filled in by the test
	}{
		{
			name:        "empty spec",
			spec:        LocalSpec{},
			wantHosts:   []string{"algo-1"},
			wantCurrent: "algo-1",
			wantType:    "local",
			wantHPs:     map[string]any{},
			wantCh:      map[string]Channel{},
		},
		{
			name: "two hosts, two channels",
			spec: LocalSpec{
				Hosts:           []string{"algo-1", "algo-2"},
				CurrentHost:     "algo-2",
				Channels:        map[string]string{"train": train, "test": test},
				Hyperparameters: map[string]string{"epochs": "10", "lr": "0.001", "optimizer": "adam", "layers": "[8, 4]", "sagemaker_region": "local"},
				InputModes:      map[string]string{"train": "Pipe"},
				Distributions:   map[string]string{"train": "ShardedByS3Key"},
				ContentTypes:    map[string]string{"test": "application/x-npy"},
				InstanceType:    "ml.m5.large",
			},
			wantHosts:   []string{"algo-1", "algo-2"},
			wantCurrent: "algo-2",
			wantRank:    1,
			wantType:    "ml.m5.large",
			wantHPs:     map[string]any{"epochs": 10.0, "lr": 0.001, "optimizer": "adam", "layers": []any{8.0, 4.0}},
			wantCh: map[string]Channel{
				"train": {Name: "train", InputMode: Pipe, Distribution: ShardedByS3Key, RecordWrapper: "None"},
				"test":  {Name: "test", InputMode: File, Distribution: FullyReplicated, ContentType: "application/x-npy", RecordWrapper: "None"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			if err := WriteLocal(base, tt.spec); err != nil {
				t.Fatal(err)
			}
			e, err := Load(base, noGPUs)
			if err != nil {
				t.Fatal(err)
			}
			for name, ch := range tt.wantCh {
				ch.Dir = e.Paths.Channel(name)
				tt.wantCh[name] = ch
			}
			checks := []struct {
				name      string
				got, want any
			}{
				{"Hosts", e.Hosts, tt.wantHosts},
				{"CurrentHost", e.CurrentHost, tt.wantCurrent},
				{"Rank", e.Rank, tt.wantRank},
				{"InstanceType", e.InstanceType, tt.wantType},
				{"InstanceGroup", e.InstanceGroup, "homogeneousCluster"},
				{"InstanceGroups", e.InstanceGroups, []InstanceGroup{{"homogeneousCluster", tt.wantType, tt.wantHosts}}},
				{"NetworkInterface", e.NetworkInterface, "eth0"},
				{"Hyperparameters", e.Hyperparameters, tt.wantHPs},
				{"Channels", e.Channels, tt.wantCh},
			}
			for _, c := range checks {
				if !reflect.DeepEqual(c.got, c.want) {
					t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
				}
			}
			for name, src := range tt.spec.Channels {
				if got, err := filepath.EvalSymlinks(e.Channels[name].Dir); err != nil || got != mustEval(t, src) {
					t.Errorf("channel %s leads to %q (%v), want %q", name, got, err, src)
				}
			}
			for _, dir := range []string{e.Paths.ModelDir(), e.Paths.OutputDir(), e.Paths.OutputDataDir()} {
				if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
					t.Errorf("%s is not a folder: %v", dir, err)
				}
			}
		})
	}
}

func mustEval(t *testing.T, path string) string {
	t.Helper()
	p, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The files are in SageMaker's own shapes, not only readable by Load.
func TestWriteLocalShapes(t *testing.T) {
	base := t.TempDir()
	spec := LocalSpec{
		Hosts:           []string{"algo-1", "algo-2"},
		Channels:        map[string]string{"train": t.TempDir(), "eval": t.TempDir()},
		ContentTypes:    map[string]string{"eval": "text/csv"},
		Hyperparameters: map[string]string{"epochs": "10", "name": "run \"one\""},
	}
	if err := WriteLocal(base, spec); err != nil {
		t.Fatal(err)
	}
	read := func(name string) any {
		var v any
		b, err := os.ReadFile(filepath.Join(base, "input", "config", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		file string
		want any
	}{
		{"hyperparameters.json", map[string]any{"epochs": "10", "name": "run \"one\""}},
		{"resourceconfig.json", map[string]any{
			"current_host":          "algo-1",
			"current_instance_type": "local",
			"current_group_name":    "homogeneousCluster",
			"hosts":                 []any{"algo-1", "algo-2"},
			"instance_groups": []any{map[string]any{
				"instance_group_name": "homogeneousCluster",
				"instance_type":       "local",
				"hosts":               []any{"algo-1", "algo-2"},
			}},
			"network_interface_name": "eth0",
		}},
		{"inputdataconfig.json", map[string]any{
			"train": map[string]any{"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"},
			"eval":  map[string]any{"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None", "ContentType": "text/csv"},
		}},
	}
	for _, tt := range tests {
		if got := read(tt.file); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s = %#v\nwant %#v", tt.file, got, tt.want)
		}
	}
}

// A second run points the links at the new folders.
func TestWriteLocalAgain(t *testing.T) {
	base, first, second := t.TempDir(), t.TempDir(), t.TempDir()
	for _, src := range []string{first, second} {
		if err := WriteLocal(base, LocalSpec{Channels: map[string]string{"train": src}}); err != nil {
			t.Fatal(err)
		}
	}
	if got := mustEval(t, Paths{Base: base}.Channel("train")); got != mustEval(t, second) {
		t.Errorf("train leads to %q, want %q", got, second)
	}
}

func TestWriteLocalErrors(t *testing.T) {
	src := t.TempDir()
	file := filepath.Join(src, "data.npy")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		spec  LocalSpec
		setup func(base string)
		want  string
	}{
		{name: "current host not in hosts", spec: LocalSpec{Hosts: []string{"a", "b"}, CurrentHost: "c"},
			want: `current host "c" is not in hosts [a b]`},
		{name: "host twice", spec: LocalSpec{Hosts: []string{"a", "a"}},
			want: `hosts ["a" "a"]: host names must be distinct and not empty`},
		{name: "bad channel name", spec: LocalSpec{Channels: map[string]string{"../up": src}},
			want: `channel name "../up" is not valid: use 1 to 64 letters, digits, '.', '-' or '_'`},
		{name: "bad input mode", spec: LocalSpec{Channels: map[string]string{"train": src}, InputModes: map[string]string{"train": "Stream"}},
			want: `local job gives channel "train" the TrainingInputMode "Stream"; it must be File, Pipe or FastFile`},
		{name: "mode without channel", spec: LocalSpec{InputModes: map[string]string{"train": "Pipe"}},
			want: `channel "train" has settings but no data folder`},
		{name: "missing source", spec: LocalSpec{Channels: map[string]string{"train": filepath.Join(src, "nope")}},
			want: `channel "train": its data folder ` + filepath.Join(src, "nope") + ` does not exist`},
		{name: "source is a file", spec: LocalSpec{Channels: map[string]string{"train": file}},
			want: `channel "train": ` + file + ` is not a folder`},
		{name: "real folder in the way", spec: LocalSpec{Channels: map[string]string{"train": src}},
			setup: func(base string) { // with data in it (an empty one, a container's mount point, is replaced)
				mkdirs(t, Paths{Base: base}.Channel("train"))
				if err := os.WriteFile(filepath.Join(Paths{Base: base}.Channel("train"), "x.npy"), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			},
			want: `channel "train": {base}/input/data/train is already there and is not a link; remove it or use another base folder`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			if tt.setup != nil {
				tt.setup(base)
			}
			err := WriteLocal(base, tt.spec)
			want := replaceBase(tt.want, base)
			if err == nil || err.Error() != want {
				t.Errorf("WriteLocal error = %v, want %s", err, want)
			}
		})
	}
}

func replaceBase(s, base string) string {
	return filepath.FromSlash(strings.ReplaceAll(s, "{base}", filepath.ToSlash(base)))
}

// A base dir laid out again loses the failure file an earlier run left
// (every launcher of sagefit local lays out its hosts' base dirs here).
func TestWriteLocalClearsAnEarlierFailure(t *testing.T) {
	base := t.TempDir()
	p := Paths{Base: base}
	if err := os.MkdirAll(filepath.Dir(p.FailureFile()), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.FailureFile(), []byte("An earlier run failed.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteLocal(base, LocalSpec{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p.FailureFile()); !os.IsNotExist(err) {
		t.Errorf("the earlier failure file is still there (%v)", err)
	}
}

// A base dir laid out again starts, as every SageMaker job does, with model
// and output empty: what an earlier run wrote there is removed and named,
// and the checkpoints stay for a resume.
func TestWriteLocalEmptiesAnEarlierRunsResults(t *testing.T) {
	base := t.TempDir()
	p := Paths{Base: base}
	if err := WriteLocal(base, LocalSpec{}); err != nil {
		t.Fatal(err)
	}
	earlier := []string{
		filepath.Join(p.ModelDir(), "1", "saved_model.pb"),
		filepath.Join(p.OutputDataDir(), "history.json"),
		filepath.Join(p.TensorBoardDir(), "train", "events"),
		p.FailureFile(), // removed as before, but not named
		filepath.Join(p.DefaultCheckpointDir(), "ckpt-1.index"),
	}
	for _, f := range earlier {
		mkdirs(t, filepath.Dir(f))
		if err := os.WriteFile(f, []byte("earlier"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var log strings.Builder
	if err := WriteLocal(base, LocalSpec{Log: &log}); err != nil {
		t.Fatal(err)
	}
	for _, f := range earlier[:4] {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s is still there (%v)", f, err)
		}
	}
	if _, err := os.Stat(earlier[4]); err != nil {
		t.Errorf("the checkpoint is gone: %v", err)
	}
	for _, dir := range []string{p.ModelDir(), p.OutputDataDir()} {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			t.Errorf("%s is not laid out again (%v)", dir, err)
		}
	}
	want := "sagefit local: removed what an earlier run left in " + base + ": " +
		filepath.Join("model", "1") + ", " + filepath.Join("output", "data") + ", " + filepath.Join("output", "tensorboard") +
		", " + filepath.Join("output", "failure") + " (a job starts with model and output empty)\n"
	if log.String() != want {
		t.Errorf("log = %q, want %q", log.String(), want)
	}
}

// Files in model or output of a folder no local run laid out, or a channel
// inside what would be emptied, are refused, and nothing is removed.
func TestWriteLocalKeepsWhatItDidNotWrite(t *testing.T) {
	t.Run("not a base dir", func(t *testing.T) {
		base := t.TempDir()
		mine := filepath.Join(base, "model", "keras.weights.h5")
		mkdirs(t, filepath.Dir(mine))
		if err := os.WriteFile(mine, []byte("mine"), 0o644); err != nil {
			t.Fatal(err)
		}
		err := WriteLocal(base, LocalSpec{})
		want := base + " already holds " + filepath.Join("model", "keras.weights.h5") + " and is not a base folder of an earlier local run (no " +
			filepath.Join(base, "input", "config", "resourceconfig.json") + "); use an empty or new base folder"
		if err == nil || err.Error() != want {
			t.Errorf("WriteLocal error = %v, want %s", err, want)
		}
		if _, err := os.Stat(mine); err != nil {
			t.Errorf("the file is gone: %v", err)
		}
	})
	// A probe gave the data folder as the base folder, and one inside it:
	// the job wrote its folders among the data, then refused the channel
	// for them, this run and the next.
	t.Run("base folder in a channel", func(t *testing.T) {
		data := t.TempDir()
		for _, base := range []string{data, filepath.Join(data, "job")} {
			err := WriteLocal(base, LocalSpec{Channels: map[string]string{"training": data}})
			want := `channel "training": its folder ` + data + " holds the job's base folder " + base +
				", where the job writes its input, model and output folders among the channel's files; use a base folder outside the data"
			if err == nil || err.Error() != want {
				t.Errorf("WriteLocal error = %v, want %s", err, want)
			}
			if entries, _ := os.ReadDir(data); len(entries) != 0 {
				t.Errorf("the channel's folder holds %v, want it as it was", entries)
			}
		}
	})
	t.Run("channel inside the model folder", func(t *testing.T) {
		base := t.TempDir()
		p := Paths{Base: base}
		if err := WriteLocal(base, LocalSpec{}); err != nil {
			t.Fatal(err)
		}
		written := filepath.Join(p.ModelDir(), "1")
		mkdirs(t, written)
		err := WriteLocal(base, LocalSpec{Channels: map[string]string{"model": written}})
		want := `channel "model": its folder ` + written + " overlaps " + p.ModelDir() +
			", which a job starts with empty and writes its own results to; copy the data elsewhere or use another base folder"
		if err == nil || err.Error() != want {
			t.Errorf("WriteLocal error = %v, want %s", err, want)
		}
		if _, err := os.Stat(written); err != nil {
			t.Errorf("the channel's folder is gone: %v", err)
		}
	})
}

// A base dir whose model folder is a link is refused: emptying it deleted
// files outside the base dir. An earlier run's channel that this run does
// not give is no longer laid out (every folder under input/data is read as
// a channel: a rerun without validation data validated on the old).
func TestWriteLocalRerunLeavesNothingStale(t *testing.T) {
	base, elsewhere := t.TempDir(), t.TempDir()
	p := Paths{Base: base}
	val := t.TempDir()
	if err := WriteLocal(base, LocalSpec{Channels: map[string]string{"training": t.TempDir(), "validation": val}}); err != nil {
		t.Fatal(err)
	}
	if err := WriteLocal(base, LocalSpec{Channels: map[string]string{"training": t.TempDir()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(p.Channel("validation")); !os.IsNotExist(err) {
		t.Errorf("the earlier run's validation channel is still laid out (%v)", err)
	}
	env, err := Load(base, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := env.ChannelNames(); !slices.Equal(got, []string{"training"}) {
		t.Errorf("channels %v, want [training]", got)
	}

	theirs := filepath.Join(elsewhere, "keep.txt")
	if err := os.WriteFile(theirs, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(p.ModelDir()); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, p.ModelDir()); err != nil {
		t.Fatal(err)
	}
	err = WriteLocal(base, LocalSpec{})
	if err == nil || !strings.Contains(err.Error(), "is a link; a local job writes its results into a folder of its own") {
		t.Errorf("WriteLocal error = %v, want the link refused", err)
	}
	if _, err := os.Stat(theirs); err != nil {
		t.Errorf("a file behind the link is gone: %v", err)
	}
}
