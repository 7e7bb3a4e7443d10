package transport

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sagefit/sagefit/distributed"
)

// Helper-process pattern: the test binary re-executes itself with
// -test.run=^TestHelperProcess$ and these variables, and the child acts as
// one host of a job, reporting on stdout.
//
// envHostAddrs gives the children each other's addresses, as a launcher
// does for local multi-host runs. runtime/launch owns the name (it defines
// every SAGEFIT_* variable); this package reads no environment, only its
// tests do.
const envHostAddrs = "SAGEFIT_HOST_ADDRS"

const (
	envHelper     = "SAGEFIT_DIST_HELPER"
	envHelperSelf = "SAGEFIT_DIST_HELPER_SELF"
	envHelperJob  = "SAGEFIT_DIST_HELPER_JOB"
	envHelperSize = "SAGEFIT_DIST_HELPER_SIZE"
	envHelperOpTO = "SAGEFIT_DIST_HELPER_OP_TIMEOUT"
)

// TestHelperProcess is one host: join, then all-reduce in a loop, printing
// "begin N" before and "ok N" after each op, "error: ..." and exit 3 on
// failure. It stops by itself after 60 s so an orphan cannot linger.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(envHelper) != "1" {
		t.Skip("helper process for TestProcessKillMidAllReduce; runs only when re-executed")
	}
	addrs, err := ParseHostAddrs(os.Getenv(envHostAddrs))
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	hosts := make([]string, len(addrs))
	for i := range hosts {
		hosts[i] = fmt.Sprintf("algo-%d", i+1)
	}
	size, _ := strconv.Atoi(os.Getenv(envHelperSize))
	opTimeout, _ := time.ParseDuration(os.Getenv(envHelperOpTO))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lis, err := listenHeld(os.NewFile(3, "ring socket")) // the test's held socket (ExtraFiles)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(2)
	}
	g, err := Join(ctx, Config{
		JobName: os.Getenv(envHelperJob), Hosts: hosts, Self: os.Getenv(envHelperSelf), Addrs: addrs, Listener: lis,
		Fingerprint: "f00d", ConnectTimeout: 30 * time.Second, OpTimeout: opTimeout,
		Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05.000 ")+f+"\n", a...) },
	})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(3)
	}
	fmt.Println("joined rank", g.Rank())
	buf := make([]float32, size)
	for op := 1; ctx.Err() == nil; op++ {
		for i := range buf {
			buf[i] = float32(g.Rank() + 1)
		}
		fmt.Println("begin", op)
		if err := g.AllReduce(ctx, buf, distributed.Sum); err != nil {
			fmt.Println("error:", err)
			g.Close()
			os.Exit(3)
		}
		if want := float32(g.World() * (g.World() + 1) / 2); buf[0] != want || buf[size-1] != want {
			fmt.Println("error: wrong sum", buf[0], buf[size-1], "want", want)
			os.Exit(4)
		}
		fmt.Println("ok", op)
	}
	g.Close()
	fmt.Println("done")
	os.Exit(0)
}

// heldSocket binds a TCP socket at addr (ip:port, 0 for a free one) without
// listening on it: the port stays this test's until a host listens there
// (listenHeld), while a peer that dials it is refused, as a host not up yet
// refuses. A port freed and bound again seconds later could be taken
// meanwhile by another test's connection.
func heldSocket(t *testing.T, addr string) (string, *os.File) {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "held "+addr)
	t.Cleanup(func() { f.Close() })
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}); err != nil {
		t.Skipf("cannot bind %s: %v", addr, err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return netip.AddrPortFrom(ap.Addr(), uint16(sa.(*syscall.SockaddrInet4).Port)).String(), f
}

// listenHeld listens on a socket heldSocket bound (f is closed: the
// listener has its own descriptor).
func listenHeld(f *os.File) (net.Listener, error) {
	defer f.Close()
	if err := syscall.Listen(int(f.Fd()), 128); err != nil {
		return nil, err
	}
	return net.FileListener(f)
}

type child struct {
	rank  int
	cmd   *exec.Cmd
	lines chan string
	last  string // the last line printed; read after done
	done  chan error
}

// TestProcessKillMidAllReduce runs three hosts as separate OS processes over
// real gRPC on loopback. The third starts 2 s late and is waited for. Once
// the middle one is inside its third all-reduce it is lost, and both
// survivors must report an error that names it (rank and address) and exit;
// nobody hangs. The bounds are generous and nothing is timed: a loaded
// machine only makes it slower.
//
//   - SIGKILL: the kernel resets its connections; the op timeout is 3 s but
//     the survivors know at once (the error must not be a timeout).
//   - SIGSTOP: silent, its sockets stay open. The survivors time out (the
//     keepalive's bound follows the op timeout, so a peer silent for less
//     than it is not dropped: cmd/sagefit's TestPausedHostIsWaitedFor), and
//     the suspect relay must make both name the stopped rank, not only its
//     successor (rank 0 waits on rank 2, which is alive and itself waiting
//     on the stopped rank 1).
func TestProcessKillMidAllReduce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	t.Run("SIGKILL", func(t *testing.T) { testProcessLoss(t, syscall.SIGKILL, 3*time.Second, false) })
	t.Run("SIGSTOP", func(t *testing.T) { testProcessLoss(t, syscall.SIGSTOP, 3*time.Second, true) })
}

