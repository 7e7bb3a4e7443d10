package checkpoint

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/runtime/report"
)

func fakeVars(fill byte) []model.Variable {
	return []model.Variable{
		{Tensor: model.Tensor{DType: model.Float32, Data: bytes.Repeat([]byte{fill}, 8)}},
		{Tensor: model.Tensor{DType: model.Int64, Data: bytes.Repeat([]byte{fill + 1}, 8)}},
	}
}

func TestCheckpointsKeepNewestAndSkipCorrupt(t *testing.T) {
	dir := t.TempDir()
	hist := &report.History{}
	hist.Append([]report.Metric{{Name: "loss", Value: 0.5}})
	// What a writer killed mid-write left behind: removed by the next write
	// (SageMaker would upload it with the checkpoints).
	if err := os.MkdirAll(filepath.Join(dir, ".tmp-ckpt-000001-000000003-123", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	var paths []string
	for i, pos := range [][2]int{{1, 10}, {1, 20}, {2, 0}, {2, 5}} {
		st := State{Fingerprint: "fp", Epoch: pos[0], Step: pos[1], MetricState: []float64{1, 2}}
		p, err := Write(dir, st, fakeVars(byte(i)), nil, hist, 3)
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	all, _ := list(dir)
	if len(all) != 3 || all[0] != paths[3] || all[2] != paths[1] {
		t.Fatalf("kept %v, want the newest three, newest first", all)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 3 {
		t.Errorf("temporary folders left behind: %v", entries)
	}

	var warn bytes.Buffer
	c, err := Latest(dir, "fp", &warn)
	if err != nil || c.Path != paths[3] || c.State.Step != 5 || c.History.Values("loss")[0] != 0.5 {
		t.Fatalf("latest = %+v, %v", c, err)
	}

	// A partial write of the newest: its variables do not match the checksum.
	os.WriteFile(filepath.Join(paths[3], varsFile), []byte("short"), 0o644)
	// A torn state file in the next one.
	os.WriteFile(filepath.Join(paths[2], stateFile), []byte(`{"version": 1, "fing`), 0o644)
	c, err = Latest(dir, "fp", &warn)
	if err != nil || c == nil || c.Path != paths[1] {
		t.Fatalf("after corruption latest = %v, %v; want %s", c, err, paths[1])
	}
	for _, want := range []string{"variables.bin does not match its checksum", "state.json does not match its checksum"} {
		if !strings.Contains(warn.String(), want) {
			t.Errorf("no warning %q in %q", want, warn.String())
		}
	}
	if !bytes.Equal(c.Vars, append(bytes.Repeat([]byte{1}, 8), bytes.Repeat([]byte{2}, 8)...)) {
		t.Errorf("variables read back %v", c.Vars)
	}

	// Another model's checkpoints are not resumed.
	if c, _ := Latest(dir, "other", &bytes.Buffer{}); c != nil {
		t.Errorf("resumed a checkpoint of another model: %s", c.Path)
	}
	if c, err := Latest(filepath.Join(dir, "none"), "fp", &warn); c != nil || err != nil {
		t.Errorf("missing dir: %v, %v", c, err)
	}
}

// Another model's checkpoints in the folder are neither counted nor
// removed: counted, three of another model at epochs 7-9 made this job
// remove each of its own as soon as it was written (the stop's message
// named a checkpoint that was gone, and the next job started over).
func TestPruneCountsOnlyThisModelsCheckpoints(t *testing.T) {
	dir := t.TempDir()
	hist := &report.History{}
	var others []string
	for epoch := 7; epoch <= 9; epoch++ {
		p, err := Write(dir, State{Fingerprint: "other", Epoch: epoch}, fakeVars(1), nil, hist, 3)
		if err != nil {
			t.Fatal(err)
		}
		others = append(others, p)
	}
	// A torn one of this job's, older than what it keeps: removed; newer: kept.
	for _, torn := range []string{"ckpt-000000-000000001", "ckpt-000001-000000009"} {
		if err := os.MkdirAll(filepath.Join(dir, torn), 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, torn, stateFile), []byte(`{"version": 2, "fing`), 0o644)
	}
	var own []string
	for step := 1; step <= 4; step++ {
		p, err := Write(dir, State{Fingerprint: "fp", Epoch: 1, Step: step, Steps: 10}, fakeVars(2), nil, hist, 3)
		if err != nil {
			t.Fatal(err)
		}
		own = append(own, p)
	}
	all, _ := list(dir)
	want := append([]string{others[2], others[1], others[0], filepath.Join(dir, "ckpt-000001-000000009")}, own[3], own[2], own[1])
	if strings.Join(all, " ") != strings.Join(want, " ") {
		t.Errorf("kept %v\nwant %v", all, want)
	}
	if c, _ := Latest(dir, "fp", &bytes.Buffer{}); c == nil || c.Path != own[3] {
		t.Errorf("resumed %v, want %s", c, own[3])
	}
}

// A checkpoint of the same epoch and step as another model's in the folder
// leaves that one alone (it replaced it) and is named after its own model.
func TestOtherModelsCheckpointOfTheSameNameKept(t *testing.T) {
	dir := t.TempDir()
	hist := &report.History{}
	other, err := Write(dir, State{Fingerprint: "0123456789other", Epoch: 2}, fakeVars(1), nil, hist, 3)
	if err != nil {
		t.Fatal(err)
	}
	own, err := Write(dir, State{Fingerprint: "abcdef0123456789", Epoch: 2}, fakeVars(2), nil, hist, 3)
	if err != nil {
		t.Fatal(err)
	}
	if want := other + "-abcdef01"; own != want {
		t.Errorf("wrote %s, want %s", own, want)
	}
	for path, fp := range map[string]string{other: "0123456789other", own: "abcdef0123456789"} {
		if c, _ := Latest(dir, fp, &bytes.Buffer{}); c == nil || c.Path != path {
			t.Errorf("model %s resumed %v, want %s", fp, c, path)
		}
	}
	// Written again (a resumed job's), it replaces its own.
	again, err := Write(dir, State{Fingerprint: "abcdef0123456789", Epoch: 2, GlobalStep: 5}, fakeVars(2), nil, hist, 3)
	if err != nil || again != own {
		t.Errorf("wrote again %s (%v), want %s", again, err, own)
	}
	if all, _ := list(dir); len(all) != 2 {
		t.Errorf("folder holds %v", all)
	}
	// The other model's gone, it is written under its plain name again,
	// and its older copy named after it goes (it sorted first: resumed).
	os.RemoveAll(other)
	plain, err := Write(dir, State{Fingerprint: "abcdef0123456789", Epoch: 2, GlobalStep: 6}, fakeVars(2), nil, hist, 3)
	if err != nil || plain != other {
		t.Fatalf("wrote %s (%v), want %s", plain, err, other)
	}
	if all, _ := list(dir); len(all) != 1 || all[0] != plain {
		t.Errorf("folder holds %v, want %s alone", all, plain)
	}
}

// A state.json that reads as JSON but is not what was written (a step past
// the epoch's, a longer history) is skipped with a warning, as a corrupt
// one is: it was resumed, training from a wrong place.
func TestEditedStateIsSkipped(t *testing.T) {
	for _, c := range []struct{ name, old, new, want string }{
		{"step", `"step": 4`, `"step": 9999`, "state.json does not match its checksum (edited or corrupt)"},
		{"history", `"history": {`, `"history": { `, "state.json does not match its checksum (edited or corrupt)"},
		{"step past the epoch's, without a checksum", `"step": 4`, `"step": 9999`, "state.json says epoch 2, step 9999 of 10: not a place in training"},
		{"negative epoch, without a checksum", `"epoch": 2`, `"epoch": -3`, "state.json says epoch -3, step 4 of 10: not a place in training"},
		// A probe's {} was "format 0, want 1 to 2 (a newer sagefit's?)".
		{"no format, without a checksum", `"version": 2`, `"versio": 2`, "state.json gives no checkpoint format (a version from 1 to 2): not a sagefit checkpoint's"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			hist := &report.History{}
			hist.Append([]report.Metric{{Name: "loss", Value: 0.5}})
			p, err := Write(dir, State{Fingerprint: "fp", Epoch: 2, Step: 4, Steps: 10}, fakeVars(1), nil, hist, 3)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(filepath.Join(p, stateFile))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(raw, []byte(c.old)) {
				t.Fatalf("state.json has no %s: %s", c.old, raw)
			}
			if err := os.WriteFile(filepath.Join(p, stateFile), bytes.Replace(raw, []byte(c.old), []byte(c.new), 1), 0o644); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(c.name, "without a checksum") { // an older checkpoint
				os.Remove(filepath.Join(p, stateSum))
			}
			var warn bytes.Buffer
			if got, err := Latest(dir, "fp", &warn); got != nil || err != nil {
				t.Errorf("resumed %v (%v)", got, err)
			}
			if !strings.Contains(warn.String(), c.want) {
				t.Errorf("warned %q, want %q", warn.String(), c.want)
			}
		})
	}
}

// The hosts' own state of a stop's checkpoint comes back as written, and
// one whose hosts.bin was changed is skipped as a corrupt one is.
func TestHostStateComesBack(t *testing.T) {
	dir := t.TempDir()
	own := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	path, err := Write(dir, State{Fingerprint: "fp", Epoch: 1, Step: 2, Steps: 5, HostState: own}, fakeVars(1), nil, &report.History{}, 3)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Latest(dir, "fp", &bytes.Buffer{})
	if err != nil || c == nil || !bytes.Equal(c.State.HostState, own) {
		t.Fatalf("read back %v (%v), want host state %v", c, err, own)
	}
	if err := os.WriteFile(filepath.Join(path, hostsFile), []byte{1, 2, 3, 4, 5, 6, 7, 9}, 0o644); err != nil {
		t.Fatal(err)
	}
	var warn bytes.Buffer
	if c, _ := Latest(dir, "fp", &warn); c != nil || !strings.Contains(warn.String(), "skipping checkpoint") {
		t.Errorf("a changed hosts.bin resumed %v (warned %q)", c, warn.String())
	}
}
