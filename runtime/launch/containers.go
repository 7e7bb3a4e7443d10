package launch

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	osexec "os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// ContainerBase is where SageMaker mounts a job's files in a training
// container.
const ContainerBase = "/opt/ml"

// Image is a job run in a training image: `sagefit local --image`.
type Image struct {
	Docker string // the docker client; default "docker"
	Image  string // the image, which must be on the engine already: nothing is pulled
	// GPUs is passed to `docker run --gpus` ("all", a count, "device=0,1");
	// empty: no GPUs.
	GPUs string
	// Env is added to each container's environment (NAME=value), after
	// TRAINING_JOB_NAME, which is passed on when set here.
	Env []string
}

// Containers runs the job of spec in the training image, one container per
// host as SageMaker does: hosts algo-1..algo-n on a user network of the
// job's own, where they find each other by name on the ring's default
// port, each with its own base dir (base itself for one host, base/algo-i
// for several) mounted as /opt/ml and laid out as SageMaker lays it out:
// input/config, each channel's folder mounted read-only at
// input/data/<channel>, model, output, checkpoints. Each container runs
// `IMAGE train` (the image's ENTRYPOINT), as SageMaker does. SIGTERM and
// Ctrl-C go to every host's sagefit. It returns the job's exit status: the
// container's for one host; for several, 0 when every host succeeded,
// else 1 (each failure reported).
func Containers(n int, base string, spec sagemaker.LocalSpec, img Image, stdout, stderr io.Writer) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "sagefit local: "+format+"\n", args...)
		return 1
	}
	docker := img.Docker
	if docker == "" {
		docker = "docker"
	}
	// docker run -v takes a relative path for a volume's name.
	base, err := filepath.Abs(base)
	if err != nil {
		return fail("%v", err)
	}
	if out, err := osexec.Command(docker, "image", "inspect", "--format", "{{.Id}}", img.Image).CombinedOutput(); err != nil {
		// Docker says "No such image" for an image it lacks, Podman "image
		// not known"; anything else (no engine running, no permission) is
		// not about the image.
		if said := strings.ToLower(string(out)); !strings.Contains(said, "no such image") && !strings.Contains(said, "image not known") {
			return fail("image %s: could not ask the Docker engine for it (%s); is dockerd running, and may this user use it?",
				img.Image, firstLine(out, err))
		}
		return fail("image %s: not on this machine's Docker engine (%s); build it (docker/build-images.sh, docker/README.md) or pull it first: sagefit never pulls",
			img.Image, firstLine(out, err))
	}
	hosts := make([]string, n)
	bases := make([]string, n)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("algo-%d", i+1)
		bases[i] = base
		if n > 1 {
			bases[i] = filepath.Join(base, hosts[i])
		}
	}
	job := "sagefit-" + randomID()
	for i, h := range hosts {
		s := spec
		s.Hosts, s.CurrentHost = hosts, h
		if err := layOut(bases[i], s); err != nil {
			return fail("%v", err)
		}
	}
	if out, err := osexec.Command(docker, "network", "create", "--label", "sagefit="+job, job).CombinedOutput(); err != nil {
		return fail("create the job's network %s: %s", job, firstLine(out, err))
	}
	defer func() {
		if out, err := osexec.Command(docker, "network", "rm", job).CombinedOutput(); err != nil {
			fmt.Fprintf(stderr, "sagefit local: remove the network %s: %s\n", job, firstLine(out, err))
		}
	}()

	var out sync.Mutex // one line at a time from all hosts
	var cmds []*osexec.Cmd
	outs := make([][]*prefixWriter, n) // each host's stdout and stderr, with several hosts
	for i, h := range hosts {
		cmd := osexec.Command(docker, runArgs(job, h, bases[i], spec, img)...)
		// The signals are ours to pass on (below), once; a Ctrl-C on the
		// terminal must not reach the clients as well.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
		if n == 1 {
			cmd.Stdout, cmd.Stderr = stdout, stderr
		} else {
			outs[i] = []*prefixWriter{{w: stdout, prefix: h, mu: &out}, {w: stderr, prefix: h, mu: &out}}
			cmd.Stdout, cmd.Stderr = outs[i][0], outs[i][1]
		}
		if err := cmd.Start(); err != nil {
			for _, c := range cmds {
				c.Process.Signal(syscall.SIGTERM)
				c.Wait()
			}
			return fail("start %s: %v", h, err)
		}
		cmds = append(cmds, cmd)
	}
	if n > 1 {
		fmt.Fprintf(stderr, "sagefit local: %d hosts in image %s on network %s, base dirs under %s\n", n, img.Image, job, base)
	} else {
		fmt.Fprintf(stderr, "sagefit local: image %s, SageMaker base dir %s mounted as %s\n", img.Image, base, ContainerBase)
	}
	stop := forwardStops(cmds)
	defer stop()
	// Every host's output first, then the reports.
	errs := make([]error, len(cmds))
	for i, cmd := range cmds {
		errs[i] = cmd.Wait()
		for _, w := range outs[i] {
			w.flush()
		}
	}
	code := 0
	for i, cmd := range cmds {
		err := errs[i]
		c := cmd.ProcessState.ExitCode()
		if n == 1 {
			if err != nil && c < 0 {
				return fail("%s: %v", hosts[i], err)
			}
			return c
		}
		if err != nil {
			reason, _ := os.ReadFile(sagemaker.Paths{Base: bases[i]}.FailureFile())
			fmt.Fprintf(stderr, "sagefit local: %s failed (%v): %s\n", hosts[i], err, strings.TrimSpace(string(reason)))
			code = 1
		}
	}
	if code == 0 {
		fmt.Fprintf(stderr, "sagefit local: model written by algo-1 to %s\n", sagemaker.Paths{Base: bases[0]}.ModelDir())
	}
	return code
}