func testProcessLoss(t *testing.T, sig syscall.Signal, opTimeout time.Duration, timeoutOK bool) {
	const n, victim = 3, 1
	addrs := make([]string, n)
	socks := make([]*os.File, n)
	var pairs []string
	for r := range n {
		addrs[r], socks[r] = heldSocket(t, fmt.Sprintf("127.0.0.%d:0", r+1))
		pairs = append(pairs, fmt.Sprintf("algo-%d=%s", r+1, addrs[r]))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	start := func(r int) *child {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(),
			envHelper+"=1",
			envHelperSelf+"="+fmt.Sprintf("algo-%d", r+1),
			envHelperJob+"=job-kill",
			envHelperSize+"=2000000", // 8 MB: an op lasts long enough to be killed inside it
			envHelperOpTO+"="+opTimeout.String(),
			envHostAddrs+"="+strings.Join(pairs, ","),
		)
		cmd.Stderr = os.Stderr
		cmd.ExtraFiles = []*os.File{socks[r]} // fd 3: its ring socket
		cmd.WaitDelay = 5 * time.Second
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c := &child{rank: r, cmd: cmd, lines: make(chan string, 1024), done: make(chan error, 1)}
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				c.last = sc.Text()
				select {
				case c.lines <- sc.Text():
				default: // the test only needs the early lines and the last one
				}
			}
			close(c.lines)
			c.done <- cmd.Wait()
		}()
		return c
	}

	children := make([]*child, n)
	children[0] = start(0)
	children[1] = start(1)
	time.Sleep(2 * time.Second) // a late host
	children[2] = start(2)
	t.Cleanup(func() {
		for _, c := range children {
			c.cmd.Process.Kill()
		}
	})

	// Wait for the victim to enter its third all-reduce, then kill it.
	v := children[victim]
	for line := range v.lines {
		t.Logf("rank %d: %s", victim, line)
		if line == "begin 3" {
			break
		}
		if strings.HasPrefix(line, "error") {
			t.Fatalf("victim failed before the kill: %s", line)
		}
	}
	if err := v.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()

	var wg sync.WaitGroup
	for _, c := range children {
		if c.rank == victim {
			continue
		}
		wg.Go(func() {
			for range c.lines {
			}
			err := <-c.done
			last := c.last
			elapsed := time.Since(killedAt)
			t.Logf("rank %d exited (%v) %v after the kill; last line: %s", c.rank, err, elapsed.Round(time.Millisecond), last)
			if ctx.Err() != nil {
				t.Errorf("rank %d hung and was killed by the test's deadline", c.rank)
				return
			}
			want := fmt.Sprintf("rank %d (algo-%d at %s)", victim, victim+1, addrs[victim])
			if !strings.HasPrefix(last, "error:") || !strings.Contains(last, want) || !strings.Contains(last, "all-reduce #") {
				t.Errorf("rank %d: last line %q does not name %q and the op", c.rank, last, want)
			}
			if !timeoutOK && strings.Contains(last, "deadline exceeded") {
				t.Errorf("rank %d: timed out instead of detecting the loss: %s", c.rank, last)
			}
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
				t.Errorf("rank %d: exit %v, want status 3", c.rank, err)
			}
		})
	}
	wg.Wait()
	v.cmd.Process.Kill() // a stopped victim
	<-v.done
}
