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
	if err := os.MkdirAll(filepath.Join(dir, model.ExtraDir), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "saved_model.pb"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, model.ExtraDir, model.MetadataFile), []byte("{}"), 0o644)
	if err := replaceable(dir, &log); err != nil || !strings.Contains(log.String(), "sagefit: the model an earlier run wrote to "+dir+" will be replaced") {
		t.Errorf("an earlier run's model: %v, %q", err, log.String())
	}
	// An earlier run's model with the user's files beside it, or among
	// its variables: refused, naming them (they were removed with it).
	os.MkdirAll(filepath.Join(dir, "variables"), 0o755)
	os.WriteFile(filepath.Join(dir, "variables", "variables.index"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "variables", "variables.data-00000-of-00001"), nil, 0o644)
	log.Reset()
	if err := replaceable(dir, &log); err != nil || !strings.Contains(log.String(), "will be replaced") {
		t.Errorf("an earlier run's model with its variables: %v, %q", err, log.String())
	}
	os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "variables", "mine.txt"), nil, 0o644)
	if err := replaceable(dir, &log); err == nil || !strings.Contains(err.Error(), "holds files sagefit did not write ([notes.txt variables/mine.txt])") {
		t.Errorf("an earlier run's model with the user's files: %v", err)
	}
	os.Remove(filepath.Join(dir, "notes.txt"))
	os.RemoveAll(filepath.Join(dir, "variables"))
	os.RemoveAll(filepath.Join(dir, model.ExtraDir))
	if err := replaceable(dir, &log); err == nil || !strings.Contains(err.Error(), "holds files sagefit did not write ([saved_model.pb])") {
		t.Errorf("another model: %v", err)
	}
}
