package main_test

import (
	"bytes"
	binenc "encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sagefit/sagefit/data"
	"github.com/sagefit/sagefit/internal/fixture"
	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/model/tf"
	"github.com/sagefit/sagefit/runtime/checkpoint"
	"github.com/sagefit/sagefit/runtime/launch"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// runLocal runs `sagefit local` and returns the base dir of the host that
// wrote the model.
func runLocal(t *testing.T, fx string, hosts int, hps ...string) string {
	t.Helper()
	out, _ := runLocalLog(t, fx, hosts, hps...)
	return out
}

// runLocalLog is runLocal that also returns what the hosts logged.
func runLocalLog(t *testing.T, fx string, hosts int, hps ...string) (string, string) {
	t.Helper()
	out := t.TempDir()
	args := []string{"local", "--hosts", fmt.Sprint(hosts), "--model", filepath.Join(fx, "model"),
		"--channel", "training=" + filepath.Join(fx, "train"), "--output", out}
	for _, hp := range hps {
		args = append(args, "--hp", hp)
	}
	cmd := exec.Command(binary, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("sagefit %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	if hosts > 1 {
		return filepath.Join(out, "algo-1"), stderr.String()
	}
	return out, stderr.String()
}

func history(t *testing.T, base string) map[string][]float64 {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(base, "output", "data", "history.json"))
	if err != nil {
		t.Fatal(err)
	}
	var h map[string][]float64
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	return h
}

// savedVariables reads every variable of the model a job saved.
func savedVariables(t *testing.T, base string) []model.Variable {
	t.Helper()
	vars, _ := savedModel(t, base)
	return vars
}

// savedModel reads every variable of the model a job saved, and its
// fingerprint.
func savedModel(t *testing.T, base string) ([]model.Variable, string) {
	t.Helper()
	m, err := tf.Load(filepath.Join(base, "model", "1"), tf.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	vars, err := m.ReadVariables()
	if err != nil {
		t.Fatal(err)
	}
	return vars, m.Meta().Fingerprint
}

// stoppedModelIsItsCheckpoint: a job stopped mid-training (base is rank
// 0's) wrote its model, as SageMaker lets a stopped job do, with every
// variable as in the checkpoint it wrote at the stop.
func stoppedModelIsItsCheckpoint(t *testing.T, base string) {
	t.Helper()
	vars, fingerprint := savedModel(t, base)
	ck, err := checkpoint.Latest(filepath.Join(base, "checkpoints"), fingerprint, io.Discard)
	if err != nil || ck == nil {
		t.Fatalf("the stop's checkpoint: %+v, %v", ck, err)
	}
	var got []byte
	for _, v := range vars {
		got = append(got, v.Data...)
	}
	if !bytes.Equal(got, ck.Vars) {
		t.Errorf("the model written at the stop (%d bytes of variables) is not the checkpoint %s (%d bytes)", len(got), ck.Path, len(ck.Vars))
	}
}

func weights(t *testing.T, base string) [][]float32 {
	t.Helper()
	var out [][]float32
	for _, v := range savedVariables(t, base) {
		if v.Spec.Kind != "model" {
			continue
		}
		f, err := v.Float32s()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, f)
	}
	return out
}

func near(a, b float64) bool {
	d := a - b
	if d < 0 {
		d = -d
	}
	return d <= 1e-5*max(1, max(a, -a, b, -b))
}

// TestHostsEqualOneBigBatch: N hosts with batch B train like one host with
// batch N*B (shuffle off, gradients averaged over all rows): the same loss
// and metrics every epoch and the same final weights, within float
// tolerance. Metrics cover every host's data.
func TestHostsEqualOneBigBatch(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "500", "--no-fit", "--no-validation")
	for _, c := range []struct {
		hosts, batch int
		transport    string
	}{{2, 16, "lane"}, {3, 10, "lane"}, {2, 16, "grpc"}} {
		t.Run(fmt.Sprintf("%d hosts, %s", c.hosts, c.transport), func(t *testing.T) {
			one := runLocal(t, fx, 1, "epochs=3", "shuffle=false", fmt.Sprintf("batch_size=%d", c.hosts*c.batch))
			many, log := runLocalLog(t, fx, c.hosts, "epochs=3", "shuffle=false", fmt.Sprintf("batch_size=%d", c.batch),
				"sagefit_allreduce_transport="+c.transport)
			path := map[string]string{"lane": "chunks on a data lane", "grpc": "chunks on the gRPC streams"}[c.transport]
			if strings.Count(log, path) != c.hosts {
				t.Errorf("want every host to log %q:\n%s", path, log)
			}
			h1, hn := history(t, one), history(t, many)
			for k, want := range h1 {
				for e := range want {
					if e >= len(hn[k]) || !near(hn[k][e], want[e]) {
						t.Errorf("%s epoch %d: %d hosts %v, one host %v", k, e+1, c.hosts, hn[k], want)
						break
					}
				}
			}
			w1, wn := weights(t, one), weights(t, many)
			for i := range w1 {
				for j := range w1[i] {
					if !near(float64(wn[i][j]), float64(w1[i][j])) {
						t.Fatalf("weight %d[%d]: %d hosts %v, one host %v", i, j, c.hosts, wn[i][j], w1[i][j])
					}
				}
			}
		})
	}
}

// TestHostsOnTheSingleThreadedExecutor: every host of a job moves its
// train calls to TensorFlow's single-threaded executor (the gradient and
// the fused apply) and the job trains as on the default executor, bit for
// bit: the seed MLP and an LSTM on two hosts.
func TestHostsOnTheSingleThreadedExecutor(t *testing.T) {
	for _, family := range []string{"seed", "lstm"} {
		t.Run(family, func(t *testing.T) {
			fx := fixture.Make(t, family, "--rows", "256", "--no-fit", "--no-validation")
			hps := []string{"epochs=2", "batch_size=16"}
			def := runLocal(t, fx, 2, append(hps, "executor=default")...)
			moved, log := runLocalLog(t, fx, 2, append(hps, "executor=single_threaded")...)
			if n := strings.Count(log, "train steps run on TensorFlow's single-threaded executor"); n != 2 {
				t.Errorf("%d hosts say they moved, want 2:\n%s", n, log)
			}
			if hd, hm := history(t, def), history(t, moved); fmt.Sprint(hd) != fmt.Sprint(hm) {
				t.Errorf("history on the default executor %v, on the single-threaded one %v", hd, hm)
			}
			vd, vm := savedVariables(t, def), savedVariables(t, moved)
			for i := range vd {
				if !bytes.Equal(vd[i].Data, vm[i].Data) {
					t.Errorf("variable %s differs", vd[i].Spec.Name)
				}
			}
		})
	}
}

// TestProcessesPerHost: with sagefit_processes_per_host (one per GPU on
// GPU hosts; forced here on CPU) each host runs several training processes
// joined in one ring, and P processes on each of N hosts with batch B train
// like one process with batch N*P*B.
func TestProcessesPerHost(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "400", "--no-fit", "--no-validation")
	// A file that feeds nothing: each host names it once, not each process.
	labels, err := os.ReadFile(filepath.Join(fx, "train", "labels.npy"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(fx, "train", "extra.npy"), labels, 0o644); err != nil {
		t.Fatal(err)
	}
	one := runLocal(t, fx, 1, "epochs=2", "shuffle=false", "batch_size=32")
	for _, c := range []struct{ hosts, procs, batch int }{{1, 2, 16}, {2, 2, 8}} {
		t.Run(fmt.Sprintf("%d hosts x %d processes", c.hosts, c.procs), func(t *testing.T) {
			many, log := runLocalLog(t, fx, c.hosts, "epochs=2", "shuffle=false", fmt.Sprintf("batch_size=%d", c.batch),
				fmt.Sprintf("sagefit_processes_per_host=%d", c.procs))
			if got := strings.Count(log, fmt.Sprintf("runs %d training processes", c.procs)); got != c.hosts {
				t.Errorf("%d hosts said they run %d processes, want %d:\n%s", got, c.procs, c.hosts, log)
			}
			if want := fmt.Sprintf("rank %d of %d", c.hosts*c.procs-1, c.hosts*c.procs); !strings.Contains(log, want) {
				t.Errorf("no process says %q:\n%s", want, log)
			}
			if got := strings.Count(log, "extra.npy feeds no input or target"); got != c.hosts {
				t.Errorf("the unused file named %d times on %d hosts, want once each:\n%s", got, c.hosts, log)
			}
			h1, hn := history(t, one), history(t, many)
			for k, want := range h1 {
				for e := range want {
					if e >= len(hn[k]) || !near(hn[k][e], want[e]) {
						t.Fatalf("%s epoch %d: %v, one process %v", k, e+1, hn[k], want)
					}
				}
			}
			w1, wn := weights(t, one), weights(t, many)
			for i := range w1 {
				for j := range w1[i] {
					if !near(float64(wn[i][j]), float64(w1[i][j])) {
						t.Fatalf("weight %d[%d]: %v, one process %v", i, j, wn[i][j], w1[i][j])
					}
				}
			}
		})
	}
}

