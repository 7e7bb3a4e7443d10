package sagemaker

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
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

// Written is an error whose reason is in the failure file already (a stop
// writes it before the model, whose write may outlast SageMaker's kill):
// the caller writes no other.
type Written struct{ Err error }

func (w *Written) Error() string { return w.Err.Error() }
func (w *Written) Unwrap() error { return w.Err }

// stopPrefix begins the reason of a job that stopped on request, whether
// Reason wrote it or the fit loop's own sentence ("training stopped (...)
// at epoch ...", capitalised).
const stopPrefix = "Training stopped"

// IsStop says whether a failure reason is a stop (SIGTERM, SIGINT, or
// another host's), not a failure of its own.
func IsStop(reason string) bool { return strings.HasPrefix(reason, stopPrefix) }

// Reason turns an error into the one sentence a user reads as the job's
// FailureReason: a leading word capitalised (not a leading path or quoted
// name), a full stop at the end. An error in the chain that states its own
// reason (a FailureReason() string method: training that stopped cleanly
// after a step) is taken as it says; else a stop by signal reads "Training
// stopped: stopped by SIGTERM.".
func Reason(err error) string {
	var own interface{ FailureReason() string }
	var sig *StopSignal
	msg := strings.TrimSpace(err.Error())
	switch {
	case errors.As(err, &own):
		msg = own.FailureReason()
	case errors.As(err, &sig):
		return stopPrefix + ": " + sig.Error() + "."
	}
	if msg == "" {
		return "Training failed."
	}
	msg = shortenRuns(strings.ToValidUTF8(msg, "\uFFFD"))
	if word, _, _ := strings.Cut(msg, " "); strings.IndexFunc(word, func(r rune) bool { return !unicode.IsLetter(r) }) < 0 {
		msg = strings.ToUpper(msg[:1]) + msg[1:]
	}
	if !strings.HasSuffix(msg, ".") && !strings.HasSuffix(msg, "?") && !strings.HasSuffix(msg, "!") {
		msg += "."
	}
	return msg
}

// longRun is a run of text without a space longer than most names and
// paths: a user's value quoted whole (a 1 MB hyperparameter), or a long path.
var longRun = regexp.MustCompile(`\S{241,}`)

// shortenRuns makes a reason longer than SageMaker shows ([FailureLimit])
// fit where it can: its longest runs without a space, one after another,
// cut to their start and end (a path keeps its file name), saying how long
// each was, so that the words after them are seen. A reason that fits is
// left whole.
func shortenRuns(msg string) string {
	for utf8.RuneCountInString(msg) > FailureLimit {
		runs := longRun.FindAllStringIndex(msg, -1)
		if len(runs) == 0 {
			return msg
		}
		longest := slices.MaxFunc(runs, func(a, b []int) int { return (a[1] - a[0]) - (b[1] - b[0]) })
		r := []rune(msg[longest[0]:longest[1]])
		cut := fmt.Sprintf("%s…[%d characters]…%s", string(r[:96]), len(r), string(r[len(r)-64:]))
		msg = msg[:longest[0]] + cut + msg[longest[1]:]
	}
	return msg
}
