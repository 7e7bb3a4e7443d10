package tf

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// A program that imports this package and never claims a SIGTERM noted
// from its init (a test binary, a tool) still ends on one, a second later:
// the note held it for the process's whole life (a review).
func TestUnclaimedSIGTERMEndsTheProcess(t *testing.T) {
	if os.Getenv("SAGEFIT_TEST_AWAIT_SIGTERM") == "1" {
		time.Sleep(30 * time.Second)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestUnclaimedSIGTERMEndsTheProcess$")
	cmd.Env = append(os.Environ(), "SAGEFIT_TEST_AWAIT_SIGTERM=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // past the libraries' load and the package inits
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the process ran on after SIGTERM")
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("the process ended with %v, want by SIGTERM", cmd.ProcessState)
	}
}
