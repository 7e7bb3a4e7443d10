package main_test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sagefit/sagefit/internal/fixture"
)

// openPty opens a pseudo-terminal pair of the given width: the master (what
// a terminal, or docker's TTY reader, reads) and the slave (the process's
// stdout).
func openPty(t *testing.T, cols uint16) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	fd := int(m.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Fatalf("ptsname: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	if err := unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: cols}); err != nil {
		t.Fatalf("set the terminal's size: %v", err)
	}
	return m, s
}

// runOnPty runs cmd with a terminal of cols columns as its stdin, stdout
// and stderr (its controlling terminal, as `docker run -t` gives one) and
// returns everything it wrote.
func runOnPty(t *testing.T, cmd *exec.Cmd, cols uint16) (string, error) {
	t.Helper()
	m, s := openPty(t, cols)
	defer m.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s, s, s
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		s.Close()
		t.Fatal(err)
	}
	s.Close()
	out, rerr := io.ReadAll(m)
	if rerr != nil && !errors.Is(rerr, syscall.EIO) { // EIO: every writer has gone
		t.Fatalf("read the terminal: %v", rerr)
	}
	return string(out), cmd.Wait()
}

// TestEpochLinesOnATerminal: under a pseudo-terminal the progress bar is
// drawn, and every epoch line still stands on a line of its own (the bar
// ends its line first), on a terminal narrower than the bar as on a wide
// one: what a log reader of a container's TTY (SageMaker's local mode)
// splits into lines must give the metric_definitions whole epoch lines.
func TestEpochLinesOnATerminal(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "300", "--no-fit")
	for _, cols := range []uint16{40, 200} {
		t.Run(fmt.Sprintf("%d columns", cols), func(t *testing.T) {
			cmd := exec.Command(binary, "local", "--model", filepath.Join(fx, "model"),
				"--channel", "training="+filepath.Join(fx, "train"), "--channel", "validation="+filepath.Join(fx, "validation"),
				"--hp", "epochs=3", "--hp", "batch_size=16", "--output", t.TempDir())
			out, err := runOnPty(t, cmd, cols)
			if err != nil {
				t.Fatalf("%v\n%q", err, out)
			}
			// The terminal turns \n into \r\n; a log reader splits at \n.
			lines := strings.Split(strings.ReplaceAll(out, "\r\n", "\n"), "\n")
			epochs, bars := 0, 0
			for _, l := range lines {
				if strings.Contains(l, "Epoch ") {
					epochs++
					if !strings.HasPrefix(l, "Epoch ") || strings.ContainsAny(l, "\r\x1b") {
						t.Errorf("an epoch line does not stand on a line of its own: %q", l)
					}
				} else if strings.Contains(l, "step/s") {
					bars++
				}
			}
			if epochs != 3 {
				t.Errorf("%d epoch lines, want 3:\n%q", epochs, out)
			}
			if bars != 3 {
				t.Errorf("%d lines with a progress bar, want one per epoch (was it drawn?):\n%q", bars, out)
			}
		})
	}
}
