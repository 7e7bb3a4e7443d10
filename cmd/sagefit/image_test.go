package main_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sagefit/sagefit/internal/fixture"
	"github.com/sagefit/sagefit/internal/s3sync/s3test"
)

// cpuImage is the CPU training image `make test-images` built (named in
// SAGEFIT_IMAGE_CPU) and the docker client (DOCKER); t skips without them.
func cpuImage(t *testing.T) (docker, image string) {
	t.Helper()
	image = os.Getenv("SAGEFIT_IMAGE_CPU")
	if image == "" {
		t.Skip("no built image: `make test-images` builds the images and names the CPU one in SAGEFIT_IMAGE_CPU")
	}
	docker = os.Getenv("DOCKER")
	if docker == "" {
		docker = "docker"
	}
	return docker, image
}

// leftovers lists the containers and networks sagefit local made (label
// sagefit) that are still there.
func leftovers(t *testing.T, docker string) string {
	t.Helper()
	var out []string
	for _, args := range [][]string{
		{"ps", "-aq", "--filter", "label=sagefit"},
		{"network", "ls", "-q", "--filter", "label=sagefit"},
	} {
		b, err := exec.Command(docker, args...).Output()
		if err != nil {
			t.Fatalf("%s %v: %v", docker, args, err)
		}
		out = append(out, strings.Fields(string(b))...)
	}
	return strings.Join(out, " ")
}

// TestLocalImage: `sagefit local --image` runs the same job as `sagefit
// local`, in the CPU image, on 1 and 2 hosts: the same history, the model
// where `sagefit local` puts it, /opt/ml laid out per host, nothing left
// behind (containers, the job's network).
func TestLocalImage(t *testing.T) {
	docker, image := cpuImage(t)
	fx := fixture.Make(t, "seed", "--rows", "300", "--no-fit")
	for _, hosts := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d hosts", hosts), func(t *testing.T) {
			args := []string{"local", "--hosts", fmt.Sprint(hosts), "--model", filepath.Join(fx, "model"),
				"--channel", "training=" + filepath.Join(fx, "train"), "--channel", "validation=" + filepath.Join(fx, "validation"),
				"--hp", "epochs=2", "--hp", "batch_size=16"}
			inImage, plain := t.TempDir(), t.TempDir()
			cmd := exec.Command(binary, append(args, "--output", inImage, "--image", image, "--docker", docker)...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("sagefit local --image: %v\n%s", err, stderr.String())
			}
			if out, err := exec.Command(binary, append(args, "--output", plain)...).CombinedOutput(); err != nil {
				t.Fatalf("sagefit local: %v\n%s", err, out)
			}
			if hosts > 1 {
				inImage, plain = filepath.Join(inImage, "algo-1"), filepath.Join(plain, "algo-1")
				if !strings.Contains(stdout.String(), "[algo-2] Epoch 2/2") {
					t.Errorf("no epoch lines from algo-2:\n%s", stdout.String())
				}
				cfg, err := os.ReadFile(filepath.Join(filepath.Dir(inImage), "algo-2", "input", "config", "resourceconfig.json"))
				if err != nil || !strings.Contains(string(cfg), `"current_host": "algo-2"`) {
					t.Errorf("algo-2's resourceconfig.json: %v %s", err, cfg)
				}
			}
			for _, f := range []string{"model/1/saved_model.pb", "output/data/history.json", "input/config/inputdataconfig.json"} {
				if _, err := os.Stat(filepath.Join(inImage, f)); err != nil {
					t.Errorf("missing %s: %v", f, err)
				}
			}
			got, want := history(t, inImage), history(t, plain)
			for k, w := range want {
				for e := range w {
					if e >= len(got[k]) || abs(got[k][e]-w[e]) > 1e-5 {
						t.Errorf("history %s: in the image %v, sagefit local %v", k, got[k], w)
						break
					}
				}
			}
			if l := leftovers(t, docker); l != "" {
				t.Errorf("left behind: %s", l)
			}
		})
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// TestLocalImageS3: with --image, s3:// channels, output and checkpoints
// work as they do without: downloaded on this machine before the job,
// mounted into the containers, model.tar.gz and output.tar.gz uploaded after
// it, checkpoints synced from the host base dir's checkpoints/ (the
// container's /opt/ml/checkpoints).
func TestLocalImageS3(t *testing.T) {
	docker, image := cpuImage(t)
	srv := s3test.Start(t)
	fx := fixture.Make(t, "seed", "--rows", "200", "--no-fit")
	srv.CreateBucket(t, "data")
	srv.CreateBucket(t, "results")
	putDir(t, srv, filepath.Join(fx, "model"), "data", "seed/model")
	putDir(t, srv, filepath.Join(fx, "train"), "data", "seed/train")
	stdout, stderr, code := runLocalS3(t, srv.Env(), "--image", image, "--docker", docker,
		"--model", "s3://data/seed/model", "--channel", "training=s3://data/seed/train",
		"--hp", "epochs=2", "--output", "s3://results/runs",
		"--checkpoint", "s3://results/ckpt", "--job-name", "image-job-1")
	if code != 0 {
		t.Fatalf("exit code %d\n%s", code, stderr)
	}
	if !strings.Contains(stdout, "Epoch 2/2 - 7/7 - ") {
		t.Errorf("stdout lacks the epoch lines:\n%s", stdout)
	}
	keys := srv.Keys(t, "results", "runs/")
	if want := []string{"runs/image-job-1/output/model.tar.gz", "runs/image-job-1/output/output.tar.gz"}; !slices.Equal(keys, want) {
		t.Fatalf("keys %v, want %v\n%s", keys, want, stderr)
	}
	if model := untarNames(t, srv.Get(t, "results", keys[0])); !slices.Contains(model, "1/saved_model.pb") {
		t.Errorf("model.tar.gz lacks 1/saved_model.pb: %v", model)
	}
	if ck := srv.Keys(t, "results", "ckpt/"); len(ck) == 0 {
		t.Errorf("no checkpoints uploaded to s3://results/ckpt\n%s", stderr)
	}
	if l := leftovers(t, docker); l != "" {
		t.Errorf("left behind: %s", l)
	}
}