// host is one `sagefit train` process of a hand-made job.
type host struct {
	name   string
	base   string
	cmd    *exec.Cmd
	stdout lockedBuffer
	stderr lockedBuffer
	done   chan struct{}
	// listener is the host's socket, bound with the others before any
	// host starts (launch.HostSockets); closed here once the host has it.
	listener *os.File
}

// startJob lays out n hosts on 127.0.0.1..n and starts those not in
// delayed; the others are returned unstarted.
func startJob(t *testing.T, modelDirs []string, train string, hps map[string]string, delayed map[int]bool) []*host {
	t.Helper()
	trains := make([]string, len(modelDirs))
	for i := range trains {
		trains[i] = train
	}
	return startJobWith(t, modelDirs, trains, hps, delayed, "")
}

// startJobWith is startJob with a training folder per host and a channel
// distribution ("" for FullyReplicated).
func startJobWith(t *testing.T, modelDirs, trains []string, hps map[string]string, delayed map[int]bool, distribution string) []*host {
	t.Helper()
	channels := make([]map[string]string, len(modelDirs))
	for i := range channels {
		channels[i] = map[string]string{"model": modelDirs[i], "training": trains[i]}
	}
	return startJobChannels(t, channels, hps, delayed, distribution)
}

// startJobChannels is startJobWith with each host's channels (model and
// training among them) given whole.
func startJobChannels(t *testing.T, channels []map[string]string, hps map[string]string, delayed map[int]bool, distribution string) []*host {
	t.Helper()
	n := len(channels)
	// Every host inherits its socket, bound now: a delayed host's port is
	// held for it, and refuses its peers until the host listens.
	listeners, port, err := launch.HostSockets(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, f := range listeners {
			f.Close()
		}
	})
	var names, addrs []string
	for i := 0; i < n; i++ {
		names = append(names, fmt.Sprintf("algo-%d", i+1))
		addrs = append(addrs, fmt.Sprintf("algo-%d=127.0.0.%d:%d", i+1, i+1, port))
	}
	root := t.TempDir()
	var hosts []*host
	for i, name := range names {
		h := &host{name: name, base: filepath.Join(root, name), done: make(chan struct{})}
		spec := sagemaker.LocalSpec{
			Hosts: names, CurrentHost: name, Hyperparameters: hps,
			Channels: channels[i],
		}
		if distribution != "" {
			spec.Distributions = map[string]string{"training": distribution}
		}
		err := sagemaker.WriteLocal(h.base, spec)
		if err != nil {
			t.Fatal(err)
		}
		h.cmd = exec.Command(binary, "train")
		h.cmd.Env = append(os.Environ(), "SAGEMAKER_BASE_DIR="+h.base, "SAGEFIT_HOST_ADDRS="+strings.Join(addrs, ","))
		h.cmd.Stdout, h.cmd.Stderr = &h.stdout, &h.stderr
		h.listener = listeners[i]
		h.cmd.Env = append(h.cmd.Env, launch.EnvListenFD+"=3")
		h.cmd.ExtraFiles = []*os.File{h.listener}
		if !delayed[i] {
			h.start(t)
		}
		hosts = append(hosts, h)
	}
	t.Cleanup(func() {
		for _, h := range hosts {
			if h.cmd.Process != nil && h.cmd.ProcessState == nil {
				h.cmd.Process.Kill()
				<-h.done
			}
		}
	})
	return hosts
}

func (h *host) start(t *testing.T) {
	t.Helper()
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h.listener.Close() // the host's own now
	go func() { h.cmd.Wait(); close(h.done) }()
}

// wait waits for the host to exit, at most limit; it returns the exit code
// and the failure file.
func (h *host) wait(t *testing.T, limit time.Duration) (int, string) {
	t.Helper()
	select {
	case <-h.done:
	case <-time.After(limit):
		t.Fatalf("%s still running after %v:\n%s", h.name, limit, h.stderr.String())
	}
	reason, _ := os.ReadFile(filepath.Join(h.base, "output", "failure"))
	return h.cmd.ProcessState.ExitCode(), string(reason)
}

// allSucceed waits for every host, at most limit each, and ends the test
// at the first that did not exit 0, naming it (after what, the run's name,
// where the test makes several) with its failure and its log.
func allSucceed(t *testing.T, hosts []*host, limit time.Duration, what string) {
	t.Helper()
	if what != "" {
		what += ": "
	}
	for _, h := range hosts {
		if code, reason := h.wait(t, limit); code != 0 {
			t.Fatalf("%s%s failed: %s\n%s", what, h.name, reason, h.stderr.String())
		}
	}
}

func (h *host) waitFor(t *testing.T, s string, limit time.Duration) {
	t.Helper()
	if !waitForOutput(&h.stdout, s, limit) {
		t.Fatalf("%s never printed %q:\n%s\n%s", h.name, s, h.stdout.String(), h.stderr.String())
	}
}

func seedModels(fx string, n int) []string {
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = filepath.Join(fx, "model")
	}
	return dirs
}

// TestLostPeerEndsJob: a host killed mid-training ends every other host
// within the peer timeout, each naming the lost host and the step.
func TestLostPeerEndsJob(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "2000", "--no-fit", "--no-validation")
	hps := map[string]string{"epochs": "100000", "sagefit_peer_timeout": "5s"}
	hosts := startJob(t, seedModels(fx, 3), filepath.Join(fx, "train"), hps, nil)
	hosts[0].waitFor(t, "Epoch 2/", 60*time.Second)
	hosts[2].cmd.Process.Signal(syscall.SIGKILL)
	for _, h := range hosts[:2] {
		code, reason := h.wait(t, 30*time.Second)
		if code == 0 {
			t.Errorf("%s exited 0 after losing a peer", h.name)
		}
		if !strings.Contains(reason, "algo-3") || !strings.Contains(reason, "step") {
			t.Errorf("%s failure %q does not name the lost host algo-3 and the step", h.name, reason)
		}
		noTrace(t, h.stderr.String())
	}
}

// launched is a `sagefit local --hosts 2` job under way: its launcher,
// its output, and its base dir.
type launched struct {
	cmd            *exec.Cmd
	stdout, stderr *lockedBuffer
	done           chan struct{}
	out            string
}

// launchTwoHosts starts `sagefit local --hosts 2` on a seed fixture with
// hps, in a process group of its own when group (as a terminal starts it),
// and returns once algo-1 trains its second epoch; the launcher is killed
// when the test ends.
func launchTwoHosts(t *testing.T, group bool, hps ...string) *launched {
	t.Helper()
	fx := fixture.Make(t, "seed", "--rows", "2000", "--no-fit", "--no-validation")
	l := &launched{out: t.TempDir()}
	args := []string{"local", "--hosts", "2", "--model", filepath.Join(fx, "model"),
		"--channel", "training=" + filepath.Join(fx, "train"), "--output", l.out}
	for _, hp := range hps {
		args = append(args, "--hp", hp)
	}
	l.cmd = exec.Command(binary, args...)
	if group {
		l.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	}
	l.stdout, l.stderr, l.done = startUntil(t, l.cmd, "[algo-1] Epoch 2/")
	t.Cleanup(func() {
		l.cmd.Process.Kill()
		<-l.done
	})
	return l
}

