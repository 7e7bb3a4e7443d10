package runtime

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sagefit/sagefit/distributed"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// HPProcessesPerHost sets how many training processes a host runs: "auto"
// (the default) runs one per visible GPU, a number runs that many.
const HPProcessesPerHost = "sagefit_processes_per_host"

// A host with several GPUs runs one training process per GPU, each joining
// the ring as a member of its own (sagemaker.EnvWorker), rather than one
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
)

// processesPerHost reads HPProcessesPerHost: 0 for "auto".
func processesPerHost(env *sagemaker.Env) (int, error) {
	v := env.String(HPProcessesPerHost, "auto")
	if v == "auto" {
		return 0, nil
	}
	p, err := strconv.Atoi(v)
	if err != nil || p < 1 {
		return 0, fmt.Errorf("hyperparameter %q must be \"auto\" (one process per GPU) or a whole number of at least 1, got %q", HPProcessesPerHost, v)
	}
	return p, nil
}

// visibleGPUs lists the GPUs this host's processes may use: those
// CUDA_VISIBLE_DEVICES names where it is set (set but empty hides them
// all), else 0..numGPUs-1.
func visibleGPUs(environ []string, numGPUs int) []string {
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "CUDA_VISIBLE_DEVICES="); ok {
			if strings.TrimSpace(v) == "" {
				return nil
			}
			return strings.Split(v, ",")
		}
	}
	var devs []string
	for i := range numGPUs {
		devs = append(devs, strconv.Itoa(i))
	}
	return devs
}

// workersPerHost is how many training processes this host runs.
func workersPerHost(env *sagemaker.Env, environ []string, log io.Writer) (int, error) {
	p, err := processesPerHost(env)
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
			return 0, fmt.Errorf("channel %q is in Pipe mode, which feeds one process per host, but hyperparameter %q asks for %d; use File or FastFile mode, or one process", name, HPProcessesPerHost, p)
		}
		fmt.Fprintf(log, "sagefit: channel %q is in Pipe mode, which feeds one process per host: training with one process, on 1 of this host's %d GPUs (File or FastFile mode would use them all)\n", name, p)
		return 1, nil
	}
	return p, nil
}

// memberAddrs gives every ring member its address: member k of a host
// listens on the host's address with the port plus k. A job of one host
// keeps its ring on loopback (its name need not resolve, as in local runs).
func memberAddrs(env *sagemaker.Env, environ []string, p int) (string, error) {
	given, err := distributed.ParseHostAddrs(lookupEnv(environ, distributed.EnvHostAddrs))
	if err != nil {
		return "", fmt.Errorf("%s: %w", distributed.EnvHostAddrs, err)
	}
	var out []string
	for _, h := range env.Hosts {
		addr, ok := given[h]
		switch {
		case ok:
		case len(env.Hosts) == 1:
			addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(distributed.DefaultPort))
		default:
			addr = net.JoinHostPort(h, strconv.Itoa(distributed.DefaultPort))
		}
		host, port, _ := net.SplitHostPort(addr)
		base, err := strconv.Atoi(port)
		if err != nil || base+p-1 > 65535 {
			return "", fmt.Errorf("%s: port of host %s (%q) leaves no room for %d processes", distributed.EnvHostAddrs, h, port, p)
		}
		for k := range p {
			out = append(out, sagemaker.WorkerName(h, k)+"="+net.JoinHostPort(host, strconv.Itoa(base+k)))
		}
	}
	return strings.Join(out, ","), nil
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

// launch runs p workers of this host's part of the job and waits for them.
// A stop (ctx) is passed on to every worker.
func launch(ctx context.Context, o Options, env *sagemaker.Env, p int) int {
	paths := sagemaker.Paths{Base: o.Base}
	addrs, err := memberAddrs(env, o.Environ, p)
	if err != nil {
		return fail(o.Stderr, paths, err)
	}
	devices := workerDevices(o.Environ, env.NumGPUs, p)
	var outMu sync.Mutex // whole lines from all workers
	var copies sync.WaitGroup
	cmds := make([]*exec.Cmd, p)
	for k := range p {
		cmd := exec.Command(o.Exec[0], o.Exec[1:]...)
		cmd.Env = append(slices.Clone(o.Environ),
			sagemaker.EnvWorker+"="+fmt.Sprintf("%d/%d", k, p),
			distributed.EnvHostAddrs+"="+addrs,
			"SAGEMAKER_BASE_DIR="+o.Base,
			"SM_NUM_CPUS="+strconv.Itoa(max(1, env.NumCPUs/p)))
		if devices != nil {
			cmd.Env = append(cmd.Env, "CUDA_VISIBLE_DEVICES="+devices[k], "SM_NUM_GPUS=1")
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM} // never outlive the launcher
		if k == 0 {
			// Worker 0's lines are the host's log as with one process
			// (metric_definitions read them).
			cmd.Stdout, cmd.Stderr = o.Stdout, o.Stderr
		} else {
			po, _ := cmd.StdoutPipe()
			pe, _ := cmd.StderrPipe()
			for _, r := range []io.Reader{po, pe} {
				copies.Go(func() {
					sc := bufio.NewScanner(r)
					sc.Buffer(make([]byte, 64<<10), 1<<20)
					for sc.Scan() {
						outMu.Lock()
						fmt.Fprintf(o.Stderr, "[worker %d] %s\n", k, sc.Text())
						outMu.Unlock()
					}
				})
			}
		}
		if err := cmd.Start(); err != nil {
			for _, c := range cmds[:k] {
				c.Process.Kill()
			}
			return fail(o.Stderr, paths, fmt.Errorf("start training process %d of %d: %w", k+1, p, err))
		}
		cmds[k] = cmd
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
		go func() { exits <- exit{k, cmd.Wait()} }()
	}
	signalAll := func(sig os.Signal) {
		for _, c := range cmds {
			c.Process.Signal(sig)
		}
	}
	var failed []exit
	var failTimer, killTimer <-chan time.Time
	stopping := ctx.Done()
	for left := p; left > 0; {
		select {
		case e := <-exits:
			left--
			if e.err != nil {
				failed = append(failed, e)
				if failTimer == nil && left > 0 {
					failTimer = time.After(workerFailGrace)
				}
			}
		case <-stopping: // SIGTERM: every worker stops after the same step
			stopping = nil
			signalAll(syscall.SIGTERM)
		case <-failTimer:
			failTimer = nil
			fmt.Fprintf(o.Stderr, "sagefit: training process %d failed; stopping the others on this host\n", failed[0].k+1)
			signalAll(syscall.SIGTERM)
			killTimer = time.After(workerStopGrace)
		case <-killTimer:
			killTimer = nil
			signalAll(syscall.SIGKILL)
		}
	}
	copies.Wait()
	if len(failed) == 0 {
		return 0
	}
	// A worker that failed wrote the reason; one that was killed did not.
	if _, err := os.Stat(paths.FailureFile()); err != nil {
		e := failed[0]
		return fail(o.Stderr, paths, fmt.Errorf("training process %d of %d on host %s (%s) ended without a reason: %v",
			e.k+1, p, env.CurrentHost, sagemaker.WorkerName(env.CurrentHost, e.k), e.err))
	}
	return 1
}