// runArgs is the `docker run` of one host.
func runArgs(job, host, hostBase string, spec sagemaker.LocalSpec, img Image) []string {
	args := []string{"run", "--rm", "--pull=never", "--name", job + "-" + host,
		"--hostname", host, "--network", job, "--network-alias", host,
		"--label", "sagefit=" + job,
		"-v", hostBase + ":" + ContainerBase}
	for _, name := range slices.Sorted(maps.Keys(spec.Channels)) {
		args = append(args, "-v", spec.Channels[name]+":"+ContainerBase+"/input/data/"+name+":ro")
	}
	if img.GPUs != "" {
		args = append(args, "--gpus", img.GPUs)
	}
	if uid := os.Getuid(); uid != 0 {
		// The job's files on this machine belong to whoever ran it.
		args = append(args, "--user", strconv.Itoa(uid)+":"+strconv.Itoa(os.Getgid()))
	}
	if name := os.Getenv("TRAINING_JOB_NAME"); name != "" {
		args = append(args, "-e", "TRAINING_JOB_NAME="+name)
	}
	for _, kv := range img.Env {
		args = append(args, "-e", kv)
	}
	return append(args, img.Image, "train")
}

// layOut writes a host's base dir as WriteLocal does, with the channels as
// empty folders, where their data will be mounted (a link to a folder of
// this machine would point nowhere inside the container), and a
// checkpointconfig.json naming the checkpoints' place in the container.
func layOut(hostBase string, spec sagemaker.LocalSpec) error {
	if err := sagemaker.WriteLocal(hostBase, spec); err != nil {
		return err
	}
	p := sagemaker.Paths{Base: hostBase}
	for name := range spec.Channels {
		link := p.Channel(name)
		if err := os.Remove(link); err != nil {
			return fmt.Errorf("channel %s: %w", name, err)
		}
		if err := os.Mkdir(link, 0o755); err != nil {
			return fmt.Errorf("channel %s: %w", name, err)
		}
	}
	cfg := filepath.Join(p.ConfigDir(), sagemaker.CheckpointConfigFile)
	raw, err := os.ReadFile(cfg)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var cc map[string]any
	if err := json.Unmarshal(raw, &cc); err != nil {
		return fmt.Errorf("%s: %w", cfg, err)
	}
	if lp, ok := cc["LocalPath"].(string); ok {
		if rel, err := filepath.Rel(hostBase, lp); err == nil && !strings.HasPrefix(rel, "..") {
			cc["LocalPath"] = filepath.ToSlash(filepath.Join(ContainerBase, rel))
		} else {
			return fmt.Errorf("checkpoints in %s, outside the job's base dir %s, which is all the container sees", lp, hostBase)
		}
	}
	b, err := json.MarshalIndent(cc, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(cfg, append(b, '\n'), 0o644)
}

// forwardStops passes SIGTERM and Ctrl-C on to every process, as
// SageMaker's stop reaches every host; `docker run` hands it to the
// container's sagefit. The returned func stops forwarding.
func forwardStops(cmds []*osexec.Cmd) func() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-sigs:
				for _, cmd := range cmds {
					cmd.Process.Signal(syscall.SIGTERM)
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
	}
}

// prefixWriter writes a host's output to w a whole line at a time, each
// marked with the host's name, one writer at a time (mu).
type prefixWriter struct {
	w      io.Writer
	prefix string
	mu     *sync.Mutex
	buf    []byte // an unfinished line
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		fmt.Fprintf(p.w, "[%s] %s\n", p.prefix, p.buf[:i])
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}

// flush writes an unfinished last line.
func (p *prefixWriter) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.buf) > 0 {
		fmt.Fprintf(p.w, "[%s] %s\n", p.prefix, p.buf)
		p.buf = nil
	}
}

// randomID names one run's network and containers.
func randomID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// firstLine is what a failed docker command said, in one line.
func firstLine(out []byte, err error) string {
	s := strings.TrimSpace(string(out))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if s == "" {
		return err.Error()
	}
	return s
}
