package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sagefit/sagefit/internal/fixture"
	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sagefit-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "sagefit")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		os.Stderr.WriteString("cannot build sagefit: " + err.Error() + "\n")
		os.Exit(1)
	}
	// sagefit local keeps the temporary base dir of a job run without
	// --output (it holds the job's outputs) and of a failed S3 job: the
	// tests' go with the test binary's folder, not into the machine's
	// temp dir (a full run left a few hundred megabytes there).
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		panic(err)
	}
	os.Setenv("TMPDIR", tmp)
	code := m.Run()
	fixture.Cleanup()
	os.RemoveAll(dir)
	os.Exit(code)
}

func seedJob(t *testing.T, hps map[string]string) string {
	t.Helper()
	fx := fixture.Make(t, "seed", "--rows", "200", "--no-fit")
	base := t.TempDir()
	err := sagemaker.WriteLocal(base, sagemaker.LocalSpec{
		Channels: map[string]string{
			"model":    filepath.Join(fx, "model"),
			"training": filepath.Join(fx, "train"),
		},
		Hyperparameters: hps,
	})
	if err != nil {
		t.Fatal(err)
	}
	return base
}

func noTrace(t *testing.T, out string) {
	t.Helper()
	for _, s := range []string{"goroutine ", "panic:", "runtime/debug"} {
		if strings.Contains(out, s) {
			t.Errorf("output has a Go trace (%q):\n%s", s, out)
		}
	}
}

// TestTrainAsSageMakerRunsIt: `docker run IMAGE train` runs the binary as
// "train" (or with the argument train) with the job under /opt/ml; here
// SAGEMAKER_BASE_DIR stands in for /opt/ml.
func TestTrainAsSageMakerRunsIt(t *testing.T) {
	link := filepath.Join(t.TempDir(), "train")
	if err := os.Symlink(binary, link); err != nil {
		t.Fatal(err)
	}
	for name, argv := range map[string][]string{
		"argument train":   {binary, "train"},
		"invoked as train": {link},
		// An image whose entrypoint already says train (the link, or
		// sagefit train), run as SageMaker runs it.
		"invoked as train with argument train": {link, "train"},
		"arguments train train":                {binary, "train", "train"},
	} {
		t.Run(name, func(t *testing.T) {
			base := seedJob(t, map[string]string{"epochs": "2"})
			cmd := exec.Command(argv[0], argv[1:]...)
			cmd.Env = append(os.Environ(), "SAGEMAKER_BASE_DIR="+base)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("%v\n%s", err, stderr.String())
			}
			if !strings.Contains(stdout.String(), "Epoch 2/2 - 7/7 - ") {
				t.Errorf("stdout lacks the epoch lines:\n%s", stdout.String())
			}
			for _, f := range []string{"model/1/saved_model.pb", "model/1/variables/variables.index", "output/data/history.json", "output/data/loss.png"} {
				if _, err := os.Stat(filepath.Join(base, f)); err != nil {
					t.Errorf("missing %s: %v", f, err)
				}
			}
			if _, err := os.Stat(filepath.Join(base, "output", "failure")); err == nil {
				t.Error("a failure file after a good run")
			}
		})
	}
}

// TestTrainRefusesArguments: `sagefit train` takes its job from /opt/ml
// alone; an argument (a flag, SageMaker's ContainerArguments) is refused in
// the failure file, not dropped (it trained the job as if none were given).
func TestTrainRefusesArguments(t *testing.T) {
	base := seedJob(t, map[string]string{"epochs": "1"})
	cmd := exec.Command(binary, "train", "--epochs", "3")
	cmd.Env = append(os.Environ(), "SAGEMAKER_BASE_DIR="+base)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("exit 0 for sagefit train --epochs 3:\n%s", out)
	}
	noTrace(t, string(out))
	reason, _ := os.ReadFile(filepath.Join(base, "output", "failure"))
	if !strings.HasPrefix(string(reason), `Arguments ["--epochs" "3"] given to sagefit train are refused`) {
		t.Errorf("failure file says %q", reason)
	}
	if _, err := os.Stat(filepath.Join(base, "model", "1")); err == nil {
		t.Error("the job trained a model")
	}
}

