package runtime_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Fixtures are made by the real exporter and the real Keras (python -m
// sagefit.testing), once per test binary run.
var fixtures struct {
	sync.Mutex
	dir  string
	made map[string]string
}

func python(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("SAGEFIT_PYTHON"); p != "" {
		return p
	}
	p, err := filepath.Abs("../.venv/bin/python")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no Python with sagefit and TensorFlow: set SAGEFIT_PYTHON or run `make setup` (%v)", err)
	}
	return p
}

// fixture returns a folder holding model/, train/, validation/ and
// reference.json for the family, made with the given sagefit.testing flags.
func fixture(t testing.TB, family string, flags ...string) string {
	t.Helper()
	fixtures.Lock()
	defer fixtures.Unlock()
	if fixtures.made == nil {
		dir, err := os.MkdirTemp("", "sagefit-fixtures-")
		if err != nil {
			t.Fatal(err)
		}
		fixtures.dir, fixtures.made = dir, map[string]string{}
	}
	key := family + " " + strings.Join(flags, " ")
	if dir, ok := fixtures.made[key]; ok {
		return dir
	}
	dir := filepath.Join(fixtures.dir, strings.NewReplacer(" ", "_", "-", "").Replace(key))
	args := append([]string{"-m", "sagefit.testing", family, dir}, flags...)
	cmd := exec.Command(python(t), args...)
	cmd.Env = append(os.Environ(), "TF_CPP_MIN_LOG_LEVEL=3")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make fixture %s: %v\n%s", key, err, out)
	}
	fixtures.made[key] = dir
	return dir
}

type reference struct {
	History     map[string][]float64 `json:"history"`
	Weights     [][]float64          `json:"weights"`
	Predictions []float64            `json:"predictions"`
}

func readReference(t testing.TB, dir string) reference {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r reference
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixtures.dir != "" {
		os.RemoveAll(fixtures.dir)
	}
	os.Exit(code)
}
