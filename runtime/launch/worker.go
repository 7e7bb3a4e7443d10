package launch

import (
	"bytes"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// WorkerName is the ring member name of worker k on host: the host's own
// name for worker 0 (so one process per host changes nothing), "host#k"
// for the others.
func WorkerName(host string, k int) string {
	if k == 0 {
		return host
	}
	return host + "#" + strconv.Itoa(k)
}

// IsWorker reports whether this process was started by a host's launcher
// as one of its training processes.
func IsWorker(environ []string) bool {
	v, _ := sagemaker.LookupEnv(environ, EnvWorker)
	return v != ""
}

// WorkerView turns e into a worker's view of the job when EnvWorker is
// set: every host of the cluster stands for P members in a row (host,
// host#1, ..., host#P-1), so ranks are host-major and a worker's ring
// neighbours are on its own host except at host boundaries; Rank, Hosts and
// CurrentHost become the member's, Host stays the machine's.
func WorkerView(e *sagemaker.Env, environ []string) error {
	k, p, err := workerSlot(environ)
	if err != nil || p == 0 {
		return err
	}
	members := make([]string, 0, len(e.Hosts)*p)
	for _, h := range e.Hosts {
		for j := range p {
			members = append(members, WorkerName(h, j))
		}
	}
	e.LocalRank, e.LocalWorkers = k, p
	e.Hosts, e.CurrentHost, e.Rank = members, WorkerName(e.Host, k), e.Rank*p+k
	return nil
}

// GuardWorker readies a worker for its launcher's death, which reaches it
// as SIGTERM (Pdeathsig) and ends the job's stop there: the worker keeps
// SIGTERM caught (the death comes once per exiting thread of the launcher,
// and a second SIGTERM would end the worker in the middle of its stop) and
// ignores SIGPIPE (a line written to the dead launcher's pipe must not end
// it). An orphaned worker that has not ended WorkerStopBound later writes
// the host's failure file and exits, as its launcher would have killed it.
// The returned func, deferred with the worker's exit code, writes the
// worker's reason (from workerFailure) to hostFailure when the launcher is
// gone and cannot: worker 0's first, whose reason names the checkpoint.
func GuardWorker(environ []string, workerFailure, hostFailure string) (finish func(code int)) {
	signal.Ignore(syscall.SIGPIPE)
	signal.Notify(make(chan os.Signal, 1), syscall.SIGTERM)
	launcher := os.Getppid()
	k, _, _ := workerSlot(environ) // WorkerView refuses a bad one
	orphaned := func() bool { return os.Getppid() != launcher }
	gone := fmt.Sprintf("The host's sagefit process (pid %d) ended while its training processes ran, which stops them (SIGTERM)", launcher)
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for range tick.C {
			if orphaned() {
				time.Sleep(WorkerStopBound)
				_ = sagemaker.WriteFailure(hostFailure, fmt.Sprintf("%s, and training process %d did not end within %v of it.", gone, k, WorkerStopBound))
				os.Exit(1)
			}
		}
	}()
	return func(code int) {
		if code == 0 || !orphaned() {
			return
		}
		reason, err := os.ReadFile(workerFailure)
		if err != nil || len(bytes.TrimSpace(reason)) == 0 {
			return
		}
		if k > 0 {
			// Worker 0's reason names rank 0's checkpoint: it gets the
			// first word, if it says it soon.
			for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				if _, err := os.Stat(hostFailure); err == nil {
					return
				}
			}
		}
		_ = sagemaker.WriteFailure(hostFailure, gone+": "+string(bytes.TrimSpace(reason)))
	}
}

// workerSlot reads EnvWorker's "k/P": worker k of P, or P 0 when it is
// not set.
func workerSlot(environ []string) (k, p int, err error) {
	v, ok := sagemaker.LookupEnv(environ, EnvWorker)
	if !ok || v == "" {
		return 0, 0, nil
	}
	ks, ps, _ := strings.Cut(v, "/")
	k, err1 := strconv.Atoi(ks)
	p, err2 := strconv.Atoi(ps)
	if err1 != nil || err2 != nil || p < 1 || k < 0 || k >= p {
		return 0, 0, &sagemaker.ConfigError{Source: EnvWorker, Msg: fmt.Sprintf("must be \"k/P\" with 0 <= k < P, got %q", v)}
	}
	return k, p, nil
}
