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
// refused (writing the model removed them without a word).
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
	os.RemoveAll(filepath.Join(dir, model.ExtraDir))
	if err := replaceable(dir, &log); err == nil || !strings.Contains(err.Error(), "holds files sagefit did not write ([saved_model.pb])") {
		t.Errorf("another model: %v", err)
	}
}
