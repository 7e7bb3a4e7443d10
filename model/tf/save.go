package tf

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/sagefit/sagefit/model"
)

// Save writes the current variables as a new SavedModel in dir: the graph and
// assets are copied from the loaded model and the variables are written by
// the graph's own saver (saver_def), so the result loads in Python's
// tf.saved_model.load, in TF Serving and through the C API. The directory is
// assembled beside dir and renamed into place, so a reader never sees half of
// it. An existing dir is replaced. fingerprint.pb is not copied: it would
// describe the old variables, and loaders treat it as optional.
func (m *Model) Save(dir string) error {
	// The saved model is the whole model, for any reader: its loss share
	// (a job of several processes sets 1/N) is one process's, 1.
	if m.lossShare != 0 && m.lossShare != 1 {
		share := m.lossShare
		if err := m.SetLossShare(1); err != nil {
			return fmt.Errorf("save model: %w", err)
		}
		defer m.SetLossShare(share)
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	defer os.RemoveAll(tmp)

	filename, err := m.sess.resolve(m.saver.GetFilenameTensorName())
	if err != nil {
		return fmt.Errorf("save model: saver filename tensor: %w", err)
	}
	save, err := m.sess.resolve(m.saver.GetSaveTensorName())
	if err != nil {
		return fmt.Errorf("save model: saver save tensor: %w", err)
	}
	if err := os.Mkdir(filepath.Join(tmp, "variables"), 0o755); err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	if err := m.sess.runStrings([]endpoint{filename}, []string{filepath.Join(tmp, "variables", "variables")}, &save, nil); err != nil {
		return fmt.Errorf("save model: write variables: %w", err)
	}
	if err := copyFile(filepath.Join(m.dir, "saved_model.pb"), filepath.Join(tmp, "saved_model.pb")); err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	for _, sub := range []string{"assets", model.ExtraDir} {
		if err := copyTree(filepath.Join(m.dir, sub), filepath.Join(tmp, sub)); err != nil {
			return fmt.Errorf("save model: %w", err)
		}
	}
	if err := syncDir(tmp); err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("save model: replace %s: %w", dir, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("save model: %w", err)
	}
	return syncDir(parent)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// copyTree copies src into dst; a missing src is not an error.
func copyTree(src, dst string) error {
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		return copyFile(path, target)
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func syncDir(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	})
}
