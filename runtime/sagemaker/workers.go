package sagemaker

import (
	"fmt"
	"strconv"
	"strings"
)

// EnvWorker marks a process as one of several training processes on its
// host (one per GPU), started by the host's launcher: "k/P" is worker k
// (0-based) of P. See the runtime package's launcher.
const EnvWorker = "SAGEFIT_WORKER"

// WorkerName is the ring member name of worker k on host: the host's own
// name for worker 0 (so one process per host changes nothing), "host#k"
// for the others.
func WorkerName(host string, k int) string {
	if k == 0 {
		return host
	}
	return host + "#" + strconv.Itoa(k)
}

// loadWorker makes a worker's view of the job: every host of the cluster
// stands for P members in a row (host, host#1, ..., host#P-1), so ranks are
// host-major and a worker's ring neighbours are on its own host except at
// host boundaries; Rank, Hosts and CurrentHost are the member's.
func (e *Env) loadWorker(environ []string) error {
	e.Host, e.LocalWorkers = e.CurrentHost, 1
	v, ok := lookupOK(environ, EnvWorker)
	if !ok || v == "" {
		return nil
	}
	ks, ps, _ := strings.Cut(v, "/")
	k, err1 := strconv.Atoi(ks)
	p, err2 := strconv.Atoi(ps)
	if err1 != nil || err2 != nil || p < 1 || k < 0 || k >= p {
		return &ConfigError{Source: EnvWorker, Msg: fmt.Sprintf("must be \"k/P\" with 0 <= k < P, got %q", v)}
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
