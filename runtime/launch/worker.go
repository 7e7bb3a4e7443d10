package launch

import (
	"fmt"
	"github.com/sagefit/sagefit/runtime/sagemaker"
	"strconv"
	"strings"
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
	v, ok := sagemaker.LookupEnv(environ, EnvWorker)
	if !ok || v == "" {
		return nil
	}
	ks, ps, _ := strings.Cut(v, "/")
	k, err1 := strconv.Atoi(ks)
	p, err2 := strconv.Atoi(ps)
	if err1 != nil || err2 != nil || p < 1 || k < 0 || k >= p {
		return &sagemaker.ConfigError{Source: EnvWorker, Msg: fmt.Sprintf("must be \"k/P\" with 0 <= k < P, got %q", v)}
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