// TestLocalImageExitStatus: a job that fails in the image ends `sagefit
// local --image` with its exit status and its failure file; SIGTERM to
// `sagefit local --image` reaches sagefit in every container, which stops
// after the same step, writes a checkpoint and fails with the stop's reason.
func TestLocalImageExitStatus(t *testing.T) {
	docker, image := cpuImage(t)
	fx := fixture.Make(t, "seed", "--rows", "2000", "--no-fit", "--no-validation")
	t.Run("bad data", func(t *testing.T) {
		data := t.TempDir()
		b, _ := os.ReadFile(filepath.Join(fx, "train", "train.npy"))
		os.WriteFile(filepath.Join(data, "train.npy"), b[:len(b)/2], 0o644)
		b, _ = os.ReadFile(filepath.Join(fx, "train", "labels.npy"))
		os.WriteFile(filepath.Join(data, "labels.npy"), b, 0o644)
		out := t.TempDir()
		cmd := exec.Command(binary, "local", "--image", image, "--docker", docker, "--model", filepath.Join(fx, "model"),
			"--channel", "training="+data, "--hp", "epochs=1", "--output", out)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if code := cmd.ProcessState.ExitCode(); err == nil || code != 1 {
			t.Fatalf("exit code %d (%v), want 1\n%s", code, err, stderr.String())
		}
		reason, _ := os.ReadFile(filepath.Join(out, "output", "failure"))
		if !strings.Contains(string(reason), "train.npy: file is truncated") {
			t.Errorf("failure file %q", reason)
		}
		noTrace(t, stderr.String())
	})
	for _, hosts := range []int{1, 2} {
		t.Run(fmt.Sprintf("SIGTERM, %d hosts", hosts), func(t *testing.T) {
			out := t.TempDir()
			cmd := exec.Command(binary, "local", "--image", image, "--docker", docker, "--hosts", fmt.Sprint(hosts),
				"--model", filepath.Join(fx, "model"), "--channel", "training="+filepath.Join(fx, "train"),
				"--hp", "epochs=100000", "--output", out)
			var stdout, stderr lockedBuffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			if !waitForOutput(&stdout, "Epoch 2/", 120*time.Second) {
				cmd.Process.Kill()
				t.Fatalf("no second epoch:\n%s\n%s", stdout.String(), stderr.String())
			}
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(90 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("still running 90 s after SIGTERM:\n%s", stderr.String())
			}
			if code := cmd.ProcessState.ExitCode(); code == 0 {
				t.Errorf("exit code 0 after SIGTERM")
			}
			rank0 := out
			if hosts > 1 {
				rank0 = filepath.Join(out, "algo-1")
			}
			reason, _ := os.ReadFile(filepath.Join(rank0, "output", "failure"))
			// Every container gets the SIGTERM; rank 0 may learn of another
			// host's first, through the step's stop flag, and say so.
			stopped := strings.Contains(string(reason), "SIGTERM") || strings.Contains(string(reason), "another host of the job was stopped")
			if !stopped || !strings.Contains(string(reason), "checkpoint written to /opt/ml/checkpoints") {
				t.Errorf("failure file %q does not name the stop and the checkpoint", reason)
			}
			if ck, _ := filepath.Glob(filepath.Join(rank0, "checkpoints", "*")); len(ck) == 0 {
				t.Errorf("no checkpoint in %s", filepath.Join(rank0, "checkpoints"))
			}
			noTrace(t, stderr.String())
			if l := leftovers(t, docker); l != "" {
				t.Errorf("left behind: %s", l)
			}
		})
	}
}

var hostnameRE = regexp.MustCompile(`--hostname \S+`)