// TestLocalBadDataFailsClearly: one process, and two on the host (every
// one fails; the first reason is the one kept).
func TestLocalBadDataFailsClearly(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "200", "--no-fit")
	data := t.TempDir()
	b, _ := os.ReadFile(filepath.Join(fx, "train", "train.npy"))
	os.WriteFile(filepath.Join(data, "train.npy"), b[:len(b)/2], 0o644)
	b, _ = os.ReadFile(filepath.Join(fx, "train", "labels.npy"))
	os.WriteFile(filepath.Join(data, "labels.npy"), b, 0o644)
	for _, procs := range []string{"1", "2"} {
		t.Run(procs+" processes", func(t *testing.T) { testLocalBadData(t, fx, data, procs) })
	}
}

func testLocalBadData(t *testing.T, fx, data, procs string) {
	out := t.TempDir()
	cmd := exec.Command(binary, "local", "--model", filepath.Join(fx, "model"), "--channel", "training="+data, "--hp", "epochs=1",
		"--hp", "sagefit_processes_per_host="+procs, "--output", out)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if code := cmd.ProcessState.ExitCode(); err == nil || code != 1 {
		t.Fatalf("exit code %d (%v), want 1", code, err)
	}
	reason, err := os.ReadFile(filepath.Join(out, "output", "failure"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(reason), "train.npy: file is truncated") || strings.Count(string(reason), "\n") != 1 {
		t.Errorf("failure file: %q", reason)
	}
	noTrace(t, stderr.String())
}

// TestLocalPipeChannelSaysWhatToWrite: sagefit local makes no FIFOs for a
// Pipe mode channel, so the folder given is not read: it says so at the
// start and where the stream goes, and the wait ends saying who makes the
// FIFO (it asked whether the channel was in Pipe mode, which it was).
func TestLocalPipeChannelSaysWhatToWrite(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "200", "--no-fit")
	train := filepath.Join(fx, "train")
	cmd := exec.Command(binary, "local", "--model", filepath.Join(fx, "model"), "--channel", "training="+train,
		"--input-mode", "training=Pipe", "--hp", "epochs=1", "--hp", "sagefit_pipe_timeout=1s", "--output", t.TempDir())
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("exit 0 without a stream:\n%s", out)
	}
	for _, want := range []string{`sagefit local: channel "training" is in Pipe mode: ` + train + ` is not read; the job reads each epoch's stream from the FIFO input/data/training_<n>`,
		"the FIFO did not appear (SageMaker makes it for a channel whose TrainingInputMode is Pipe; sagefit local does not)"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// `sagefit local` into a base dir used before: an earlier run's failure
// file does not stand beside this run's success.
func TestLocalRerunClearsAnEarlierFailure(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "200", "--no-fit")
	out := t.TempDir()
	os.MkdirAll(filepath.Join(out, "output"), 0o755)
	os.WriteFile(filepath.Join(out, "output", "failure"), []byte("An earlier run failed.\n"), 0o644)
	cmd := exec.Command(binary, "local", "--model", filepath.Join(fx, "model"), "--channel", "training="+filepath.Join(fx, "train"), "--hp", "epochs=1", "--output", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if _, err := os.Stat(filepath.Join(out, "output", "failure")); err == nil {
		t.Error("the earlier run's failure file is still there after a good run")
	}
}

// A rerun in the same base dir given the links the earlier run laid out
// (input/data/training, input/data/model) as its channels trains from the
// data they lead to (a probe found each link replaced by one to itself,
// after the earlier run's results were removed).
func TestLocalRerunGivenItsOwnChannelLinks(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "200", "--no-fit")
	out := t.TempDir()
	run := func(model, train string) {
		t.Helper()
		cmd := exec.Command(binary, "local", "--model", model, "--channel", "training="+train, "--hp", "epochs=1", "--output", out)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v\n%s", err, b)
		}
	}
	run(filepath.Join(fx, "model"), filepath.Join(fx, "train"))
	run(filepath.Join(out, "input", "data", "model"), filepath.Join(out, "input", "data", "training"))
	for name, want := range map[string]string{"training": filepath.Join(fx, "train"), "model": filepath.Join(fx, "model")} {
		got, err := os.Readlink(filepath.Join(out, "input", "data", name))
		if real, _ := filepath.EvalSymlinks(want); err != nil || got != real {
			t.Errorf("input/data/%s leads to %q (%v), want %q", name, got, err, real)
		}
	}
	history(t, out)
}

