package launch

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	osexec "os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sagefit/sagefit/runtime/job"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// Hosts simulates a SageMaker job of n hosts on this machine (`sagefit
// local --hosts n`): hosts algo-1..algo-n, each a `sagefit train` process
// with its own base dir (<base>/algo-i) and config files, reachable at
// 127.0.0.<i> (Linux routes all of 127.0.0.0/8 to loopback), all on one
// free port. The launcher binds every host's socket before any host
// starts and hands it over (EnvListenFD, HostSockets), so no other process
// can take the port in between (tests run many jobs at once). exec starts
// one host's `sagefit train`. It returns the exit code: 0 when every host
// succeeded.
func Hosts(n int, base string, spec sagemaker.LocalSpec, exec []string, stdout, stderr io.Writer) int {
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("algo-%d", i+1)
	}
	listeners, port, err := HostSockets(n)
	if err != nil {
		fmt.Fprintf(stderr, "sagefit local: %v\n", err)
		return 1
	}
	defer func() {
		for _, f := range listeners {
			f.Close() // those of hosts that never started (nil: ErrInvalid)
		}
	}()
	var addrs []string
	for i, h := range hosts {
		addrs = append(addrs, fmt.Sprintf("%s=127.0.0.%d:%d", h, i+1, port))
	}
	var out sync.Mutex // one line at a time from all hosts
	cmds := make([]*osexec.Cmd, n)
	outs := make([][2]*prefixWriter, n)
	for i, h := range hosts {
		hostBase := filepath.Join(base, h)
		s := spec
		s.Hosts, s.CurrentHost = hosts, h
		if err := sagemaker.WriteLocal(hostBase, s); err != nil {
			fmt.Fprintf(stderr, "sagefit local: %v\n", err)
			killAll(cmds)
			return 1
		}
		cmd := osexec.Command(exec[0], exec[1:]...)
		cmd.Env = append(os.Environ(),
			"SAGEMAKER_BASE_DIR="+hostBase,
			EnvHostAddrs+"="+strings.Join(addrs, ","),
			EnvListenFD+"=3")
		cmd.ExtraFiles = []*os.File{listeners[i]}
		// SIGTERM to the launcher reaches every host, as SageMaker's stop
		// does, once: in a process group of its own, a host does not also
		// get a terminal's Ctrl-C, whose second copy would end it at once,
		// with no checkpoint.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
		// Output through writers, not pipes read here: exec copies it, and
		// Wait gives up on what a host's own children still hold open (a
		// stopped training process of a host killed for hanging) WaitDelay
		// after the host has exited.
		outs[i] = [2]*prefixWriter{{w: stdout, prefix: h, mu: &out}, {w: stderr, prefix: h, mu: &out}}
		cmd.Stdout, cmd.Stderr = outs[i][0], outs[i][1]
		cmd.WaitDelay = outputWaitDelay
		if err := cmd.Start(); err != nil {
			fmt.Fprintf(stderr, "sagefit local: start %s: %v\n", h, err)
			killAll(cmds)
			return 1
		}
		cmds[i] = cmd
		// The host holds its socket now; a host that dies closes it, so
		// its peers are refused at once rather than queued on ours.
		listeners[i].Close()
		listeners[i] = nil
	}
	fmt.Fprintf(stderr, "sagefit local: %d hosts %s, base dirs under %s\n", n, strings.Join(addrs, " "), base)

	type exit struct {
		i   int
		err error
	}
	exits := make(chan exit, n)
	for i, cmd := range cmds {
		go func() {
			err := cmd.Wait()
			for _, w := range outs[i] {
				w.flush()
			}
			exits <- exit{i, err}
		}()
	}
	// A stop of the launcher is a stop of the job: every host gets it and
	// stops after the same step, writing a checkpoint.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt, syscall.SIGTSTP, syscall.SIGCONT)
	defer signal.Stop(sigs)
	running := make([]bool, n)
	for i := range running {
		running[i] = true
	}
	send := func(sig os.Signal) {
		for i, cmd := range cmds {
			if running[i] {
				cmd.Process.Signal(sig)
			}
		}
	}
	// A host that fails fails the job, and SageMaker then stops the job's
	// other instances: its peers see it gone within their peer timeout and
	// end with their own reason; one that does not (stopped, hung) is
	// stopped here after that, so the launcher never waits forever.
	grace := peerTimeout(filepath.Join(base, hosts[0]), os.Environ()) + hostFailMargin
	var failTimer, killTimer <-chan time.Time
	code := 0
	for left := n; left > 0; {
		select {
		case e := <-exits:
			left--
			running[e.i] = false
			if e.err != nil {
				raw, _ := os.ReadFile(filepath.Join(base, hosts[e.i], "output", "failure"))
				reason := strings.TrimSpace(string(raw))
				if reason == "" { // killed, or ended before it could say
					reason = "it wrote no failure file"
				}
				fmt.Fprintf(stderr, "sagefit local: %s failed (%v): %s\n", hosts[e.i], e.err, reason)
				if code == 0 && left > 0 {
					failTimer = time.After(grace)
				}
				code = 1
			}
		case sig := <-sigs:
			switch sig {
			case syscall.SIGTSTP:
				// A terminal's Ctrl-Z: the hosts, in groups of their own,
				// pause with the launcher (not one alone, which its peers
				// would wait out for the peer timeout only), and go on
				// with it (SIGCONT).
				send(syscall.SIGSTOP)
				syscall.Kill(os.Getpid(), syscall.SIGSTOP)
			default:
				send(sig)
			}
		case <-failTimer:
			failTimer = nil
			var late []string
			for i, r := range running {
				if r {
					late = append(late, hosts[i])
				}
			}
			fmt.Fprintf(stderr, "sagefit local: %s still running %s after a host failed; stopping them, as SageMaker stops a failed job's instances\n", strings.Join(late, ", "), grace)
			send(syscall.SIGTERM)
			killTimer = time.After(hostStopGrace)
		case <-killTimer:
			killTimer = nil
			send(syscall.SIGKILL)
		}
	}
	if code == 0 {
		fmt.Fprintf(stderr, "sagefit local: model written by algo-1 to %s\n", filepath.Join(base, hosts[0], "model"))
	}
	return code
}

