package runtime

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sagefit/sagefit/model"
)

// The model's version folder: absent or empty is fine; an earlier run's
// model (a reused base folder) is replaced, said on stderr; other files are
// refused, beside an earlier run's model too (writing the model removed
// them without a word).
func TestModelFolderReplaceable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "model", "1")
	var log bytes.Buffer
	if err := replaceable(dir, &log); err != nil || log.Len() > 0 {
		t.Fatalf("absent: %v, %q", err, log.String())
	}
	write := func(name string) {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("saved_model.pb")
	write(filepath.Join(model.ExtraDir, model.MetadataFile))
	if err := replaceable(dir, &log); err != nil || !strings.Contains(log.String(), "sagefit: the model an earlier run wrote to "+dir+" will be replaced") {
		t.Errorf("an earlier run's model: %v, %q", err, log.String())
	}
	// An earlier run's model with all a SavedModel may hold (sharded
	// variables, a fingerprint, assets): replaced.
	for _, name := range []string{"fingerprint.pb", "variables/variables.index", "variables/variables.data-00000-of-00002",
		"variables/variables.data-00001-of-00002", "assets/vocabulary.txt"} {
		write(name)
	}
	log.Reset()
	if err := replaceable(dir, &log); err != nil || !strings.Contains(log.String(), "will be replaced") {
		t.Errorf("an earlier run's model with its variables: %v, %q", err, log.String())
	}
	// With the user's files beside it, or among its variables: refused,
	// naming them (they were removed with it).
	write("notes.txt")
	write("variables/mine.txt")
	if err := replaceable(dir, &log); err == nil || !strings.Contains(err.Error(), "holds files sagefit did not write ([notes.txt variables/mine.txt])") {
		t.Errorf("an earlier run's model with the user's files: %v", err)
	}
	// A file named variables is the user's too.
	for _, name := range []string{"notes.txt", "variables"} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	write("variables")
	if err := replaceable(dir, &log); err == nil || !strings.Contains(err.Error(), "holds files sagefit did not write ([variables])") {
		t.Errorf("a file named variables: %v", err)
	}
	for _, name := range []string{"variables", "fingerprint.pb", "assets", model.ExtraDir} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := replaceable(dir, &log); err == nil || !strings.Contains(err.Error(), "holds files sagefit did not write ([saved_model.pb])") {
		t.Errorf("another model: %v", err)
	}
}