// A channel argument that is not a folder is an argument error: said, exit
// 2, and no base dir left behind (one was made with an output folder and
// no failure file in it).
func TestLocalChannelThatIsNoFolder(t *testing.T) {
	file := filepath.Join(t.TempDir(), "train.npy")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing")
	for dir, want := range map[string]string{missing: "its data folder " + missing + " does not exist", file: file + " is not a folder"} {
		out := filepath.Join(t.TempDir(), "base")
		cmd := exec.Command(binary, "local", "--model", t.TempDir(), "--channel", "training="+dir, "--hosts", "2", "--output", out)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if code := cmd.ProcessState.ExitCode(); err == nil || code != 2 {
			t.Errorf("%s: exit code %d (%v), want 2", dir, code, err)
		}
		if !strings.Contains(stderr.String(), "sagefit local: channel training: "+want) {
			t.Errorf("%s: stderr %q", dir, stderr.String())
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%s: the base dir was made (%v)", dir, err)
		}
	}
}

// Flags given twice, or that this run would not use, are refused: the last
// of two --hp or --channel flags won, --model replaced a --channel model=,
// and --docker, --s3-endpoint and --s3-cache went unused without an image
// or an s3:// place.
func TestLocalFlagsNotDropped(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--hp", "epochs=1", "--hp", "epochs=3"}, "epochs is given twice (epochs=1 and epochs=3)"},
		{[]string{"--channel", "training=" + dir, "--channel", "training=/x"}, "training is given twice"},
		{[]string{"--model", dir, "--channel", "model=" + dir}, "both name the model channel"},
		{[]string{"--docker", "podman"}, "--docker needs --image"},
		{[]string{"--s3-endpoint", "http://127.0.0.1:9000"}, "--s3-endpoint applies to s3:// channels, output or checkpoints, and this run has none"},
		{[]string{"--s3-cache", dir}, "--s3-cache holds s3:// channels, and this run has none"},
		// Only s3:// channels are cached (it made the folder, and held nothing there).
		{[]string{"--s3-cache", dir, "--checkpoint", "s3://b/ckpt"}, "--s3-cache holds s3:// channels, and this run has none"},
	} {
		out := filepath.Join(t.TempDir(), "base")
		cmd := exec.Command(binary, append(append([]string{"local"}, c.args...), "--output", out)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if code := cmd.ProcessState.ExitCode(); err == nil || code != 2 {
			t.Errorf("%v: exit code %d (%v), want 2", c.args, code, err)
		}
		if !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: stderr %q, want %q", c.args, stderr.String(), c.want)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%v: the base dir was made (%v)", c.args, err)
		}
	}
}

// TestHelpExitsZero: -h asks for the usage, which every subcommand prints
// and exits 0 for, as sagefit --help does (local and inspect exited 2, as
// for a flag they do not take, which still does).
func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"train", "-h"}, {"local", "-h"}, {"local", "--help"}, {"inspect", "-h"}} {
		cmd := exec.Command(binary, args...)
		out, err := cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() != 0 || !strings.Contains(strings.ToLower(string(out)), "usage") {
			t.Errorf("sagefit %v: %v\n%s", args, err, out)
		}
	}
	for _, args := range [][]string{{"local", "--bogus"}, {"inspect", "--bogus", "x"}} {
		if err := exec.Command(binary, args...).Run(); err == nil || err.(*exec.ExitError).ExitCode() != 2 {
			t.Errorf("sagefit %v: %v, want exit 2", args, err)
		}
	}
}

