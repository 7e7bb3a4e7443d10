package launch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sagefit/sagefit/distributed/transport"
	"github.com/sagefit/sagefit/runtime/job"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// A host with several GPUs runs one training process per GPU, each joining
// the ring as a member of its own (EnvWorker), rather than one
// process driving every GPU: the graph a SavedModel carries is built for one
// device, so driving several from one session would mean rewriting it into
// towers; one process per GPU reuses the one-device step, the ring and the
// sharding exactly as hosts do, keeps each GPU's input pipeline and host
// threads its own, and is what Horovod and torchrun do. Ranks are
// host-major, so ring neighbours talk over loopback except at host
// boundaries.
//
// Workers share the host's SageMaker base dir: they read the same inputs,
// member 0 alone writes the model, outputs and checkpoints, and the failure
// file keeps the first failure written.

// Grace periods after a worker fails: the others usually fail on their own
// within a collective's timeout; a worker that failed before joining would
// leave them waiting for it until the connect timeout, so they are stopped
// (SIGTERM: after the current step) and, if still running, killed.
const (
	workerFailGrace = 10 * time.Second
	workerStopGrace = 30 * time.Second
	// WorkerStopBound is how long a stopped host's workers have to write
	// the checkpoint and end: SageMaker's own, between its SIGTERM and
	// SIGKILL.
	WorkerStopBound = 2 * time.Minute
)

// ProcessesPerHost reads and checks job.HPProcessesPerHost: 0 for "auto".
func ProcessesPerHost(env *sagemaker.Env) (int, error) {
	v := env.String(job.HPProcessesPerHost, "auto")
	if v == "auto" {
		return 0, nil
	}
	p, err := env.Int(job.HPProcessesPerHost, 0) // 2.0 and 2 alike, as every integer hyperparameter
	if err != nil || p < 1 {
		return 0, fmt.Errorf("hyperparameter %q must be \"auto\" (one process per GPU) or a whole number of at least 1, got %q", job.HPProcessesPerHost, v)
	}
	return p, nil
}

// visibleGPUs lists the GPUs this host's processes may use: those
// CUDA_VISIBLE_DEVICES names where it is set (set but empty hides them
// all), else 0..numGPUs-1.
func visibleGPUs(environ []string, numGPUs int) []string {
	if v, ok := sagemaker.LookupEnv(environ, "CUDA_VISIBLE_DEVICES"); ok {
		if strings.TrimSpace(v) == "" {
			return nil
		}
		return strings.Split(v, ",")
	}
	var devs []string
	for i := range numGPUs {
		devs = append(devs, strconv.Itoa(i))
	}
	return devs
}

// WorkersPerHost is how many training processes this host runs.
func WorkersPerHost(env *sagemaker.Env, environ []string, log io.Writer) (int, error) {
	p, err := ProcessesPerHost(env)
	if err != nil {
		return 0, err
	}
	auto := p == 0
	if auto {
		p = max(1, len(visibleGPUs(environ, env.NumGPUs)))
	}
	if p == 1 {
		return 1, nil
	}
	for _, name := range env.ChannelNames() {
		if env.Channels[name].InputMode != sagemaker.Pipe {
			continue
		}
		if !auto {
			return 0, fmt.Errorf("channel %q is in Pipe mode, which feeds one process per host, but hyperparameter %q asks for %d; use File or FastFile mode, or one process", name, job.HPProcessesPerHost, p)
		}
		fmt.Fprintf(log, "sagefit: channel %q is in Pipe mode, which feeds one process per host: training with one process, on 1 of this host's %d GPUs (File or FastFile mode would use them all)\n", name, p)
		return 1, nil
	}
	return p, nil
}

// memberAddrs gives every ring member its address, host-major (member
// k of host h at index h*p+k): member k of a host listens on the host's
// address (SAGEFIT_HOST_ADDRS, else its name) with the port plus k. A job
// of one host with no addresses given keeps its ring on free loopback
// ports ("127.0.0.1:0", bound by memberListeners).
func memberAddrs(env *sagemaker.Env, environ []string, p int) ([]string, error) {
	raw, _ := sagemaker.LookupEnv(environ, EnvHostAddrs)
	given, err := transport.ParseHostAddrs(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvHostAddrs, err)
	}
	var out []string
	for _, h := range env.Hosts {
		if len(env.Hosts) == 1 && raw == "" {
			for range p {
				out = append(out, "127.0.0.1:0")
			}
			break
		}
		addr, ok := given[h]
		if !ok {
			addr = net.JoinHostPort(h, strconv.Itoa(transport.DefaultPort))
		}
		host, port, _ := net.SplitHostPort(addr)
		base, err := strconv.Atoi(port)
		if err != nil || base+p-1 > 65535 {
			return nil, fmt.Errorf("%s: port of host %s (%q) leaves no room for %d processes", EnvHostAddrs, h, port, p)
		}
		for k := range p {
			out = append(out, net.JoinHostPort(host, strconv.Itoa(base+k)))
		}
	}
	return out, nil
}