// host is the pid of one host's process.
func (l *launched) host(t *testing.T, name string) int {
	t.Helper()
	return workerPID(t, l.cmd.Process.Pid, "SAGEMAKER_BASE_DIR="+filepath.Join(l.out, name))
}

// wait waits for the launcher to exit, failing the test after limit.
func (l *launched) wait(t *testing.T, limit time.Duration, after string) {
	t.Helper()
	select {
	case <-l.done:
	case <-time.After(limit):
		t.Fatalf("sagefit local still runs %v after %s:\n%s", limit, after, l.stderr.String())
	}
}

// failure is a host's failure file.
func (l *launched) failure(name string) string {
	b, _ := os.ReadFile(filepath.Join(l.out, name, "output", "failure"))
	return string(b)
}

// TestStalledHostDoesNotHangTheLauncher: a host stopped mid-training
// (SIGSTOP: alive at TCP, no progress) fails its peer within the peer
// timeout, and `sagefit local --hosts` then stops it, as SageMaker stops a
// failed job's instances, instead of waiting for it forever.
func TestStalledHostDoesNotHangTheLauncher(t *testing.T) {
	l := launchTwoHosts(t, false, "epochs=100000", "sagefit_peer_timeout=3s")
	stalled := l.host(t, "algo-2")
	if err := syscall.Kill(stalled, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(stalled, syscall.SIGKILL)
	l.wait(t, 120*time.Second, "algo-2 stalled")
	if code := l.cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if reason := l.failure("algo-1"); !strings.Contains(reason, "algo-2") {
		t.Errorf("algo-1's failure %q does not name the stalled algo-2", reason)
	}
	if !strings.Contains(l.stderr.String(), "algo-2 still running") {
		t.Errorf("the launcher did not say it stopped algo-2:\n%s", l.stderr.String())
	}
	noTrace(t, l.stderr.String())
}

// TestPausedHostIsWaitedFor: a host frozen (SIGSTOP) for 7 s, less than the
// peer timeout, and then continued, does not end the job: gRPC's keepalive
// dropped a peer silent for about 5 s, whatever sagefit_peer_timeout said.
func TestPausedHostIsWaitedFor(t *testing.T) {
	// 100 epochs of 32 steps: the pause lands in training (6 were over
	// within a second of the second epoch, on a quiet machine before the
	// pause, and the test then checked nothing).
	l := launchTwoHosts(t, false, "epochs=100", "sagefit_peer_timeout=40s")
	paused := l.host(t, "algo-2")
	if err := syscall.Kill(paused, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(l.stdout.String(), "Epoch 100/100") {
		t.Fatalf("training was over before the pause:\n%s", l.stdout.String())
	}
	time.Sleep(7 * time.Second)
	if err := syscall.Kill(paused, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	l.wait(t, 180*time.Second, "the pause")
	if code := l.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after a 7 s pause under a 40 s peer timeout: %s\n%s", code, l.failure("algo-1"), l.stderr.String())
	}
	if h := history(t, filepath.Join(l.out, "algo-1")); len(h["loss"]) != 100 {
		t.Errorf("history has %d epochs, want 100", len(h["loss"]))
	}
}

// TestCtrlCStopsHostsOnce: a terminal's Ctrl-C (SIGINT to the launcher's
// process group) reaches each host once, through the launcher, so every
// host stops after the same step and rank 0 writes a checkpoint. Hosts in
// the launcher's group got it twice, and the second ended a host at once,
// with no checkpoint (in some runs, not all).
func TestCtrlCStopsHostsOnce(t *testing.T) {
	l := launchTwoHosts(t, true, "epochs=100000", "checkpoint=true") // the launcher leads the terminal's group
	for _, h := range []string{"algo-1", "algo-2"} {
		if pgid, _ := syscall.Getpgid(l.host(t, h)); pgid == l.cmd.Process.Pid {
			t.Errorf("%s is in the launcher's process group: a terminal's Ctrl-C reaches it twice", h)
		}
	}
	if err := syscall.Kill(-l.cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	l.wait(t, 60*time.Second, "Ctrl-C")
	for _, h := range []string{"algo-1", "algo-2"} {
		reason := l.failure(h)
		if !strings.Contains(reason, "stopped by SIGINT") {
			t.Errorf("%s's failure %q is not the stop", h, reason)
		}
		if h == "algo-1" && !strings.Contains(reason, "checkpoint written to") {
			t.Errorf("algo-1 wrote no checkpoint: %q", reason)
		}
	}
	noTrace(t, l.stderr.String())
}

// TestKilledHostSupervisorIsNotCalledAStop: a host's supervising process
// (sagefit_processes_per_host=2) killed mid-training passes its death on to
// its workers as SIGTERM (Pdeathsig); they stop the job cleanly, and the
// host's failure file, which the dead supervisor can no longer write, says
// why instead of reading as a stop someone asked for.
func TestKilledHostSupervisorIsNotCalledAStop(t *testing.T) {
	l := launchTwoHosts(t, false, "epochs=100000", "sagefit_processes_per_host=2", "sagefit_peer_timeout=10s")
	supervisor := l.host(t, "algo-2")
	if err := syscall.Kill(supervisor, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	l.wait(t, 90*time.Second, "algo-2's supervisor was killed")
	if code := l.cmd.ProcessState.ExitCode(); code == 0 {
		t.Errorf("exit code 0 after a host's supervisor was killed")
	}
	want := fmt.Sprintf("The host's sagefit process (pid %d) ended while its training processes ran, which stops them (SIGTERM): Training stopped (stopped by SIGTERM) at epoch ", supervisor)
	var reason string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if reason = l.failure("algo-2"); reason != "" {
			break
		}
	}
	if !strings.HasPrefix(reason, want) {
		t.Errorf("algo-2's failure %q does not begin %q\n%s", reason, want, l.stderr.String())
	}
	// algo-1's workers both stopped; its reason is worker 0's, which names
	// the checkpoint rank 0 wrote, not worker 1's, which cannot.
	if reason := l.failure("algo-1"); !strings.Contains(reason, "another host of the job was stopped") || !strings.Contains(reason, "checkpoint written to") {
		t.Errorf("algo-1's failure %q is not rank 0's stop with its checkpoint", reason)
	}
	noTrace(t, l.stderr.String())
}

// TestSIGTERMWhileJoiningIsAStop: a host stopped (SIGTERM: a stop, a spot
// interruption) while it waits for the others to join says so; it said
// "no handshake within the connect timeout: context canceled".
func TestSIGTERMWhileJoiningIsAStop(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "200", "--no-fit", "--no-validation")
	hosts := startJob(t, seedModels(fx, 2), filepath.Join(fx, "train"), map[string]string{"epochs": "2"}, map[int]bool{1: true})
	if !waitForOutput(&hosts[0].stderr, "joins job", 60*time.Second) {
		t.Fatalf("algo-1 never began to join:\n%s", hosts[0].stderr.String())
	}
	hosts[0].cmd.Process.Signal(syscall.SIGTERM)
	code, reason := hosts[0].wait(t, 30*time.Second)
	if code == 0 || strings.TrimSpace(reason) != "Training stopped: stopped by SIGTERM." {
		t.Errorf("exit %d, failure %q; want the stop", code, reason)
	}
	noTrace(t, hosts[0].stderr.String())
}

// TestLatePeerIsWaitedFor: a host that starts well after the others joins.
func TestLatePeerIsWaitedFor(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "200", "--no-fit", "--no-validation")
	hosts := startJob(t, seedModels(fx, 2), filepath.Join(fx, "train"), map[string]string{"epochs": "2"}, map[int]bool{1: true})
	time.Sleep(5 * time.Second)
	hosts[1].start(t)
	for _, h := range hosts {
		if code, reason := h.wait(t, 120*time.Second); code != 0 {
			t.Errorf("%s failed: %s\n%s", h.name, reason, h.stderr.String())
		}
	}
}

// TestSIGTERMOnOneHostStopsJob: SIGTERM on one host stops every host, each
// with a clear reason.
func TestSIGTERMOnOneHostStopsJob(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "2000", "--no-fit", "--no-validation")
	hps := map[string]string{"epochs": "100000", "sagefit_peer_timeout": "10s"}
	hosts := startJob(t, seedModels(fx, 2), filepath.Join(fx, "train"), hps, nil)
	hosts[0].waitFor(t, "Epoch 1/", 60*time.Second)
	hosts[1].cmd.Process.Signal(syscall.SIGTERM)
	for _, h := range hosts {
		code, reason := h.wait(t, 30*time.Second)
		if code == 0 {
			t.Errorf("%s exited 0", h.name)
		}
		if !strings.Contains(reason, "SIGTERM") && !strings.Contains(reason, "another host") {
			t.Errorf("%s failure %q names neither the signal nor the stopped host", h.name, reason)
		}
		noTrace(t, h.stderr.String())
	}
}