func TestInspect(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "200", "--no-fit")
	out, err := exec.Command(binary, "inspect", filepath.Join(fx, "model")).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{fmt.Sprintf("sagefit-training-savedmodel v%d", model.ContractVersion), "input ", "(None, 10)", "metrics        loss, accuracy", "gradients      193 floats", "variables      14 (4 model, 10 optimizer)",
		"optimizer      Adam (learning rate 0.001; the learning_rate hyperparameter"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "tables ") || strings.Contains(string(out), "XLA") || strings.Contains(string(out), "random ops") || strings.Contains(string(out), "untrained") {
		t.Errorf("inspect names tables, XLA, random ops or untrained variables the seed model's step does not have:\n%s", out)
	}
	drop := fixture.Make(t, fixture.LegacyKeras+"dropout_masks", "--rows", "8", "--no-fit", "--no-validation")
	if out, err := exec.Command(binary, "inspect", filepath.Join(drop, "model")).Output(); err != nil || !strings.Contains(string(out), "random ops     1 with their state in the op (") {
		t.Errorf("inspect of a tf-keras Dropout export: %v\n%s", err, out)
	}
	head := fixture.Make(t, "untrained_head", "--rows", "8", "--no-fit", "--no-validation")
	if out, err := exec.Command(binary, "inspect", filepath.Join(head, "model")).Output(); err != nil || !strings.Contains(string(out), "untrained      2 trainable variables the loss gives no gradient ([emb/kernel emb/bias])") {
		t.Errorf("inspect of a head without a loss: %v\n%s", err, out)
	}
	// XLA was only in --json.
	xla := fixture.Make(t, "seed_xla", "--rows", "200", "--no-fit")
	if out, err := exec.Command(binary, "inspect", filepath.Join(xla, "model")).Output(); err != nil || !strings.Contains(string(out), "compiled       with XLA") {
		t.Errorf("inspect of an XLA export: %v\n%s", err, out)
	}
	fx = fixture.Make(t, "custom_step_table", "--rows", "200", "--no-fit")
	if out, err = exec.Command(binary, "inspect", filepath.Join(fx, "model")).Output(); err != nil {
		t.Fatal(err)
	}
	if want := "tables         steps_seen, written by the steps"; !strings.Contains(string(out), want) {
		t.Errorf("inspect output lacks %q:\n%s", want, out)
	}
	// --json after the path, as people type it, was a usage error.
	if out, err = exec.Command(binary, "inspect", filepath.Join(fx, "model"), "--json").Output(); err != nil || !json.Valid(out) {
		t.Errorf("inspect DIR --json: %v\n%s", err, out)
	}
	cmd := exec.Command(binary, "inspect", t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil {
		t.Fatal("inspect of an empty folder succeeded")
	}
	if !strings.Contains(stderr.String(), "no saved_model.pb") {
		t.Errorf("inspect error: %s", stderr.String())
	}
}