// workerDevices returns the GPU each worker sees, or nil where none is
// visible (the workers then run on the CPU).
func workerDevices(environ []string, numGPUs, p int) []string {
	devs := visibleGPUs(environ, numGPUs)
	if len(devs) == 0 {
		return nil
	}
	out := make([]string, p)
	for k := range p {
		out[k] = devs[k%len(devs)] // more processes than GPUs share them round robin
	}
	return out
}

// memberListeners binds the listening sockets of this host's members, for
// the workers to inherit: a port in use fails here, in one clear sentence,
// and a free port (":0") is known before any worker starts. It returns
// every member's address, as SAGEFIT_HOST_ADDRS, and this host's sockets.
// Member 0 takes the host's socket where this launcher inherited one
// (EnvListenFD: `sagefit local --hosts`); the others bind the ports after
// it.
func memberListeners(env *sagemaker.Env, environ []string, p int) (string, []*os.File, error) {
	addrs, err := memberAddrs(env, environ, p)
	if err != nil {
		return "", nil, err
	}
	var files []*os.File
	for k := range p {
		i := env.Rank*p + k
		addr := addrs[i]
		host, port, _ := net.SplitHostPort(addr)
		if _, err := netip.ParseAddr(host); err != nil {
			addr = ":" + port // a host name: listen on every interface, as Join does
		}
		var f *os.File
		var bound string
		if k == 0 {
			f, err = ListenInherited(environ)
		}
		if f == nil && err == nil {
			f, bound, err = listenFile(addr)
		}
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return "", nil, fmt.Errorf("training process %d of this host: %w", k, err)
		}
		files = append(files, f)
		if port == "0" {
			addrs[i] = bound
		}
	}
	named := make([]string, len(addrs))
	for i, a := range addrs {
		named[i] = WorkerName(env.Hosts[i/p], i%p) + "=" + a
	}
	return strings.Join(named, ","), files, nil
}

// listenFile listens on addr and returns the socket as a file to hand to a
// child process, with the address it got.
func listenFile(addr string) (*os.File, string, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	defer l.Close()
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		return nil, "", err
	}
	return f, l.Addr().String(), nil
}

// Spec is what the launcher needs to start this host's workers.
type Spec struct {
	// Exec runs one more training process of this host (argv, e.g.
	// [/usr/local/bin/sagefit train]).
	Exec    []string
	Base    string   // the host's SageMaker base dir, shared by its workers
	Environ []string // passed on, with the launcher's variables appended
	Stdout  io.Writer
	Stderr  io.Writer
}