// TestFrozenHostSaysItStalled: a host stopped (SIGSTOP) for longer than
// the peer timeout is named by the others, and says itself that it did
// not run: it woke to their links closed and blamed one of them, alive
// (a probe).
func TestFrozenHostSaysItStalled(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "2000", "--no-fit", "--no-validation")
	hps := map[string]string{"epochs": "100000", "sagefit_peer_timeout": "3s"}
	hosts := startJob(t, seedModels(fx, 3), filepath.Join(fx, "train"), hps, nil)
	hosts[0].waitFor(t, "Epoch 1/", 60*time.Second)
	frozen := hosts[1]
	frozen.cmd.Process.Signal(syscall.SIGSTOP)
	time.Sleep(8 * time.Second)
	frozen.cmd.Process.Signal(syscall.SIGCONT)
	for _, h := range hosts {
		code, reason := h.wait(t, 60*time.Second)
		want := "algo-2"
		if h == frozen {
			want = "This host did not run for "
		}
		if code == 0 || !strings.Contains(reason, want) {
			t.Errorf("%s: exit %d, failure %q; want one holding %q", h.name, code, reason, want)
		}
		noTrace(t, h.stderr.String())
	}
}

// TestDifferentModelsAreRefused: hosts that loaded different models fail
// the handshake with one error naming both sides.
func TestDifferentModelsAreRefused(t *testing.T) {
	seed := fixture.Make(t, "seed", "--rows", "200", "--no-fit", "--no-validation")
	wide := fixture.Make(t, "seed_wide", "--rows", "200", "--no-fit", "--no-validation")
	hosts := startJob(t, []string{filepath.Join(seed, "model"), filepath.Join(wide, "model")}, filepath.Join(seed, "train"),
		map[string]string{"epochs": "1", "sagefit_connect_timeout": "60s"}, nil)
	for _, h := range hosts {
		code, reason := h.wait(t, 90*time.Second)
		if code == 0 {
			t.Errorf("%s exited 0", h.name)
		}
		t.Logf("%s: %s", h.name, reason)
		if !strings.Contains(reason, "fingerprint") || !strings.Contains(reason, "algo-1") || !strings.Contains(reason, "algo-2") {
			t.Errorf("%s failure %q does not name the fingerprint mismatch and both hosts", h.name, reason)
		}
	}
}

// netns makes two network namespaces joined by a veth pair, each holding
// one test host at 192.0.2.1 and 192.0.2.2 (TEST-NET-1: traffic never leaves
// the namespaces). It skips, saying why, where that is not allowed.
func netns(t *testing.T) (nsA, nsB, linkA string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root; run as root (CI does) to cut a link mid-training")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no `ip` (iproute2) on this machine: apt-get install iproute2")
	}
	id := fmt.Sprint(os.Getpid() % 100000)
	nsA, nsB, linkA, linkB := "sagefit-a-"+id, "sagefit-b-"+id, "sfa"+id, "sfb"+id
	run := func(args ...string) error {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := run("netns", "add", nsA); err != nil {
		t.Skipf("cannot make a network namespace here: %v", err)
	}
	t.Cleanup(func() { run("netns", "del", nsA) })
	if err := run("netns", "add", nsB); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { run("netns", "del", nsB) })
	steps := [][]string{
		{"link", "add", linkA, "type", "veth", "peer", "name", linkB},
		{"link", "set", linkA, "netns", nsA},
		{"link", "set", linkB, "netns", nsB},
		{"-n", nsA, "addr", "add", "192.0.2.1/24", "dev", linkA},
		{"-n", nsB, "addr", "add", "192.0.2.2/24", "dev", linkB},
		{"-n", nsA, "link", "set", "lo", "up"},
		{"-n", nsB, "link", "set", "lo", "up"},
		{"-n", nsA, "link", "set", linkA, "up"},
		{"-n", nsB, "link", "set", linkB, "up"},
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			t.Fatal(err)
		}
	}
	return nsA, nsB, linkA
}

// TestLinkCutEndsJob: two hosts in their own network namespaces; the link
// between them is cut mid-training (no FIN, no RST: a silently dead peer).
// Both hosts end, non-zero, within the peer timeout plus keepalive, naming
// the other host.
func TestLinkCutEndsJob(t *testing.T) {
	nsA, nsB, linkA := netns(t)
	fx := fixture.Make(t, "seed", "--rows", "2000", "--no-fit", "--no-validation")
	addrs := "algo-1=192.0.2.1:7001,algo-2=192.0.2.2:7001"
	root := t.TempDir()
	var hosts []*host
	for i, ns := range []string{nsA, nsB} {
		name := fmt.Sprintf("algo-%d", i+1)
		h := &host{name: name, base: filepath.Join(root, name), done: make(chan struct{})}
		err := sagemaker.WriteLocal(h.base, sagemaker.LocalSpec{
			Hosts: []string{"algo-1", "algo-2"}, CurrentHost: name,
			Hyperparameters: map[string]string{"epochs": "100000", "sagefit_peer_timeout": "5s"},
			Channels:        map[string]string{"model": filepath.Join(fx, "model"), "training": filepath.Join(fx, "train")},
		})
		if err != nil {
			t.Fatal(err)
		}
		h.cmd = exec.Command("ip", "netns", "exec", ns, binary, "train")
		h.cmd.Env = append(os.Environ(), "SAGEMAKER_BASE_DIR="+h.base, "SAGEFIT_HOST_ADDRS="+addrs)
		h.cmd.Stdout, h.cmd.Stderr = &h.stdout, &h.stderr
		h.start(t)
		hosts = append(hosts, h)
	}
	t.Cleanup(func() {
		for _, h := range hosts {
			if h.cmd.ProcessState == nil {
				h.cmd.Process.Kill()
				<-h.done
			}
		}
	})
	hosts[0].waitFor(t, "Epoch 2/", 60*time.Second)
	if out, err := exec.Command("ip", "-n", nsA, "link", "set", linkA, "down").CombinedOutput(); err != nil {
		t.Fatalf("cut the link: %v: %s", err, out)
	}
	cut := time.Now()
	for i, h := range hosts {
		code, reason := h.wait(t, 60*time.Second)
		t.Logf("%s ended %v after the cut: %s", h.name, time.Since(cut).Round(time.Second), reason)
		if code == 0 {
			t.Errorf("%s exited 0 after the link was cut", h.name)
		}
		other := hosts[1-i].name
		if !strings.Contains(reason, other) {
			t.Errorf("%s failure %q does not name %s", h.name, reason, other)
		}
	}
}

// runStopped starts `sagefit local` (n hosts) into out, sends SIGTERM once
// the first epoch line appears, and waits; it returns the failure reason of
// the host that writes checkpoints.
func runStopped(t *testing.T, args []string, out string, hosts int) string {
	t.Helper()
	cmd := exec.Command(binary, args...)
	stdout, _ := stopAfter(t, cmd, "Epoch 1/")
	if cmd.ProcessState.ExitCode() == 0 {
		t.Fatalf("stopped run exited 0; it should have been stopped mid-training:\n%s", stdout)
	}
	first := out
	if hosts > 1 {
		first = filepath.Join(out, "algo-1")
	}
	reason, _ := os.ReadFile(filepath.Join(first, "output", "failure"))
	// A restarted job runs in a fresh container: only checkpoints carry over.
	for i := 1; i <= hosts; i++ {
		dir := out
		if hosts > 1 {
			dir = filepath.Join(out, fmt.Sprintf("algo-%d", i))
		}
		os.Remove(filepath.Join(dir, "output", "failure"))
	}
	return string(reason)
}