// TestQuietByDefault: TensorFlow's C++ INFO lines stay out of sagefit's
// output unless the user asks for them with TF_CPP_MIN_LOG_LEVEL, and on a
// host without GPUs neither inspect nor a training run has TensorFlow look
// for one (which logs an error line, cuInit 303, where NVIDIA's driver is
// missing).
func TestQuietByDefault(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "200", "--no-fit")
	run := func(level string, args ...string) string {
		if len(args) == 0 {
			args = []string{"inspect", filepath.Join(fx, "model")}
		}
		cmd := exec.Command(binary, args...)
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "TF_CPP_MIN_LOG_LEVEL=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		if level != "" {
			cmd.Env = append(cmd.Env, "TF_CPP_MIN_LOG_LEVEL="+level)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("inspect: %v\n%s", err, stderr.String())
		}
		return stderr.String()
	}
	if got := run(""); strings.Contains(got, "loader.cc") || strings.Contains(got, "reader.cc") || strings.Contains(got, "cpu_feature_guard") {
		t.Errorf("inspect printed TensorFlow's INFO lines by default:\n%s", got)
	}
	if got := run("0"); !strings.Contains(got, "loader.cc") {
		t.Errorf("with TF_CPP_MIN_LOG_LEVEL=0 inspect printed no loader.cc line (the test would not see them):\n%s", got)
	}
	if _, err := os.Stat("/dev/nvidia0"); err == nil {
		return // a GPU host: TensorFlow looks for its GPUs, and finds them
	}
	train := []string{"local", "--channel", "model=" + filepath.Join(fx, "model"), "--channel", "training=" + filepath.Join(fx, "train"),
		"--hp", "epochs=1", "--output", t.TempDir()}
	for _, args := range [][]string{nil, train} {
		if got := run("", args...); strings.Contains(got, "cuInit") || strings.Contains(got, "E0000") {
			t.Errorf("%v on a host without GPUs printed TensorFlow's error lines:\n%s", args, got)
		}
	}
}

// TestSIGTERMStopsCleanly: SageMaker's stop and spot interruption send
// SIGTERM; the job ends with a clear reason and a non-zero exit, not a trace,
// with one training process and with two on the host (the launcher passes
// the signal on and ends when both have stopped after the same step).
// TestSIGTERMWhileLibrariesLoad: a SIGTERM that comes before Go's handler
// (libtensorflow's initializers take a third of a second, twice that where
// the program runs itself again for TensorFlow's log level) is held from
// the program's first instruction and handled as any stop: exit 1 and the
// reason in the failure file. It killed the process (exit 143, no failure
// file), and sagefit local's launcher said a host wrote none. Python
// starts the program with the signal pending, blocked, as a signal that
// comes at its first instruction is.
func TestSIGTERMWhileLibrariesLoad(t *testing.T) {
	const start = `import os, signal, sys
pid = os.fork()
if pid == 0:
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    os.kill(os.getpid(), signal.SIGTERM)
    os.execv(sys.argv[1], sys.argv[1:])
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
`
	for _, level := range []string{"", "2"} {
		base := seedJob(t, map[string]string{"epochs": "2", "checkpoint": "true"})
		cmd := exec.Command(fixture.Python(t), "-c", start, binary, "train")
		cmd.Env = append(os.Environ(), "SAGEMAKER_BASE_DIR="+base, "TF_CPP_MIN_LOG_LEVEL="+level)
		if level == "" { // unset: the program runs itself again
			cmd.Env = slices.DeleteFunc(cmd.Env, func(kv string) bool { return strings.HasPrefix(kv, "TF_CPP_MIN_LOG_LEVEL=") })
		}
		out, _ := cmd.CombinedOutput()
		reason, _ := os.ReadFile(filepath.Join(base, "output", "failure"))
		if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(reason), "stopped by SIGTERM") {
			t.Errorf("TF_CPP_MIN_LOG_LEVEL %q: exit code %d, failure file %q, want 1 and the stop\n%s", level, code, reason, out)
		}
	}
	cmd := exec.Command(fixture.Python(t), "-c", start, binary, "local", "--model", t.TempDir())
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), "sagefit local: stopped by SIGTERM before it started the job") {
		t.Errorf("sagefit local: exit code %d, want 1 and the stop:\n%s", code, out)
	}
}

