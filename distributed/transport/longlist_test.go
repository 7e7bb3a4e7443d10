package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sagefit/sagefit/distributed"
)

// SageMaker shows the first 1024 characters of the failure file; a
// sentence about a job of 500 hosts must say its cause early and fit.
const (
	failureLimit = 1024
	causeWithin  = 200
)

func algoHosts(n int) []string {
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("algo-%d", i+1)
	}
	return hosts
}

// longJob is the longest SageMaker training job name.
var longJob = strings.Repeat("j", 63)

// causeEarly checks msg matches cause within its first causeWithin
// characters and fits failureLimit in all.
func causeEarly(t *testing.T, msg, cause string) {
	t.Helper()
	loc := regexp.MustCompile(cause).FindStringIndex(msg)
	switch {
	case loc == nil:
		t.Errorf("%q does not say %q", msg, cause)
	case loc[1] > causeWithin:
		t.Errorf("the cause %q ends at character %d, past %d: %q", cause, loc[1], causeWithin, msg)
	}
	if len(msg) > failureLimit {
		t.Errorf("sentence of %d characters, over %d: %q", len(msg), failureLimit, msg)
	}
}

// logLines collects what a Config's Logf receives.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logLines) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.lines, func(line string) bool { return strings.Contains(line, s) })
}

// TestHostListMismatchSentence: two host lists that differ are told apart
// in a few words, first, however long they are.
func TestHostListMismatchSentence(t *testing.T) {
	swapped := algoHosts(500)
	swapped[17], swapped[81] = swapped[81], swapped[17]
	for _, tc := range []struct {
		name         string
		remote, ours []string
		want         string
	}{
		{"small, one more", algoHosts(3), algoHosts(2), `3 hosts on algo-2, 2 on algo-1`},
		{"500, one more", algoHosts(501), algoHosts(500), `501 hosts on algo-2, 500 on algo-1`},
		{"500, two swapped", swapped, algoHosts(500), `rank 17 is algo-82 on algo-2 but algo-18 on algo-1`},
		{"500 against 2", algoHosts(500), algoHosts(2), `500 hosts on algo-2, 2 on algo-1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ours := hello{Proto: protocolVersion, Job: longJob, Hosts: tc.ours, Rank: 0, Host: "algo-1", Fingerprint: "f"}
			remote := hello{Proto: protocolVersion, Job: longJob, Hosts: tc.remote, Rank: 1, Host: "algo-2", Fingerprint: "f"}
			err := ours.check(remote, 1)
			var mm *distributed.MismatchError
			if !errors.As(err, &mm) {
				t.Fatalf("check = %v, want a mismatch", err)
			}
			// As Join reports it, with the longest job name.
			msg := (&joinMismatch{job: longJob, text: mm.Text, cause: err}).Error()
			t.Log(msg)
			causeEarly(t, msg, `different host lists \(`+regexp.QuoteMeta(tc.want)+`\)`)
			if !strings.Contains(msg, "every host must get the same host list") {
				t.Errorf("%q does not say what to do", msg)
			}
		})
	}
}

// TestJoinConfigErrorsLongList: configuration errors about a host list of
// 500 abbreviate it, and the log has it in full.
func TestJoinConfigErrorsLongList(t *testing.T) {
	hosts := algoHosts(500)
	repeated := slices.Clone(hosts)
	repeated[300] = "algo-7"
	empty := slices.Clone(hosts)
	empty[250] = ""
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"not in the list", Config{JobName: longJob, Hosts: hosts, Self: "algo-501"},
			`this host "algo-501" is not in the host list \[algo-1 algo-2 … algo-500\] \(500 hosts\)`},
		{"repeated", Config{JobName: longJob, Hosts: repeated, Self: "algo-1"}, `host "algo-7" is repeated in the host list`},
		{"empty", Config{JobName: longJob, Hosts: empty, Self: "algo-1"}, `host 251 of the host list .* has an empty name`},
		{"address of a stranger", Config{JobName: longJob, Hosts: hosts, Self: "algo-1", Addrs: map[string]string{"z": "1.2.3.4:1"}},
			`address given for "z", which is not in the host list \[algo-1 algo-2 … algo-500\] \(500 hosts\)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log logLines
			tc.cfg.Logf = log.logf
			_, err := Join(context.Background(), tc.cfg)
			if err == nil {
				t.Fatal("Join succeeded")
			}
			t.Log(err)
			causeEarly(t, err.Error(), tc.want)
			if !log.has(strings.Join(tc.cfg.Hosts, " ")) {
				t.Errorf("the log does not hold the full host list: %q", log.lines)
			}
		})
	}
}

// freeLoopbackAddr is an address on loopback where nobody listens.
func freeLoopbackAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("loopback unusable here: %v", err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestConnectTimeoutLongList: a host of a 500-host job whose neighbours
// never come says so first, in a sentence that fits.
func TestConnectTimeoutLongList(t *testing.T) {
	hosts := algoHosts(500)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("loopback unusable here: %v", err)
	}
	var log logLines
	addrs := map[string]string{"algo-1": lis.Addr().String(), "algo-2": freeLoopbackAddr(t), "algo-500": freeLoopbackAddr(t)}
	start := time.Now()
	_, err = Join(context.Background(), Config{JobName: longJob, Hosts: hosts, Self: "algo-1", Addrs: addrs, Listener: lis,
		Fingerprint: "f", ConnectTimeout: time.Second, Logf: log.logf})
	if err == nil {
		t.Fatal("Join succeeded with nobody there")
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("Join took %v with a connect timeout of 1s", d)
	}
	t.Log(err)
	causeEarly(t, err.Error(), `rank 1 \(algo-2 at [0-9.:]+\): no handshake within the connect timeout`)
	if !log.has(strings.Join(hosts, " ")) {
		t.Errorf("the log does not hold the full host list")
	}
}

// TestGRPCHostListMismatchLongList: two hosts of a 500-host job given
// lists that differ in one place both fail with a sentence that says where,
// first; the log holds both lists in full.
func TestGRPCHostListMismatchLongList(t *testing.T) {
	cfgs := loopbackConfigs(t, 2, longJob)
	a, b := algoHosts(500), algoHosts(500)
	b[17], b[81] = b[81], b[17]
	logs := make([]*logLines, 2)
	for r := range cfgs {
		addrs := maps(cfgs[r].Addrs, "algo-3", freeLoopbackAddr(t))
		addrs["algo-500"] = freeLoopbackAddr(t)
		cfgs[r].Addrs = addrs
		cfgs[r].ConnectTimeout = 20 * time.Second
		logs[r] = &logLines{}
		cfgs[r].Logf = logs[r].logf
	}
	cfgs[0].Hosts, cfgs[1].Hosts = a, b
	gs, errs := joinAll(t, cfgs)
	closeAll(t, gs)
	for r, err := range errs {
		var mm *distributed.MismatchError
		if err == nil || !errors.As(err, &mm) {
			t.Fatalf("rank %d: want a host list mismatch, got %v", r, err)
		}
		t.Logf("rank %d: %v", r, err)
		causeEarly(t, err.Error(), `different host lists \(rank 17 is algo-(18|82) on algo-[12] but algo-(18|82) on algo-[12]\)`)
	}
	if !logs[1].has(strings.Join(a, " ")) || !logs[1].has(strings.Join(b, " ")) {
		t.Errorf("rank 1's log lacks a host list in full")
	}
}