// TestResumeAfterSIGTERMMatchesUninterrupted: a run stopped by SIGTERM
// mid-training and started again ends with the same weights and history as
// a run that was never stopped (shuffle on), on one host and on two; a
// custom train step's own state (a tf.Variable Keras does not track) comes
// back with the model's; and on two hosts each comes back with its own
// BatchNormalization statistics, which the stop's checkpoint averaged
// where the job never stopped did not (they came back averaged, 2e-6
// apart at the end: a probe).
func TestResumeAfterSIGTERMMatchesUninterrupted(t *testing.T) {
	for _, c := range []struct {
		family      string
		hosts       int
		rows, batch string
		validation  bool // averages the hosts' statistics at each epoch's end
	}{
		{"seed", 1, "20000", "32", false}, {"seed", 2, "20000", "32", false},
		{"custom_step_state", 1, "20000", "32", false}, {"custom_step_state", 2, "20000", "32", false},
		{"batch_norm", 2, "400", "16", true},
	} {
		t.Run(fmt.Sprintf("%s/%d hosts", c.family, c.hosts), func(t *testing.T) {
			fixtureArgs := []string{"--rows", c.rows, "--no-fit"}
			if !c.validation {
				fixtureArgs = append(fixtureArgs, "--no-validation")
			}
			fx, hosts := fixture.Make(t, c.family, fixtureArgs...), c.hosts
			args := func(out string) []string {
				a := []string{"local", "--hosts", fmt.Sprint(hosts), "--model", filepath.Join(fx, "model"),
					"--channel", "training=" + filepath.Join(fx, "train"), "--output", out,
					"--hp", "epochs=5", "--hp", "seed=11", "--hp", "batch_size=" + c.batch, "--hp", "checkpoint=true"}
				if c.validation {
					a = append(a, "--channel", "validation="+filepath.Join(fx, "validation"))
				}
				return a
			}
			whole := t.TempDir()
			if out, err := exec.Command(binary, args(whole)...).CombinedOutput(); err != nil {
				t.Fatalf("uninterrupted run: %v\n%s", err, out)
			}
			if hosts > 1 {
				whole = filepath.Join(whole, "algo-1")
			}

			out := t.TempDir()
			reason := runStopped(t, args(out), out, hosts)
			t.Logf("stopped: %s", reason)
			if !strings.Contains(reason, "stopped by SIGTERM") || !strings.Contains(reason, "checkpoint written to") {
				t.Fatalf("failure reason %q does not say it stopped on SIGTERM and wrote a checkpoint", reason)
			}
			first := out
			if hosts > 1 {
				first = filepath.Join(out, "algo-1")
			}
			stoppedModelIsItsCheckpoint(t, first)
			cmd := exec.Command(binary, args(out)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("resumed run: %v\n%s", err, stderr.String())
			}
			if !strings.Contains(stderr.String(), "resuming from") {
				t.Errorf("the second run did not resume:\n%s", stderr.String())
			}
			resumed := first // its model, written at the stop, is replaced
			hw, hr := history(t, whole), history(t, resumed)
			for k, want := range hw {
				for e := range want {
					if e >= len(hr[k]) || hr[k][e] != want[e] {
						t.Errorf("%s: resumed %v, uninterrupted %v", k, hr[k], want)
						break
					}
				}
			}
			ww, wr := weights(t, whole), weights(t, resumed)
			for i := range ww {
				for j := range ww[i] {
					if ww[i][j] != wr[i][j] {
						t.Fatalf("weight %d[%d]: resumed %v, uninterrupted %v", i, j, wr[i][j], ww[i][j])
					}
				}
			}
		})
	}
}

// TestShardedByS3KeyUnevenShards: with ShardedByS3Key each host trains on
// the files it was given, all of them; hosts with fewer rows join the
// remaining steps with empty batches, so uneven shards do not deadlock.
func TestShardedByS3KeyUnevenShards(t *testing.T) {
	small := fixture.Make(t, "seed", "--rows", "100", "--no-fit", "--no-validation")
	large := fixture.Make(t, "seed", "--rows", "170", "--no-fit", "--no-validation", "--seed", "2")
	hosts := startJobWith(t, []string{filepath.Join(small, "model"), filepath.Join(small, "model")},
		[]string{filepath.Join(small, "train"), filepath.Join(large, "train")},
		map[string]string{"epochs": "2", "batch_size": "32", "sagefit_peer_timeout": "20s"}, nil, "ShardedByS3Key")
	for _, h := range hosts {
		if code, reason := h.wait(t, 90*time.Second); code != 0 {
			t.Fatalf("%s failed: %s\n%s", h.name, reason, h.stderr.String())
		}
		// 170 rows at 32 a step: 6 steps for both, though algo-1 has 4 batches.
		if !strings.Contains(h.stdout.String(), "Epoch 2/2 - 6/6 - ") {
			t.Errorf("%s did not run the longest host's 6 steps:\n%s", h.name, h.stdout.String())
		}
	}
	// Metrics cover both hosts' rows: the same on both.
	if a, b := lastLine(hosts[0].stdout.String()), lastLine(hosts[1].stdout.String()); metricsOf(a) != metricsOf(b) {
		t.Errorf("hosts report different epoch metrics:\n%s\n%s", a, b)
	}
}

// TestFullyReplicatedRowsDifferRefused: a FullyReplicated File channel
// gives every host the same data, of which each takes its share. Hosts
// given other files are refused in a sentence naming each host's rows,
// before the first step: a row apart they trained on mixed data without a
// word; 100 against 40, they failed on a mismatched collective. So is a
// validation channel, before training too.
func TestFullyReplicatedRowsDifferRefused(t *testing.T) {
	for _, rows := range []string{"99", "40"} {
		t.Run(rows+" rows against 100", func(t *testing.T) {
			a := fixture.Make(t, "seed", "--rows", "100", "--no-fit", "--no-validation")
			b := fixture.Make(t, "seed", "--rows", rows, "--no-fit", "--no-validation", "--seed", "2")
			hosts := startJobWith(t, []string{filepath.Join(a, "model"), filepath.Join(a, "model")},
				[]string{filepath.Join(a, "train"), filepath.Join(b, "train")},
				map[string]string{"epochs": "2", "batch_size": "8", "sagefit_peer_timeout": "20s"}, nil, "FullyReplicated")
			want := `Epoch 1: channel "training" holds different rows on the hosts (algo-1 100, algo-2 ` + rows + `): a FullyReplicated channel must give every host the same data`
			for _, h := range hosts {
				code, reason := h.wait(t, 90*time.Second)
				if code == 0 || !strings.HasPrefix(reason, want) {
					t.Errorf("%s: exit %d, failure %q, want one starting %q", h.name, code, reason, want)
				}
				if strings.Contains(h.stdout.String(), "Epoch 1/2") {
					t.Errorf("%s trained:\n%s", h.name, h.stdout.String())
				}
			}
		})
	}
	t.Run("validation", func(t *testing.T) {
		a := fixture.Make(t, "seed", "--rows", "100", "--no-fit", "--no-validation")
		b := fixture.Make(t, "seed", "--rows", "40", "--no-fit", "--no-validation", "--seed", "2")
		host := func(val string) map[string]string {
			return map[string]string{"model": filepath.Join(a, "model"), "training": filepath.Join(a, "train"), "validation": val}
		}
		hosts := startJobChannels(t, []map[string]string{host(filepath.Join(a, "train")), host(filepath.Join(b, "train"))},
			map[string]string{"epochs": "2", "batch_size": "8", "sagefit_peer_timeout": "20s"}, nil, "")
		want := `Epoch 1: channel "validation" holds different rows on the hosts (algo-1 100, algo-2 40)`
		for _, h := range hosts {
			code, reason := h.wait(t, 90*time.Second)
			if code == 0 || !strings.HasPrefix(reason, want) {
				t.Errorf("%s: exit %d, failure %q, want one starting %q", h.name, code, reason, want)
			}
			if strings.Contains(h.stdout.String(), "Epoch 1/2") || strings.Contains(h.stderr.String(), "step 1") {
				t.Errorf("%s trained before the refusal:\n%s", h.name, h.stdout.String())
			}
		}
	})
}