func TestSIGTERMStopsCleanly(t *testing.T) {
	for _, procs := range []string{"1", "2"} {
		t.Run(procs+" processes", func(t *testing.T) {
			base := seedJob(t, map[string]string{"epochs": "100000", "sagefit_processes_per_host": procs, "checkpoint": "true"})
			cmd := exec.Command(binary, "train")
			cmd.Env = append(os.Environ(), "SAGEMAKER_BASE_DIR="+base)
			_, stderr := stopAfter(t, cmd, "Epoch 1/")
			if code := cmd.ProcessState.ExitCode(); code == 0 {
				t.Errorf("exit code 0 after SIGTERM")
			}
			reason, _ := os.ReadFile(filepath.Join(base, "output", "failure"))
			// Rank 0 wrote the checkpoint; its reason, which says where, is the job's.
			if !strings.Contains(string(reason), "stopped by SIGTERM") || !strings.Contains(string(reason), "checkpoint written to") {
				t.Errorf("failure file %q", reason)
			}
			stoppedModelIsItsCheckpoint(t, base)
			// The reason is written before the model, which may outlast
			// SageMaker's two minutes, and once.
			said, saved := strings.Index(stderr, "sagefit: Training stopped"), strings.Index(stderr, "sagefit: the model at the stop (the weights a job ending there writes) written to "+filepath.Join(base, "model", "1"))
			if said < 0 || saved < said || strings.Contains(stderr, "could not write the failure file") {
				t.Errorf("want the stop's reason written, then the model:\n%s", stderr)
			}
			if procs == "2" && strings.Count(stderr, "stopped by SIGTERM") < 2 {
				t.Errorf("want both processes to report the stop:\n%s", stderr)
			}
			noTrace(t, stderr)
		})
	}
}

// waitForOutput polls buf until it holds s; false if limit passes first.
func waitForOutput(buf *lockedBuffer, s string, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for !strings.Contains(buf.String(), s) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// stopAfter starts cmd, waits until its stdout holds line (training is under
// way), sends SIGTERM as SageMaker's stop does, and waits for it to exit;
// it fails the test if either wait passes its bound. It returns the
// command's output; cmd.ProcessState holds how it ended.
func stopAfter(t *testing.T, cmd *exec.Cmd, line string) (stdout, stderr string) {
	t.Helper()
	so, se, done := startUntil(t, cmd, line)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not stop within 60 s of SIGTERM:\n%s", cmd.Path, se.String())
	}
	return so.String(), se.String()
}

// startUntil starts cmd and waits until its stdout holds line (training
// is under way); done closes when cmd has exited. It fails the test if the
// line does not come within 90 s.
func startUntil(t *testing.T, cmd *exec.Cmd, line string) (so, se *lockedBuffer, done chan struct{}) {
	t.Helper()
	so, se = &lockedBuffer{}, &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = so, se
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done = make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	if !waitForOutput(so, line, 90*time.Second) {
		cmd.Process.Kill()
		<-done
		t.Fatalf("no %q line within 90 s:\n%s\n%s", line, so.String(), se.String())
	}
	return so, se, done
}

// lockedBuffer is written by exec's copying goroutine while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// trainIn runs the job laid out in base as SageMaker would, and returns
// its stderr; it fails the test where the job fails.
func trainIn(t *testing.T, base string) string {
	t.Helper()
	cmd := exec.Command(binary, "train")
	cmd.Env = append(os.Environ(), "SAGEMAKER_BASE_DIR="+base)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	return stderr.String()
}

