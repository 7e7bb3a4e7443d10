package sagemaker

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestWriteFailure(t *testing.T) {
	long := "Training failed: " + strings.Repeat("x", 2000)
	tests := []struct {
		name, reason, want string
	}{
		{"one sentence", "hyperparameter \"epochs\" must be an integer, got \"ten\"", "hyperparameter \"epochs\" must be an integer, got \"ten\"\n"},
		{"trimmed", "  \nout of memory on GPU 0\n\n", "out of memory on GPU 0\n"},
		{"empty", "", "Training failed without a reason.\n"},
		{"long kept whole", long, long + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The folder does not exist yet, as on a fresh /opt/ml.
			path := Paths{Base: t.TempDir()}.FailureFile()
			if err := WriteFailure(path, tt.reason); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("failure file = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestWriteFailureKeepsTheFirst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "output", "failure")
	if err := WriteFailure(path, "first reason"); err != nil {
		t.Fatal(err)
	}
	err := WriteFailure(path, "second reason")
	if !errors.Is(err, fs.ErrExist) {
		t.Errorf("second WriteFailure error = %v, want one matching fs.ErrExist", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "first reason\n" {
		t.Errorf("failure file = %q, want the first reason", got)
	}
}

func TestWriteFailureCannotCreate(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "output")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil { // a file where the folder belongs
		t.Fatal(err)
	}
	err := WriteFailure(filepath.Join(blocker, "failure"), "reason")
	if err == nil || errors.Is(err, fs.ErrExist) {
		t.Errorf("WriteFailure under a file = %v, want an error that is not fs.ErrExist", err)
	}
}

// Reason makes one sentence: a capital, one closing mark (a question kept
// as it is: "was it truncated?." was written before).
// A user's value quoted whole (a 1 MB hyperparameter) is cut to its start
// and end in the reason, so what follows it stays within the characters
// SageMaker shows; bytes that are no UTF-8 (a Latin-1 dtype) are replaced.
func TestReasonShortensLongRuns(t *testing.T) {
	key := strings.Repeat("k", 100000)
	got := Reason(errors.New(`hyperparameter "` + key + `" is not one sagefit reads`))
	if len(got) > FailureLimit/2 || !strings.HasSuffix(got, `…[100002 characters]…`+strings.Repeat("k", 63)+`" is not one sagefit reads.`) || !strings.HasPrefix(got, `Hyperparameter "kkkk`) {
		t.Errorf("reason %q (%d bytes)", got, len(got))
	}
	if got := Reason(errors.New("dtype '<f\xe94' is not supported")); got != "Dtype '<f\uFFFD4' is not supported." {
		t.Errorf("reason %q", got)
	}
	path := "/opt/ml/input/data/training/" + strings.Repeat("year=2024/", 30) + "part-00017-of-00128-labels.npy" // in a reason that fits: whole
	if got := Reason(errors.New(path + " is truncated")); got != path+" is truncated." {
		t.Errorf("reason %q", got)
	}
}

func TestReasonEndsOnce(t *testing.T) {
	for in, want := range map[string]string{
		"channel \"training\": was it truncated or replaced during training?": "Channel \"training\": was it truncated or replaced during training?",
		"hyperparameter \"x\" must be set":                                    "Hyperparameter \"x\" must be set.",
	} {
		if got := Reason(errors.New(in)); got != want {
			t.Errorf("Reason(%q) = %q, want %q", in, got, want)
		}
	}
}

// IsStop tells a stop's reason, as Reason writes it for a signal and for the
// fit loop's clean stop, from a failure's.
func TestIsStop(t *testing.T) {
	for err, want := range map[error]bool{
		&StopSignal{Signal: syscall.SIGTERM}:                                              true,
		errors.New("training stopped (stopped by SIGTERM) at epoch 3 step 2"):             true,
		errors.New("training failed at epoch 3: loss is NaN"):                             false,
		errors.New("channel \"training\": was it truncated or replaced during training?"): false,
	} {
		if got := IsStop(Reason(err)); got != want {
			t.Errorf("IsStop(%q) = %v, want %v", Reason(err), got, want)
		}
	}
}