// TestHostsGivenOtherSettingsRefused: hosts given other hyperparameters
// or channels than rank 0 (files made by hand) are refused right after the
// join, the host that differs saying how; they trained on without a word
// (another seed, another learning_rate: rank 0's used) or failed on a
// collective the others did not call, in words about the collectives
// (another batch_size; a validation channel on one host only).
func TestHostsGivenOtherSettingsRefused(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "64", "--no-fit")
	for _, c := range []struct {
		name   string
		hps    map[string]string // algo-2's, over the job's
		noVal  bool              // algo-2 has no validation channel
		reason string            // algo-2's failure
	}{
		{"seed", map[string]string{"seed": "5"}, false, `This host (algo-2) was given other settings than rank 0 (algo-1): hyperparameter "seed" is 5 here and 1 on rank 0; SageMaker gives every host the same hyperparameters and the channels of its instance group`},
		{"batch size", map[string]string{"batch_size": "16", "learning_rate": "0.5"}, false, `hyperparameter "batch_size" is 16 here and 8 on rank 0; hyperparameter "learning_rate" is 0.5 here and not given on rank 0;`},
		{"validation channel", nil, true, `channel "validation" is given on rank 0 and not here;`},
		// A channel the job does not read may differ (a heterogeneous
		// cluster gives some channels to some instance groups only).
		{"unread channel", nil, false, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			channels := map[string]string{"model": filepath.Join(fx, "model"), "training": filepath.Join(fx, "train"), "validation": filepath.Join(fx, "validation")}
			hps := map[string]string{"epochs": "2", "batch_size": "8", "seed": "1", "sagefit_peer_timeout": "20s"}
			hosts := startJobChannels(t, []map[string]string{channels, channels}, hps, map[int]bool{1: true}, "")
			spec := sagemaker.LocalSpec{Hosts: []string{"algo-1", "algo-2"}, CurrentHost: "algo-2", Hyperparameters: maps.Clone(hps), Channels: maps.Clone(channels)}
			maps.Copy(spec.Hyperparameters, c.hps)
			if c.noVal {
				delete(spec.Channels, "validation")
			}
			if c.reason == "" {
				spec.Channels["extra"] = filepath.Join(fx, "validation")
			}
			if err := sagemaker.WriteLocal(hosts[1].base, spec); err != nil {
				t.Fatal(err)
			}
			hosts[1].start(t)
			for _, h := range hosts {
				code, reason := h.wait(t, 90*time.Second)
				if c.reason == "" {
					if code != 0 {
						t.Errorf("%s: exit %d, failure %q", h.name, code, reason)
					}
					continue
				}
				want := c.reason
				if h.name == "algo-1" {
					want = "Hosts [algo-2] were given other hyperparameters or channels than rank 0 (algo-1), as their failures say"
				}
				if code == 0 || !strings.Contains(reason, want) {
					t.Errorf("%s: exit %d, failure %q, want one holding %q", h.name, code, reason, want)
				}
				if strings.Contains(h.stdout.String(), "Epoch 1/2") {
					t.Errorf("%s trained:\n%s", h.name, h.stdout.String())
				}
			}
		})
	}
}

// TestFP16AllReduceKeepsTheGradientsSize: with sagefit_fp16_allreduce the
// hosts' gradients travel as float16 at the size of one gradient, and the
// rows counted beside them as float64: weighed by their rows first, a
// gradient of some 500 over 512 rows overflowed float16 and the job went
// NaN; and a global batch of more than 65504 rows made the count infinite,
// so no step moved a weight (exit 0, epoch 2 the same as epoch 1).
func TestFP16AllReduceKeepsTheGradientsSize(t *testing.T) {
	fx := fixture.Make(t, "batch_norm", "--rows", "64", "--no-fit", "--no-validation")
	for _, c := range []struct {
		name  string
		rows  int
		label float32
		batch string
	}{
		{"large gradients", 1024, 300, "512"},
		{"a global batch past float16", 66000, 1, "33000"},
		{"large moving statistics", 1024, 1, "512"}, // features of variance 2.3e6: 2% of it, summed over 2 hosts, passes float16's 65504
	} {
		t.Run(c.name, func(t *testing.T) {
			own := t.TempDir()
			fixture.CopyTree(t, fx, own)
			x, y := make([]byte, c.rows*4*4), make([]byte, c.rows*4)
			for i := range c.rows {
				for j := range 4 {
					v := float32((i*7+j*3)%11) / 10
					if c.name == "large moving statistics" {
						v = float32((i*7+j*3)%11-5) * 480
					}
					binenc.LittleEndian.PutUint32(x[(i*4+j)*4:], math.Float32bits(v))
				}
				binenc.LittleEndian.PutUint32(y[i*4:], math.Float32bits(c.label*(1+float32(i%5)/10)))
			}
			if err := data.WriteNPY(filepath.Join(own, "train", "train.npy"), data.Float32, []int{c.rows, 4}, x); err != nil {
				t.Fatal(err)
			}
			if err := data.WriteNPY(filepath.Join(own, "train", "labels.npy"), data.Float32, []int{c.rows, 1}, y); err != nil {
				t.Fatal(err)
			}
			hps := []string{"epochs=2", "batch_size=" + c.batch, "shuffle=false"}
			fp32 := history(t, runLocal(t, own, 2, hps...))["loss"]
			base16 := runLocal(t, own, 2, append(hps, "sagefit_fp16_allreduce=true")...)
			fp16 := history(t, base16)["loss"]
			if _, variance := movingStats(t, base16); slices.ContainsFunc(variance, func(v float32) bool { return math.IsInf(float64(v), 0) || math.IsNaN(float64(v)) }) {
				t.Errorf("moving variance %v: averaged in float16", variance)
			}
			for e := range fp32 {
				if c.name == "large moving statistics" {
					break // the statistics are what this case checks
				}
				if math.IsNaN(fp16[e]) || math.Abs(fp16[e]-fp32[e]) > 1e-2*math.Abs(fp32[e]) {
					t.Errorf("epoch %d: loss %v with float16 on the wire, %v without", e+1, fp16[e], fp32[e])
				}
			}
			if fp16[1] == fp16[0] && c.name != "large moving statistics" {
				t.Errorf("loss %v: no step moved a weight", fp16)
			}
		})
	}
}

// An optimizer with a static loss scale (Keras 3's loss_scale_factor, 1e6)
// hands the all-reduce gradients a million times their size: with float16
// on the wire every gradient above 0.07 was infinite, and the job trained
// to NaN with exit 0. Its gradients now travel without the scale.
func TestFP16AllReduceWithAStaticLossScale(t *testing.T) {
	fx := fixture.Make(t, "seed_loss_scale_factor", "--rows", "400", "--no-fit", "--no-validation")
	hps := []string{"epochs=2", "batch_size=16", "shuffle=false"}
	fp32 := history(t, runLocal(t, fx, 2, hps...))["loss"]
	fp16 := history(t, runLocal(t, fx, 2, append(hps, "sagefit_fp16_allreduce=true")...))["loss"]
	for e := range fp32 {
		if math.IsNaN(fp16[e]) || math.Abs(fp16[e]-fp32[e]) > 1e-2*math.Abs(fp32[e]) || fp16[e] == fp16[0] && e > 0 {
			t.Errorf("epoch %d: loss %v with float16 on the wire, %v without", e+1, fp16, fp32)
		}
	}
}

// TestStatefulRandomOpsDrawOnceAStep: tf-keras's Dropout draws its mask
// with a random op whose state is the op's. Several processes ran a step as
// a gradient call, then as a call that applies and computes the next, each
// signature with its own copy of the op from the same seed: the second call
// drew the mask the first had drawn, the job's masks went d1, d1, d2, ...
// Each host of the same data now draws as one host does: with a learning
// rate of 0 and rows of ones, each step's loss is its mask's, so 2 hosts
// (and 2 processes on one) give one host's history exactly.
func TestStatefulRandomOpsDrawOnceAStep(t *testing.T) {
	four := fixture.Make(t, fixture.LegacyKeras+"dropout_masks", "--rows", "4", "--no-fit", "--no-validation")
	eight := fixture.Make(t, fixture.LegacyKeras+"dropout_masks", "--rows", "8", "--no-fit", "--no-validation")
	hps := []string{"epochs=3", "batch_size=2", "shuffle=false"}
	one := history(t, runLocal(t, four, 1, hps...))["loss"]
	for name, got := range map[string][]float64{
		"2 hosts":     history(t, runLocal(t, eight, 2, hps...))["loss"],
		"2 processes": history(t, runLocal(t, eight, 1, append(hps, "sagefit_processes_per_host=2")...))["loss"],
	} {
		if !slices.Equal(got, one) {
			t.Errorf("%s: loss %v, one host's %v", name, got, one)
		}
	}
}