// Processes runs p workers of this host's part of the job and waits for
// them. A stop (ctx) is passed on to every worker, once. It returns nil
// when every worker succeeded, else an error whose text is the host's
// failure reason, picked from the workers' (see jobReason).
func Processes(ctx context.Context, o Spec, env *sagemaker.Env, p int) error {
	addrs, listeners, err := memberListeners(env, o.Environ, p)
	if err != nil {
		return err
	}
	defer func() {
		for _, f := range listeners {
			f.Close() // those of workers that never started (nil: ErrInvalid)
		}
	}()
	reasons, err := os.MkdirTemp("", "sagefit-workers-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(reasons)
	reasonFile := func(k int) string { return fmt.Sprintf("%s/failure-%d", reasons, k) }
	devices := workerDevices(o.Environ, env.NumGPUs, p)
	var outMu sync.Mutex // whole lines from all workers
	cmds := make([]*exec.Cmd, p)
	copies := make([]sync.WaitGroup, p)
	for k := range p {
		cmd := exec.Command(o.Exec[0], o.Exec[1:]...)
		cmd.Env = append(slices.Clone(o.Environ),
			EnvWorker+"="+fmt.Sprintf("%d/%d", k, p),
			EnvHostAddrs+"="+addrs,
			"SAGEMAKER_BASE_DIR="+o.Base,
			"SM_NUM_CPUS="+strconv.Itoa(max(1, env.NumCPUs/p)),
			EnvListenFD+"=3",
			EnvFailureFile+"="+reasonFile(k))
		if devices != nil {
			cmd.Env = append(cmd.Env, "CUDA_VISIBLE_DEVICES="+devices[k], "SM_NUM_GPUS=1")
		}
		cmd.ExtraFiles = []*os.File{listeners[k]}
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Pdeathsig: syscall.SIGTERM, // never outlive the launcher
			Setpgid:   true,            // a terminal's Ctrl-C reaches the launcher only, which passes one SIGTERM on
		}
		if k == 0 {
			// Worker 0's lines are the host's log as with one process
			// (metric_definitions read them).
			cmd.Stdout, cmd.Stderr = o.Stdout, o.Stderr
		} else {
			// The others' epoch lines would count every metric again: only
			// their logs are kept, marked.
			cmd.Stdout = io.Discard
			pe, _ := cmd.StderrPipe()
			copies[k].Go(func() {
				sc := bufio.NewScanner(pe)
				sc.Buffer(make([]byte, 64<<10), 1<<20)
				for sc.Scan() {
					outMu.Lock()
					fmt.Fprintf(o.Stderr, "[worker %d] %s\n", k, sc.Text())
					outMu.Unlock()
				}
				io.Copy(io.Discard, pe) // a line too long: drain, never block the worker
			})
		}
		if err := cmd.Start(); err != nil {
			for _, c := range cmds[:k] {
				c.Process.Kill()
			}
			return fmt.Errorf("start training process %d of %d: %w", k, p, err)
		}
		cmds[k] = cmd
		// The worker holds its socket now; one that dies closes it, so its
		// peers are refused at once rather than queued on ours.
		listeners[k].Close()
		listeners[k] = nil
	}
	gpus := "no GPUs"
	if devices != nil {
		gpus = "GPUs " + strings.Join(devices, ",")
	}
	fmt.Fprintf(o.Stderr, "sagefit: host %s runs %d training processes (%s), ring members %s\n", env.CurrentHost, p, gpus, addrs)

	type exit struct {
		k   int
		err error
	}
	exits := make(chan exit, p)
	for k, cmd := range cmds {
		go func() {
			copies[k].Wait() // all its output read before Wait closes the pipe
			exits <- exit{k, cmd.Wait()}
		}()
	}
	running := make([]bool, p)
	signalled := make([]bool, p)
	for k := range running {
		running[k] = true
	}
	signal := func(sig syscall.Signal) {
		for k, c := range cmds {
			if running[k] && (sig == syscall.SIGKILL || !signalled[k]) {
				signalled[k] = true
				c.Process.Signal(sig)
			}
		}
	}
	var failed []exit
	var failTimer, killTimer, reasonPoll <-chan time.Time
	stopping, stopped, written := ctx.Done(), false, false
	for left := p; left > 0; {
		select {
		case e := <-exits:
			left--
			running[e.k] = false
			if e.err != nil {
				failed = append(failed, e)
				fmt.Fprintf(o.Stderr, "sagefit: worker %d (%s) exited: %v\n", e.k, WorkerName(env.CurrentHost, e.k), e.err)
				if failTimer == nil && !stopped && left > 0 {
					failTimer = time.After(workerFailGrace)
				}
			}
		case <-stopping: // SIGTERM: every worker stops after the same step
			stopping, stopped, failTimer = nil, true, nil
			signal(syscall.SIGTERM)
			killTimer = time.After(WorkerStopBound) // one that cannot (stopped, hung) is not waited for forever
			poll := time.NewTicker(100 * time.Millisecond)
			defer poll.Stop()
			reasonPoll = poll.C
		case <-reasonPoll:
			// Worker 0 writes the stop's reason before the model, whose
			// write may outlast SageMaker's kill: the host's failure file
			// holds it from then on, not once every worker has ended.
			// (Its line is whole once it ends in a newline.)
			if b, _ := os.ReadFile(reasonFile(0)); strings.HasSuffix(string(b), "\n") && sagemaker.IsStop(string(b)) {
				reasonPoll = nil
				written = sagemaker.WriteFailure(sagemaker.Paths{Base: o.Base}.FailureFile(), string(b)) == nil
			}
		case <-failTimer:
			failTimer = nil
			fmt.Fprintf(o.Stderr, "sagefit: worker %d failed; stopping this host's other training processes\n", failed[0].k)
			signal(syscall.SIGTERM)
			killTimer = time.After(workerStopGrace)
		case <-killTimer:
			killTimer = nil
			signal(syscall.SIGKILL)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	err = errors.New(jobReason(failed[0].k, failed[0].err, stopped, reasonFile, env.CurrentHost, p))
	if written { // the same reason: worker 0's, after a stop
		return &sagemaker.Written{Err: err}
	}
	return err
}

// jobReason picks the host's failure reason from its workers': after a
// stop (this host's, or another's that the first worker to end reports),
// worker 0's (rank 0 of the host writes the checkpoint, and its reason
// says where); otherwise the first worker to fail, in its own words, or,
// if it left none (killed, by the OOM killer say), how it ended.
func jobReason(first int, firstErr error, stopped bool, reasonFile func(int) string, host string, p int) string {
	read := func(k int) string {
		b, _ := os.ReadFile(reasonFile(k))
		return strings.TrimSpace(string(b))
	}
	r := read(first)
	if r0 := read(0); r0 != "" && (stopped || sagemaker.IsStop(r)) {
		return r0
	}
	if r != "" {
		return r
	}
	return sagemaker.Reason(fmt.Errorf("training process %d of %d on host %s (%s) ended without a reason: %v",
		first, p, host, WorkerName(host, first), firstErr))
}