// TestLocalImageDockerRuns: what `sagefit local --image` asks of docker,
// with a stand-in client that records its arguments: no pull, one
// container per host on the job's own network with host names algo-1..N,
// each host's base dir as /opt/ml, channels mounted read-only, --gpus
// passed through, `IMAGE train`, the network removed at the end; an image
// the engine lacks ends it before anything is made. Needs no Docker.
func TestLocalImageDockerRuns(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "200", "--no-fit")
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	fake := filepath.Join(dir, "docker")
	// One line per call; `image inspect` fails for an image named missing:*.
	script := `#!/bin/sh
printf '%s\n' "$*" >> "` + log + `"
case "$1 $2" in
  "image inspect") case "$*" in
      *missing:*) echo "Error: No such image: missing:1" >&2; exit 1 ;;
      *gone:*) echo "Error: gone:1: image not known" >&2; exit 1 ;;
      *down:*) echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2; exit 1 ;;
    esac; echo sha256:0 ;;
esac
exit 0
`
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// A relative --output is mounted by its absolute path (docker run -v
	// would take a relative one for a volume's name).
	out := t.TempDir()
	cmd := exec.Command(binary, "local", "--image", "sagefit:cpu", "--docker", fake, "--hosts", "2", "--gpus", "all",
		"--model", filepath.Join(fx, "model"), "--channel", "training="+filepath.Join(fx, "train"), "--output", "job")
	cmd.Dir = out
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	raw, _ := os.ReadFile(log)
	calls := strings.Split(strings.TrimSpace(string(raw)), "\n")
	var runs []string
	network := ""
	for _, c := range calls {
		if m := regexp.MustCompile(`^network create .* (sagefit-[0-9a-f]+)$`).FindStringSubmatch(c); m != nil {
			network = m[1]
		}
		if strings.HasPrefix(c, "run ") {
			runs = append(runs, c)
		}
	}
	if network == "" || len(runs) != 2 || calls[len(calls)-1] != "network rm "+network {
		t.Fatalf("docker calls:\n%s", raw)
	}
	// The stand-in clients write their lines in whatever order they run.
	slices.SortFunc(runs, func(a, b string) int {
		return strings.Compare(hostnameRE.FindString(a), hostnameRE.FindString(b))
	})
	for i, r := range runs {
		host := fmt.Sprintf("algo-%d", i+1)
		for _, want := range []string{
			"--pull=never", "--network " + network, "--hostname " + host, "--network-alias " + host, "--gpus all",
			"-v " + filepath.Join(out, "job", host) + ":/opt/ml ",
			"-v " + filepath.Join(fx, "model") + ":/opt/ml/input/data/model:ro",
			"-v " + filepath.Join(fx, "train") + ":/opt/ml/input/data/training:ro",
		} {
			if !strings.Contains(r, want) {
				t.Errorf("docker %s\nlacks %q", r, want)
			}
		}
		if !strings.HasSuffix(r, " sagefit:cpu train") {
			t.Errorf("docker %s\ndoes not end with IMAGE train", r)
		}
		// The channels are folders to mount on, not links to this machine's.
		if fi, err := os.Lstat(filepath.Join(out, "job", host, "input", "data", "training")); err != nil || !fi.IsDir() {
			t.Errorf("%s's input/data/training is not a folder: %v", host, err)
		}
	}

	os.Remove(log)
	cmd = exec.Command(binary, "local", "--image", "missing:1", "--docker", fake,
		"--model", filepath.Join(fx, "model"), "--channel", "training="+filepath.Join(fx, "train"), "--output", t.TempDir())
	b, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); err == nil || code != 1 || !strings.Contains(string(b), "never pulls") || !strings.Contains(string(b), "docker/build-images.sh") {
		t.Errorf("missing image: exit %d (%v): %s", code, err, b)
	}
	// Podman's words for an image it lacks are another's.
	cmd = exec.Command(binary, "local", "--image", "gone:1", "--docker", fake,
		"--model", filepath.Join(fx, "model"), "--channel", "training="+filepath.Join(fx, "train"), "--output", t.TempDir())
	if b, _ := cmd.CombinedOutput(); !strings.Contains(string(b), "not on this machine's Docker engine") {
		t.Errorf("podman's missing image: %s", b)
	}
	// An engine that does not answer is not an image to build.
	cmd = exec.Command(binary, "local", "--image", "down:1", "--docker", fake,
		"--model", filepath.Join(fx, "model"), "--channel", "training="+filepath.Join(fx, "train"), "--output", t.TempDir())
	b, err = cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); err == nil || code != 1 || !strings.Contains(string(b), "is dockerd running") || strings.Contains(string(b), "not on this machine") {
		t.Errorf("engine down: exit %d (%v): %s", code, err, b)
	}
	raw, _ = os.ReadFile(log)
	if calls := strings.Split(strings.TrimSpace(string(raw)), "\n"); slices.ContainsFunc(calls, func(c string) bool { return !strings.HasPrefix(c, "image inspect") }) {
		t.Errorf("docker called for more than the image after it was found missing:\n%s", raw)
	}

	cmd = exec.Command(binary, "local", "--gpus", "all", "--model", filepath.Join(fx, "model"), "--channel", "training="+filepath.Join(fx, "train"))
	if b, err := cmd.CombinedOutput(); cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(b), "--gpus needs --image") {
		t.Errorf("--gpus without --image: %v %s", err, b)
	}
}