// outputWaitDelay bounds how long a host's output is waited for after the
// host has exited.
const outputWaitDelay = 5 * time.Second

// How long `sagefit local --hosts` lets the other hosts of a failed job
// run: their peer timeout and this margin to notice and write their
// reason, then hostStopGrace after a SIGTERM before a SIGKILL (a stopped
// process takes only that).
const (
	hostFailMargin = 15 * time.Second
	hostStopGrace  = 10 * time.Second
)

// peerTimeout is the job's sagefit_peer_timeout as a host with this base
// dir and environment reads it (hyperparameters.json, or an SM_HP_
// variable the hosts inherit), or its default (a value they refuse fails
// them before any wait matters).
func peerTimeout(hostBase string, environ []string) time.Duration {
	env, err := sagemaker.Load(hostBase, environ)
	if err != nil {
		return job.DefaultPeerTimeout
	}
	if d, err := env.Duration(job.HPPeerTimeout, job.DefaultPeerTimeout); err == nil && d > 0 {
		return d
	}
	return job.DefaultPeerTimeout
}

// killAll kills the hosts started before a launch failed.
func killAll(cmds []*osexec.Cmd) {
	for _, cmd := range cmds {
		if cmd != nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
}

// HostSockets binds the sockets of a job of n hosts on this machine,
// 127.0.0.1..n on one port, free on all of them, taken below the kernel's
// range of ports for outgoing connections: a host of several processes
// binds the ports after it for the others (memberListeners), and in that
// range any connection of another process could hold one (a flake of two
// concurrent test jobs). They are bound, not
// listening: the port is the job's, yet a peer that dials a host not up yet
// is refused, as on SageMaker, rather than queued. Hand each to its host's
// process (EnvListenFD; ListenInherited listens on it) and close it there:
// a port merely probed and let go can be taken before the host binds it.
func HostSockets(n int) ([]*os.File, int, error) {
	if n > 255 {
		return nil, 0, fmt.Errorf("%d hosts: at most 255 on one machine (127.0.0.1 to 127.0.0.255)", n)
	}
	const tries = 20
	lo, hi := listenPorts()
	var last error
	for try := range tries {
		// The kernel's choice on the last try, or where no range is left
		// below its own (a chosen port may also be refused, by SELinux say).
		want := 0
		if hi > lo && try < tries-1 {
			want = lo + rand.IntN(hi-lo)
		}
		first, port, err := bindFile(netip.AddrFrom4([4]byte{127, 0, 0, 1}), want)
		if err != nil && want != 0 {
			last = err
			continue
		}
		if err != nil {
			return nil, 0, fmt.Errorf("find a free port: %w", err)
		}
		files := []*os.File{first}
		for i := 2; i <= n && err == nil; i++ {
			var f *os.File
			if f, _, err = bindFile(netip.AddrFrom4([4]byte{127, 0, 0, byte(i)}), port); err == nil {
				files = append(files, f)
			}
		}
		if err == nil {
			return files, port, nil
		}
		last = err
		for _, f := range files {
			f.Close()
		}
	}
	return nil, 0, fmt.Errorf("find a port free on 127.0.0.1 to 127.0.0.%d (%d tries): %w", n, tries, last)
}

// listenPorts is the range HostSockets picks a port in: from 10000 to
// below the first port Linux gives outgoing connections
// (ip_local_port_range, 32768 by default), leaving room for the ports of a
// host's other processes; empty where that range starts lower.
func listenPorts() (lo, hi int) {
	first := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				first = v
			}
		}
	}
	return 10000, first - 256
}

// bindFile binds a TCP socket to ip:port (port 0: a free one) without
// listening on it, and returns it as a file to hand to a child process,
// with its port.
func bindFile(ip netip.Addr, port int) (*os.File, int, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("socket: %w", err)
	}
	// No SO_REUSEADDR, unlike Go's listeners: with it on both sockets,
	// Linux lets a second socket bind the port while this one does not
	// listen yet, and listen there first.
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: ip.As4(), Port: port}); err != nil {
		syscall.Close(fd)
		return nil, 0, fmt.Errorf("bind %s: %w", netip.AddrPortFrom(ip, uint16(port)), err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		syscall.Close(fd)
		return nil, 0, fmt.Errorf("bound port: %w", err)
	}
	return os.NewFile(uintptr(fd), netip.AddrPortFrom(ip, uint16(port)).String()), sa.(*syscall.SockaddrInet4).Port, nil
}

// ListenInherited listens on the socket named by EnvListenFD, which its
// launcher bound (and may not have made listen), and returns it; nil
// where none is named.
func ListenInherited(environ []string) (*os.File, error) {
	v, ok := sagemaker.LookupEnv(environ, EnvListenFD)
	if !ok {
		return nil, nil
	}
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("%s=%q: not an inherited file descriptor", EnvListenFD, v)
	}
	// Listening again on a listening socket only sets its backlog.
	if err := syscall.Listen(fd, syscall.SOMAXCONN); err != nil {
		return nil, fmt.Errorf("listen on the socket inherited from the launcher (%s=%d): %w", EnvListenFD, fd, err)
	}
	return os.NewFile(uintptr(fd), "inherited listener"), nil
}
