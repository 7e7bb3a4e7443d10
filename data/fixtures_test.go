package data

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// pythonWithNumpy finds the Python that generates the fixtures: the
// SAGEFIT_PYTHON variable, else the repository's .venv. It skips the test,
// saying why, when there is none or it lacks numpy.
func pythonWithNumpy(t *testing.T) string {
	t.Helper()
	py := os.Getenv("SAGEFIT_PYTHON")
	if py == "" {
		py = filepath.Join("..", ".venv", "bin", "python")
	}
	if _, err := exec.LookPath(py); err != nil {
		t.Skipf("no Python to regenerate fixtures with (%v); set SAGEFIT_PYTHON to a Python with numpy", err)
	}
	out, err := exec.Command(py, "-c", "import numpy; print(numpy.__version__)").CombinedOutput()
	if err != nil {
		lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
		t.Skipf("%s cannot import numpy (%v): %s", py, err, lines[len(lines)-1])
	}
	t.Logf("using %s with numpy %s", py, bytes.TrimSpace(out))
	return py
}

// TestFixturesMatchNumpy reruns gen_fixtures.py and checks that the
// committed fixtures are what numpy writes: same headers, same data bytes
// and the same expected values. Header padding and pickles may differ
// between numpy and Python versions, so those are compared by meaning.
func TestFixturesMatchNumpy(t *testing.T) {
	py := pythonWithNumpy(t)
	dir := t.TempDir()
	cmd := exec.Command(py, filepath.Join("testdata", "gen_fixtures.py"), dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gen_fixtures.py: %v\n%s", err, out)
	}
	committed, fresh := loadFixtures(t, "testdata"), loadFixtures(t, dir)
	if committed.Numpy != fresh.Numpy {
		t.Logf("fixtures were written by numpy %s, this is numpy %s", committed.Numpy, fresh.Numpy)
	}
	// Header lengths follow numpy's padding rules, which have changed
	// between releases; the headers themselves are compared below.
	for _, ff := range []fixtureFile{committed, fresh} {
		for name, fx := range ff.Files {
			fx.HeaderLen = 0
			ff.Files[name] = fx
		}
	}
	if !reflect.DeepEqual(committed.Files, fresh.Files) {
		for _, name := range sortedNames(fresh.Files) {
			if !reflect.DeepEqual(committed.Files[name], fresh.Files[name]) {
				t.Errorf("expected.json entry %s differs:\ncommitted %+v\nnumpy now %+v", name, committed.Files[name], fresh.Files[name])
			}
		}
		t.Fatal("testdata/expected.json is stale; run: python data/testdata/gen_fixtures.py")
	}
	// .npz members compare by their .npy bytes: the zip entries around
	// them carry the time they were written.
	for _, name := range sortedNames(fresh.Files) {
		want := fixtureBytes(t, filepath.Join(dir, name))
		if _, ok := committed.Files[name]; !ok {
			t.Fatalf("fixture %s is not committed", name)
		}
		got := fixtureBytes(t, filepath.Join("testdata", name))
		if bytes.Equal(got, want) {
			continue
		}
		if fresh.Files[name].Error != "" {
			// Error fixtures (pickles, truncated files) only need to fail
			// the same way, which TestFixtures checks.
			continue
		}
		hg, err1 := ParseHeader(bytes.NewReader(got))
		hw, err2 := ParseHeader(bytes.NewReader(want))
		if err1 != nil || err2 != nil {
			t.Fatalf("%s: %v / %v", name, err1, err2)
		}
		hg.HeaderLen, hw.HeaderLen = 0, 0
		if !reflect.DeepEqual(hg, hw) || !bytes.Equal(got[len(got)-int(hg.DataLen()):], want[len(want)-int(hw.DataLen()):]) {
			t.Errorf("committed %s is not what numpy writes now; run: python data/testdata/gen_fixtures.py", name)
		}
	}
	if !reflect.DeepEqual(committed.CSV, fresh.CSV) {
		t.Errorf("expected.json csv entries differ:\ncommitted %+v\nnumpy now %+v", committed.CSV, fresh.CSV)
	}
	for _, name := range sortedNames(fresh.CSV) {
		want, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(filepath.Join("testdata", name)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("committed %s is not what numpy's savetxt writes now (%v); run: python data/testdata/gen_fixtures.py", name, err)
		}
	}
	// Every committed fixture must be one the script makes, so nothing
	// stale lingers in testdata.
	made := map[string]bool{}
	for name := range fresh.Files {
		if archive, _, ok := strings.Cut(name, ".npz/"); ok {
			name = archive + ".npz"
		}
		made[name] = true
	}
	for name := range fresh.CSV {
		made[name] = true
	}
	for _, pattern := range []string{"*.npy", "*.npz", "csv/*"} {
		matches, _ := filepath.Glob(filepath.Join("testdata", pattern))
		for _, m := range matches {
			rel, _ := filepath.Rel("testdata", m)
			if !made[filepath.ToSlash(rel)] {
				t.Errorf("%s is not produced by gen_fixtures.py", m)
			}
		}
	}
	if len(made) < 40 {
		t.Errorf("gen_fixtures.py made only %d fixtures", len(made))
	}
}
