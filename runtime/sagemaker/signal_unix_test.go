//go:build unix

package sagemaker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestNotifyStop(t *testing.T) {
	tests := []struct {
		sig  syscall.Signal
		want string
	}{
		{syscall.SIGTERM, "stopped by SIGTERM"},
		{syscall.SIGINT, "stopped by SIGINT"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			ctx, stop := NotifyStop(context.Background())
			defer stop()
			// The handler is in place when NotifyStop returns, so the
			// signal cannot end the test process.
			if err := syscall.Kill(os.Getpid(), tt.sig); err != nil {
				t.Fatal(err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("context not cancelled 10 s after the signal")
			}
			cause := context.Cause(ctx)
			var stopErr *StopSignal
			if !errors.As(cause, &stopErr) || stopErr.Signal != tt.sig {
				t.Fatalf("cause %v (%T), want a StopSignal for %v", cause, cause, tt.sig)
			}
			if cause.Error() != tt.want {
				t.Errorf("cause = %q, want %q", cause, tt.want)
			}
			if !errors.Is(ctx.Err(), context.Canceled) {
				t.Errorf("ctx.Err() = %v, want context.Canceled", ctx.Err())
			}
		})
	}
}

// A second SIGTERM while the job stops (a supervisor repeating it, kill
// run twice) changes nothing: it ended the process at once, without the
// checkpoint the first was writing. A second Ctrl-C still ends it
// (TestSecondCtrlCEndsTheProcess).
func TestSecondSIGTERMIsTheSameStop(t *testing.T) {
	ctx, stop := NotifyStop(context.Background())
	defer stop()
	for range 3 {
		if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // the test process survives each
	}
	<-ctx.Done()
	if cause := context.Cause(ctx); cause.Error() != "stopped by SIGTERM" {
		t.Errorf("cause = %v", cause)
	}
}

// TestSecondCtrlCEndsTheProcess: in a child process (this test binary run
// again), a first SIGINT stops the job and a second ends the process by
// SIGINT's default action, as a person pressing Ctrl-C twice expects.
func TestSecondCtrlCEndsTheProcess(t *testing.T) {
	if os.Getenv("SAGEFIT_SIGNAL_CHILD") == "1" {
		ctx, stop := NotifyStop(context.Background())
		defer stop()
		fmt.Println("ready")
		<-ctx.Done()
		fmt.Println("stopping")
		time.Sleep(20 * time.Second) // a stop's checkpoint, taking its time
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSecondCtrlCEndsTheProcess$")
	cmd.Env = append(os.Environ(), "SAGEFIT_SIGNAL_CHILD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(out)
	for _, want := range []string{"ready", "stopping"} {
		for lines.Scan() && lines.Text() != want {
		}
		if want == "ready" {
			cmd.Process.Signal(os.Interrupt)
		}
	}
	start := time.Now()
	cmd.Process.Signal(os.Interrupt)
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGINT || time.Since(start) > 10*time.Second {
		t.Errorf("after a second Ctrl-C the child ended with %v after %v, want SIGINT at once", err, time.Since(start))
	}
}

func TestNotifyStopStopAndParent(t *testing.T) {
	ctx, stop := NotifyStop(context.Background())
	stop()
	stop() // twice is fine
	<-ctx.Done()
	if cause := context.Cause(ctx); !errors.Is(cause, context.Canceled) {
		t.Errorf("cause after stop = %v, want context.Canceled", cause)
	}

	parent, cancel := context.WithCancelCause(context.Background())
	ctx, stop = NotifyStop(parent)
	defer stop()
	boom := errors.New("boom")
	cancel(boom)
	<-ctx.Done()
	if cause := context.Cause(ctx); cause != boom {
		t.Errorf("cause after parent cancel = %v, want %v", cause, boom)
	}
}

// nvidia-smi -L is asked when /dev has no GPU device files.
func TestCountGPUsFromNvidiaSMI(t *testing.T) {
	bin := t.TempDir()
	script := "#!/bin/sh\n[ \"$1\" = -L ] || exit 2\n" +
		"echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-a)'\n" +
		"echo 'GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-b)'\n" +
		"echo '  MIG 1g.10gb Device 0: (UUID: MIG-c)'\n" +
		"echo 'GPU 2: NVIDIA H100 80GB HBM3 (UUID: GPU-d)'\n"
	smi := filepath.Join(bin, "fake-nvidia-smi")
	if err := os.WriteFile(smi, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := countGPUs(t.TempDir(), smi); got != 3 {
		t.Errorf("countGPUs = %d, want 3", got)
	}
	failing := filepath.Join(bin, "failing-nvidia-smi")
	if err := os.WriteFile(failing, []byte("#!/bin/sh\necho 'NVIDIA-SMI has failed'\nexit 9\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got := countGPUs(t.TempDir(), failing); got != 0 {
		t.Errorf("countGPUs with a failing nvidia-smi = %d, want 0", got)
	}
}