// TestHostWithoutShardTrains: a ShardedByS3Key channel of fewer S3 objects
// than hosts leaves a host with none (an empty folder in File mode, a
// stream that sends nothing in Pipe mode). That host joins every step with
// an empty batch and says why: the job trains as the other host alone
// would, to the bit, validation_split too (File mode; its split of no rows
// is two empty parts). The other host's Pipe stream holds two shards, one
// after the other (a channel in parts). Before, its channel was refused (no file for the
// input; in Pipe mode, a stream of 0 arrays; with validation_split, too
// few rows to split) and the job failed.
func TestHostWithoutShardTrains(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "100", "--no-fit", "--no-validation")
	train := filepath.Join(fx, "train")
	warning := `channel "training" is ShardedByS3Key and this host got none of its S3 objects`
	for _, mode := range []string{"File", "Pipe"} {
		hps := map[string]string{"epochs": "2", "batch_size": "16", "seed": "3"}
		if mode == "File" {
			hps["validation_split"] = "0.25"
		}
		var args []string
		for k, v := range hps {
			args = append(args, k+"="+v)
		}
		alone := history(t, runLocal(t, fx, 1, args...))
		if _, ok := alone["val_loss"]; ok != (mode == "File") {
			t.Fatalf("%s: the host alone's history %v", mode, alone)
		}
		var hosts []*host
		if mode == "File" {
			hosts = startJobWith(t, seedModels(fx, 2), []string{train, t.TempDir()}, hps, nil, "ShardedByS3Key")
		} else {
			py := fixture.Python(t)
			hosts = startPipeHosts(t, fx, hps, 2, "ShardedByS3Key", func(h *host, _ int, fifo string) *exec.Cmd {
				if h.name == "algo-2" {
					return exec.Command("/bin/sh", "-c", `: > "$1"`, "sh", fifo) // opens, sends nothing, closes
				}
				// Two shards, each a part with both tensors (rows 0-59, 60-99).
				return exec.Command(py, "-c", `import io, sys, numpy as np
x, y, b = np.load(sys.argv[1]), np.load(sys.argv[2]), io.BytesIO()
for part in (slice(0, 60), slice(60, None)):
    np.save(b, x[part]); np.save(b, y[part])
open(sys.argv[3], "wb").write(b.getvalue())`, filepath.Join(train, "train.npy"), filepath.Join(train, "labels.npy"), fifo)
			})
		}
		allSucceed(t, hosts, 90*time.Second, mode)
		if !strings.Contains(hosts[1].stderr.String(), warning) {
			t.Errorf("%s: algo-2 did not say it got no share:\n%s", mode, hosts[1].stderr.String())
		}
		if strings.Contains(hosts[0].stderr.String(), warning) {
			t.Errorf("%s: algo-1 said it got no share", mode)
		}
		got := history(t, hosts[0].base)
		for k, want := range alone {
			if !slices.Equal(got[k], want) {
				t.Errorf("%s: %s %v on two hosts, %v on the one that has the rows", mode, k, got[k], want)
			}
		}
	}
}

// TestShardedChannelInParts: ShardedByS3Key hands each host whole S3
// objects, so a host gets several shards (.npz archives here, one per
// shard, each holding the train and labels arrays): each host trains on its
// shards' rows one after another, exactly as on one file of their
// concatenation, class weights included. Before, a host with two shards
// was refused ("model tensor matches several channel files").
func TestShardedChannelInParts(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "200", "--no-fit", "--no-validation")
	dir := t.TempDir()
	script := `import os, sys, numpy as np
src, d = sys.argv[1], sys.argv[2]
x, y = np.load(os.path.join(src, "train.npy")), np.load(os.path.join(src, "labels.npy"))
cuts = [0, 30, 90, 140, 200]
for host, shards in (("a", (0, 2)), ("b", (1, 3))):
    for k in shards:
        os.makedirs(os.path.join(d, host + "-parts"), exist_ok=True)
        np.savez(os.path.join(d, host + "-parts", f"shard-{k}.npz"), train=x[cuts[k]:cuts[k+1]], labels=y[cuts[k]:cuts[k+1]])
    os.makedirs(os.path.join(d, host + "-whole"))
    np.save(os.path.join(d, host + "-whole", "train.npy"), np.concatenate([x[cuts[k]:cuts[k+1]] for k in shards]))
    np.save(os.path.join(d, host + "-whole", "labels.npy"), np.concatenate([y[cuts[k]:cuts[k+1]] for k in shards]))
`
	if out, err := exec.Command(fixture.Python(t), "-c", script, filepath.Join(fx, "train"), dir).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	hps := map[string]string{"epochs": "2", "batch_size": "16", "seed": "3", "class_weight": `{"0": 1, "1": 3}`}
	run := func(layout string) map[string][]float64 {
		hosts := startJobWith(t, seedModels(fx, 2), []string{filepath.Join(dir, "a-"+layout), filepath.Join(dir, "b-"+layout)}, hps, nil, "ShardedByS3Key")
		allSucceed(t, hosts, 90*time.Second, layout)
		return history(t, hosts[0].base)
	}
	parts, whole := run("parts"), run("whole")
	for k, want := range whole {
		if !slices.Equal(parts[k], want) {
			t.Errorf("%s: %v from the shards, %v from their concatenation", k, parts[k], want)
		}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// metricsOf drops the timing part of an epoch line.
func metricsOf(line string) string {
	if i := strings.Index(line, "loss:"); i >= 0 {
		return line[i:]
	}
	return line
}

// TestPipeModeOnTwoHosts: each host reads its own copy of every epoch's
// stream (FullyReplicated) and trains on its share of the rows: the result
// equals the same two-host job in File mode.
func TestPipeModeOnTwoHosts(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "300", "--no-fit", "--no-validation")
	hps := map[string]string{"epochs": "2", "batch_size": "16", "seed": "3"}
	fileRun := runLocal(t, fx, 2, "epochs=2", "batch_size=16", "seed=3")

	train := filepath.Join(fx, "train")
	hosts := startPipeHosts(t, fx, hps, 2, "", func(_ *host, _ int, fifo string) *exec.Cmd {
		return exec.Command("/bin/sh", "-c", `cat "$1" "$2" > "$3"`, "sh",
			filepath.Join(train, "train.npy"), filepath.Join(train, "labels.npy"), fifo)
	})
	allSucceed(t, hosts, 90*time.Second, "")
	hp, hf := history(t, hosts[0].base), history(t, fileRun)
	for k, want := range hf {
		for e := range want {
			if e >= len(hp[k]) || hp[k][e] != want[e] {
				t.Errorf("%s: Pipe mode %v, File mode %v", k, hp[k], want)
				break
			}
		}
	}
}

// TestLatePipeStreamIsWaitedFor: one host's Pipe stream for the second
// epoch comes 8 s late, past the peer timeout (3 s) but within the pipe
// timeout: the job waits for it, as one host does. Its peer's first
// all-reduce of the epoch failed at the peer timeout, blaming the host.
func TestLatePipeStreamIsWaitedFor(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "300", "--no-fit", "--no-validation")
	hps := map[string]string{"epochs": "2", "batch_size": "16", "sagefit_peer_timeout": "3s", "sagefit_pipe_timeout": "60s"}
	train := filepath.Join(fx, "train")
	hosts := startPipeHosts(t, fx, hps, 2, "", func(h *host, epoch int, fifo string) *exec.Cmd {
		delay := "0"
		if h.name == "algo-2" && epoch == 1 {
			delay = "8"
		}
		return exec.Command("/bin/sh", "-c", `sleep "$1"; cat "$2" "$3" > "$4"`, "sh", delay,
			filepath.Join(train, "train.npy"), filepath.Join(train, "labels.npy"), fifo)
	})
	allSucceed(t, hosts, 120*time.Second, "")
	if h := history(t, hosts[0].base); len(h["loss"]) != 2 {
		t.Errorf("history has %d epochs, want 2", len(h["loss"]))
	}
}