// TestPeriodicCheckpoints: every N steps and every epoch, newest K kept, in
// the LocalPath of checkpointconfig.json's place (here the default dir).
func TestPeriodicCheckpoints(t *testing.T) {
	base := seedJob(t, map[string]string{"epochs": "3", "checkpoint": "true", "checkpoint_steps": "3", "checkpoint_keep": "2"})
	stderr := trainIn(t, base)
	if n := strings.Count(stderr, "sagefit: checkpoint "); n < 5 {
		t.Errorf("%d checkpoints written, want every 3 steps and each epoch:\n%s", n, stderr)
	}
	entries, err := os.ReadDir(filepath.Join(base, "checkpoints"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	// 200 rows, batch 32: 7 steps an epoch, so global steps 15 and 18 are
	// epoch 3 steps 1 and 4, the newest two.
	if strings.Join(names, " ") != "ckpt-000003-000000001 ckpt-000003-000000004" {
		t.Errorf("checkpoints kept: %v", names)
	}
}

// A job resumed from a checkpoint of a later epoch than initial_epoch's
// next, where the checkpoint's job had another initial_epoch, says the
// hyperparameter is passed over, and its start line counts the epochs it
// trains (it said "epochs 2 to 3 of 3" and trained epoch 3); the restart
// of a job with the same initial_epoch (a spot job's) says nothing.
func TestInitialEpochBeforeTheCheckpointIsNamed(t *testing.T) {
	base := seedJob(t, map[string]string{"epochs": "3", "checkpoint": "true"})
	run := func(hps string) string {
		t.Helper()
		if err := os.WriteFile(filepath.Join(base, "input", "config", "hyperparameters.json"), []byte(hps), 0o644); err != nil {
			t.Fatal(err)
		}
		return trainIn(t, base)
	}
	const warning = `sagefit: warning: hyperparameter "initial_epoch" is`
	run(`{"epochs": "3", "checkpoint": "true"}`) // checkpoints after epochs 1 and 2: the newest resumes in epoch 3
	stderr := run(`{"epochs": "3", "checkpoint": "true", "initial_epoch": "1"}`)
	for _, want := range []string{warning + " 1, and training goes on from the checkpoint, in epoch 3", "batch 32, epoch 3 of 3\n"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if err := os.RemoveAll(filepath.Join(base, "checkpoints")); err != nil {
		t.Fatal(err)
	}
	run(`{"epochs": "3", "checkpoint": "true", "initial_epoch": "1"}`) // a checkpoint after epoch 2, of initial_epoch 1
	stderr = run(`{"epochs": "4", "checkpoint": "true", "initial_epoch": "1"}`)
	if strings.Contains(stderr, warning) || !strings.Contains(stderr, "batch 32, epochs 3 to 4 of 4\n") {
		t.Errorf("a restart of the same initial_epoch:\n%s", stderr)
	}
}

// TestKilledWorkerIsNamed: one of a host's two training processes is killed
// (as the OOM killer would); its sibling's ring fails, and the job's reason
// names the process that died first, not the sibling's lost connection.
func TestKilledWorkerIsNamed(t *testing.T) {
	base := seedJob(t, map[string]string{"epochs": "100000", "sagefit_processes_per_host": "2"})
	cmd := exec.Command(binary, "train")
	cmd.Env = append(os.Environ(), "SAGEMAKER_BASE_DIR="+base)
	_, se, done := startUntil(t, cmd, "Epoch 1/")
	defer func() {
		cmd.Process.Kill()
		<-done
	}()
	worker := workerPID(t, cmd.Process.Pid, "SAGEFIT_WORKER=1/2")
	if err := syscall.Kill(worker, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		t.Fatalf("the host did not end within 90 s of losing a training process:\n%s", se.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	reason, _ := os.ReadFile(filepath.Join(base, "output", "failure"))
	if !strings.Contains(string(reason), "raining process 1 of 2") || !strings.Contains(string(reason), "killed") {
		t.Errorf("failure file %q does not name the killed process", reason)
	}
	noTrace(t, se.String())
}

// workerPID finds the child of parent whose environment holds marker.
func workerPID(t *testing.T, parent int, marker string) int {
	t.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*/status")
	if err != nil || len(dirs) == 0 {
		t.Skipf("no /proc here: %v", err)
	}
	want := fmt.Sprintf("PPid:\t%d\n", parent)
	for _, status := range dirs {
		b, _ := os.ReadFile(status)
		if !strings.Contains(string(b), want) {
			continue
		}
		dir := filepath.Dir(status)
		env, _ := os.ReadFile(filepath.Join(dir, "environ"))
		if slices.Contains(strings.Split(string(env), "\x00"), marker) {
			pid, _ := strconv.Atoi(filepath.Base(dir))
			return pid
		}
	}
	t.Fatalf("no child of %d with %s", parent, marker)
	return 0
}
