package sagemaker

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// FailureLimit is how many characters of the failure file SageMaker shows as
// the job's FailureReason.
const FailureLimit = 1024

// WriteFailure writes reason to the failure file at path (see
// [Paths.FailureFile]), creating its folder. Put the one-sentence reason
// first and any detail after it: SageMaker shows only the first
// [FailureLimit] characters.
//
// The first failure is the one that counts, so an existing file is left as
// it is and WriteFailure returns an error that matches [fs.ErrExist].
func WriteFailure(path, reason string) error {
	reason = strings.TrimSpace(reason)
	if reason == "" {
		reason = "Training failed without a reason."
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write failure file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("keep the failure file %s that is already there: %w", path, err)
		}
		return fmt.Errorf("write failure file: %w", err)
	}
	_, err = f.WriteString(reason + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write failure file: %w", err)
	}
	return nil
}