// TestPipeStreamsOfDifferentRowsRefused: FullyReplicated Pipe streams that
// hold different rows on the two hosts end the job with a sentence that
// says so; the hosts failed on "every rank must call the same collectives"
// once one ran out of steps before the other.
func TestPipeStreamsOfDifferentRowsRefused(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "300", "--no-fit", "--no-validation")
	hps := map[string]string{"epochs": "1", "batch_size": "16"}
	train := filepath.Join(fx, "train")
	py := fixture.Python(t)
	hosts := startPipeHosts(t, fx, hps, 1, "", func(h *host, _ int, fifo string) *exec.Cmd {
		rows := map[string]string{"algo-1": "300", "algo-2": "200"}[h.name]
		return exec.Command(py, "-c", `import io, sys, numpy as np
n = int(sys.argv[3]); b = io.BytesIO()
np.save(b, np.load(sys.argv[1])[:n]); np.save(b, np.load(sys.argv[2])[:n])
open(sys.argv[4], "wb").write(b.getvalue())`,
			filepath.Join(train, "train.npy"), filepath.Join(train, "labels.npy"), rows, fifo)
	})
	want := `Epoch 1: Pipe channel "training" streamed different rows to the hosts (algo-1 300, algo-2 200): a FullyReplicated channel must send every host the same data`
	for _, h := range hosts {
		code, reason := h.wait(t, 60*time.Second)
		if code == 0 || !strings.HasPrefix(reason, want) {
			t.Errorf("%s: exit %d, failure %q; want one beginning %q", h.name, code, reason, want)
		}
	}
}

// TestHostFailingInTrainingTellsTheOthers: a host whose Pipe stream is cut
// short in the second epoch fails with that reason, and so does the other
// host, naming it: it said only that the host's link closed, and the
// reason was in the failing host's failure file alone (found by a probe).
func TestHostFailingInTrainingTellsTheOthers(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "300", "--no-fit", "--no-validation")
	hps := map[string]string{"epochs": "2", "batch_size": "16"}
	train := filepath.Join(fx, "train")
	hosts := startPipeHosts(t, fx, hps, 2, "", func(h *host, epoch int, fifo string) *exec.Cmd {
		cut := "" // the whole stream
		if h.name == "algo-2" && epoch == 1 {
			cut = "| head -c 2000"
		}
		return exec.Command("/bin/sh", "-c", `cat "$1" "$2" `+cut+` > "$3"`, "sh",
			filepath.Join(train, "train.npy"), filepath.Join(train, "labels.npy"), fifo)
	})
	const why = "the writer stopped after"
	for _, h := range hosts {
		code, reason := h.wait(t, 90*time.Second)
		if code == 0 || !strings.Contains(reason, why) {
			t.Errorf("%s: exit %d, failure %q; want algo-2's reason (%q)", h.name, code, reason, why)
		}
		t.Logf("%s: %s", h.name, reason)
	}
	if _, reason := hosts[0].wait(t, time.Second); !strings.Contains(reason, "algo-2") {
		t.Errorf("algo-1's failure %q does not name algo-2", reason)
	}
}

// TestHostFailingBeforeTrainingTellsTheOthers: rank 0 failing of its own
// after the hosts met and before the fit loop (its model folder a file)
// tells the others why; they said that its link closed (a probe).
func TestHostFailingBeforeTrainingTellsTheOthers(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "64", "--no-fit", "--no-validation")
	channels := map[string]string{"model": filepath.Join(fx, "model"), "training": filepath.Join(fx, "train")}
	hosts := startJobChannels(t, []map[string]string{channels, channels, channels}, map[string]string{"epochs": "2", "batch_size": "8", "sagefit_peer_timeout": "20s"}, map[int]bool{0: true}, "")
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	hosts[0].cmd.Env = append(hosts[0].cmd.Env, "SM_MODEL_DIR="+file)
	hosts[0].start(t)
	const why = "The model cannot be written to " // algo-1's own sentence
	for _, h := range hosts {
		code, reason := h.wait(t, 90*time.Second)
		want := why
		if h.name != "algo-1" {
			want = "reported by rank 0: the model cannot be written to "
		}
		if code == 0 || !strings.Contains(reason, want) {
			t.Errorf("%s: exit %d, failure %q; want one holding %q", h.name, code, reason, want)
		}
	}
}

// startPipeHosts starts a two-host job on the seed fixture fx whose
// training channel is in Pipe mode: for each host and each of its first
// epochs, the FIFO training_<epoch> is fed by the process feed returns
// (killed, if still running, when the test ends); distribution is the
// channel's S3DistributionType ("": FullyReplicated).
func startPipeHosts(t *testing.T, fx string, hps map[string]string, epochs int, distribution string, feed func(h *host, epoch int, fifo string) *exec.Cmd) []*host {
	t.Helper()
	train := filepath.Join(fx, "train")
	hosts := startJobWith(t, seedModels(fx, 2), []string{train, train}, hps, map[int]bool{0: true, 1: true}, "")
	for _, h := range hosts {
		spec := sagemaker.LocalSpec{
			Hosts: []string{"algo-1", "algo-2"}, CurrentHost: h.name, Hyperparameters: hps,
			Channels:   map[string]string{"model": filepath.Join(fx, "model"), "training": train},
			InputModes: map[string]string{"training": "Pipe"},
		}
		if distribution != "" {
			spec.Distributions = map[string]string{"training": distribution}
		}
		err := sagemaker.WriteLocal(h.base, spec)
		if err != nil {
			t.Fatal(err)
		}
		for epoch := range epochs {
			fifo := filepath.Join(h.base, "input", "data", fmt.Sprintf("training_%d", epoch))
			if err := syscall.Mkfifo(fifo, 0o644); err != nil {
				t.Fatal(err)
			}
			w := feed(h, epoch, fifo)
			if err := w.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { w.Process.Kill(); w.Wait() })
		}
		h.start(t)
	}
	return hosts
}

// TestHostFailingBeforeTheJoinTellsTheOthers: a host whose own training
// channel holds a bad file fails before it joins, and tells the others
// why: they end at once with its reason. They waited out their connect
// timeout (15 minutes by default), then failed naming a host that never
// came, without its reason.
func TestHostFailingBeforeTheJoinTellsTheOthers(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "64", "--no-fit", "--no-validation")
	good, bad := filepath.Join(fx, "train"), t.TempDir()
	fixture.CopyTree(t, good, bad)
	files, _ := filepath.Glob(filepath.Join(bad, "*.npy"))
	for _, f := range files { // algo-2's copy of the data, each file cut short
		if err := os.WriteFile(f, []byte("\x93NUMPY"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	channels := func(train string) map[string]string {
		return map[string]string{"model": filepath.Join(fx, "model"), "training": train}
	}
	start := time.Now()
	hosts := startJobChannels(t, []map[string]string{channels(good), channels(bad), channels(good)},
		map[string]string{"epochs": "1", "sagefit_connect_timeout": "5m"}, nil, "")
	const why = ".npy"
	for _, h := range hosts {
		code, reason := h.wait(t, 120*time.Second)
		if code == 0 || !strings.Contains(reason, why) {
			t.Errorf("%s: exit %d, failure %q; want algo-2's reason (its %s)\n%s", h.name, code, reason, why, h.stderr.String())
		}
		if h.name != "algo-2" && !strings.Contains(reason, "host algo-2 failed before it joined") {
			t.Errorf("%s: failure %q does not say algo-2 failed before it joined", h.name, reason)
		}
		t.Logf("%s: %s", h.name, reason)
	}
	if d := time.Since(start); d > 90*time.Second {
		t.Errorf("the hosts ended after %v; the connect timeout is 5 minutes", d)
	}
}
