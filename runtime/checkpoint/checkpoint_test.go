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
	for _, want := range []string{"does not match its checksum", "not valid JSON"} {
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
