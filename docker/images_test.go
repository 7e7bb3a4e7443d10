package docker

// Tests of the built images (make test-images builds them and names them in
// SAGEFIT_IMAGE_CPU and SAGEFIT_IMAGE_GPU; DOCKER names the client). Without
// those variables they skip: `make test` needs no Docker engine.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sagefit/sagefit/internal/fixture"
	"github.com/sagefit/sagefit/internal/s3sync/s3test"
)

// builtImage returns the docker client and the image of kind ("cpu" or
// "gpu") that make test-images built, or skips t.
func builtImage(t *testing.T, kind string) (docker, image string) {
	t.Helper()
	v := "SAGEFIT_IMAGE_" + strings.ToUpper(kind)
	image = os.Getenv(v)
	if image == "" {
		t.Skipf("no built %s image: `make test-images` builds the images and names them in %s", kind, v)
	}
	docker = os.Getenv("DOCKER")
	if docker == "" {
		docker = "docker"
	}
	if out, err := exec.Command(docker, "image", "inspect", "--format", "{{.Id}}", image).CombinedOutput(); err != nil {
		t.Fatalf("%s=%s, but %s image inspect says: %v %s", v, image, docker, err, out)
	}
	return docker, image
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// userArgs runs a container as the user running the test, so that the
// files it writes into a mounted folder can be removed by the test.
func userArgs() []string {
	if uid := os.Getuid(); uid != 0 {
		return []string{"--user", fmt.Sprintf("%d:%d", uid, os.Getgid())}
	}
	return nil
}

// TestBuiltImagesTrain: `docker run IMAGE train` (what SageMaker runs),
// with no network and /opt/ml holding what SageMaker writes for a one-host
// job, trains and writes the model, history.json and the epoch lines the
// README's metric_definitions read. The GPU image runs on the CPU here.
func TestBuiltImagesTrain(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "200", "--no-fit")
	for _, kind := range []string{"cpu", "gpu"} {
		t.Run(kind, func(t *testing.T) {
			docker, image := builtImage(t, kind)
			base := sageMakerJob(t, fx, "ml.m5.large")
			args := append([]string{"run", "--rm", "--pull=never", "--network", "none", "-v", base + ":/opt/ml"}, userArgs()...)
			cmd := exec.Command(docker, append(args, image, "train")...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				failure, _ := os.ReadFile(filepath.Join(base, "output", "failure"))
				t.Fatalf("docker run %s train: %v\nfailure file: %s\n%s", image, err, failure, stderr.String())
			}
			for _, f := range []string{"model/1/saved_model.pb", "model/1/variables/variables.index", "output/data/history.json", "output/data/loss.png"} {
				if _, err := os.Stat(filepath.Join(base, f)); err != nil {
					t.Errorf("missing %s: %v", f, err)
				}
			}
			for name, re := range readmeMetrics(t) {
				if got := len(re.FindAllString(stdout.String(), -1)); got != 2 {
					t.Errorf("README metric %s matched %d times in stdout, want 2:\n%s", name, got, stdout.String())
				}
			}
		})
	}
}

// extraCAs reads the extra CA certificates docker/build-images.sh hands to
// the build stages (Debian's local CA folder), as PEM blocks.
func extraCAs(t *testing.T) (dir string, certs []*pem.Block) {
	t.Helper()
	dir = os.Getenv("SAGEFIT_EXTRA_CA_DIR")
	if dir == "" {
		dir = "/usr/local/share/ca-certificates"
	}
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".crt") {
			return nil
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for {
			var b *pem.Block
			if b, raw = pem.Decode(raw); b == nil {
				break
			}
			if b.Type == "CERTIFICATE" {
				certs = append(certs, b)
			}
		}
		return nil
	})
	return dir, certs
}

// scan reads r once and reports which needles occur in it.
func scan(r io.Reader, needles [][]byte) (map[int]bool, error) {
	found := map[int]bool{}
	longest := 0
	for _, n := range needles {
		longest = max(longest, len(n))
	}
	br := bufio.NewReaderSize(r, 1<<20)
	buf := make([]byte, 0, 2<<20)
	chunk := make([]byte, 1<<20)
	for {
		n, err := br.Read(chunk)
		buf = append(buf, chunk[:n]...)
		for i, needle := range needles {
			if !found[i] && bytes.Contains(buf, needle) {
				found[i] = true
			}
		}
		if len(buf) > longest {
			buf = append(buf[:0], buf[len(buf)-longest:]...)
		}
		if err == io.EOF {
			return found, nil
		}
		if err != nil {
			return found, err
		}
	}
}

// TestImagesCarryNoExtraCA: the machine's extra CA certificates, which the
// build stages trust to download through a TLS-intercepting proxy, are in
// no layer and no metadata of the final images: every byte `docker save`
// gives is searched for each certificate, in PEM (a line of its base64)
// and in DER. A string of libtensorflow shows the search reads the layers.
func TestImagesCarryNoExtraCA(t *testing.T) {
	dir, certs := extraCAs(t)
	for _, kind := range []string{"cpu", "gpu"} {
		t.Run(kind, func(t *testing.T) {
			docker, image := builtImage(t, kind)
			if len(certs) == 0 {
				t.Skipf("no extra CA certificates in %s: none was handed to the build", dir)
			}
			control := []byte("TF_LoadSessionFromSavedModel")
			needles := [][]byte{control}
			what := []string{"control"}
			for i, c := range certs {
				lines := strings.Split(strings.TrimSpace(string(pem.EncodeToMemory(c))), "\n")
				body := lines[1 : len(lines)-1]
				needles = append(needles, []byte(body[len(body)/2]), c.Bytes[:min(len(c.Bytes), 200)])
				what = append(what, fmt.Sprintf("certificate %d (PEM)", i+1), fmt.Sprintf("certificate %d (DER)", i+1))
			}
			cmd := exec.Command(docker, "save", image)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			found, serr := scan(out, needles)
			if err := cmd.Wait(); err != nil || serr != nil {
				t.Fatalf("docker save %s: %v %v %s", image, err, serr, stderr.String())
			}
			if !found[0] {
				t.Fatalf("docker save %s holds no %q: the search does not read the layers", image, control)
			}
			for i := 1; i < len(needles); i++ {
				if found[i] {
					t.Errorf("image %s holds %s from %s", image, what[i], dir)
				}
			}
		})
	}
}

// TestCUDARequirementsMatchTheWheel: docker/cuda-requirements.txt pins
// exactly the NVIDIA wheels the TensorFlow wheel's "and-cuda" extra asks
// for, each at the lowest version the extra allows (the release TensorFlow
// was built with), each with a hash; Dockerfile.gpu installs it with
// --require-hashes and --no-deps. Needs no Docker.
func TestCUDARequirementsMatchTheWheel(t *testing.T) {
	want := andCudaRequirements(t)
	pins := cudaPins(t)
	for pkg, lower := range want {
		got, ok := pins[pkg]
		if !ok {
			t.Errorf("tensorflow[and-cuda] asks for %s>=%s, which docker/cuda-requirements.txt lacks", pkg, lower)
			continue
		}
		if got != lower {
			t.Errorf("docker/cuda-requirements.txt pins %s==%s; the wheel was built with %s (its lowest allowed version)", pkg, got, lower)
		}
	}
	for pkg := range pins {
		if _, ok := want[pkg]; !ok {
			t.Errorf("docker/cuda-requirements.txt pins %s, which tensorflow[and-cuda] does not ask for", pkg)
		}
	}
	gpu := loadImage(t, "Dockerfile.gpu")
	var installs bool
	for _, s := range gpu.df.Stages {
		for _, in := range s.Instructions {
			if in.Cmd == "RUN" && strings.Contains(in.Rest, "cuda-requirements.txt") {
				installs = strings.Contains(in.Rest, "--require-hashes") && strings.Contains(in.Rest, "--no-deps")
			}
		}
	}
	if !installs {
		t.Error("Dockerfile.gpu does not install cuda-requirements.txt with --require-hashes --no-deps")
	}
}

// andCudaRequirements reads the TensorFlow wheel's METADATA (of the set-up's
// virtualenv): the "and-cuda" extra's packages and their lowest versions.
func andCudaRequirements(t *testing.T) map[string]string {
	t.Helper()
	so, err := filepath.EvalSymlinks(filepath.Join("..", "lib", "libtensorflow_cc.so.2"))
	if err != nil {
		t.Fatalf("no lib/libtensorflow_cc.so.2 (run `make setup`): %v", err)
	}
	dist, _ := filepath.Glob(filepath.Join(filepath.Dir(filepath.Dir(so)), "tensorflow-*.dist-info", "METADATA"))
	if len(dist) != 1 {
		t.Fatalf("no single tensorflow METADATA beside %s: %v", so, dist)
	}
	raw, err := os.ReadFile(dist[0])
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^Requires-Dist: ([A-Za-z0-9_.-]+)([^;\n]*); extra == "and-cuda"`)
	out := map[string]string{}
	for _, m := range re.FindAllStringSubmatch(string(raw), -1) {
		lower := regexp.MustCompile(`>=\s*([0-9][0-9.]*)`).FindStringSubmatch(m[2])
		if lower == nil {
			t.Fatalf("%s: %s%s has no lower bound", dist[0], m[1], m[2])
		}
		out[strings.ToLower(m[1])] = lower[1]
	}
	if len(out) == 0 {
		t.Fatalf("%s lists no and-cuda requirements", dist[0])
	}
	return out
}

// cudaPins reads docker/cuda-requirements.txt: package -> pinned version;
// every pin must carry a sha256.
func cudaPins(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile("cuda-requirements.txt")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(raw), "\\\n", " ")
	out := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := regexp.MustCompile(`^([A-Za-z0-9_.-]+)==(\S+)\s+(.*)$`).FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("cuda-requirements.txt: %q is not NAME==VERSION --hash=...", line)
		}
		if !regexp.MustCompile(`--hash=sha256:[0-9a-f]{64}`).MatchString(m[3]) {
			t.Errorf("cuda-requirements.txt: %s has no sha256", m[1])
		}
		out[strings.ToLower(m[1])] = m[2]
	}
	return out
}

// notInImage are the libraries TensorFlow may load that the GPU image does
// not carry: the host driver's (mounted by the NVIDIA container runtime),
// TensorRT and NVSHMEM (not in tensorflow[and-cuda], optional), ROCm's,
// and stubs that load no library of their own.
var notInImage = regexp.MustCompile(`^(CudaDriver|Nvml|NvInfer|NvInferPlugin|Nvshmem|Hip[A-Za-z]*|Miopen|Roc[a-z]+|stub:(cuda|nvml|nvshmem|ptx_compiler|gpu_collectives))$`)

// libPackage is the NVIDIA wheel that ships each library TensorFlow loads.
var libPackage = map[string]string{
	"cudart": "nvidia-cuda-runtime-cu12", "cublas": "nvidia-cublas-cu12", "cublasLt": "nvidia-cublas-cu12",
	"cufft": "nvidia-cufft-cu12", "cusolver": "nvidia-cusolver-cu12", "cusparse": "nvidia-cusparse-cu12",
	"cudnn": "nvidia-cudnn-cu12", "nccl": "nvidia-nccl-cu12", "cupti": "nvidia-cuda-cupti-cu12",
	"nvJitLink": "nvidia-nvjitlink-cu12",
}

// loaders reads, from the symbols of the set-up's TensorFlow libraries (the
// same wheel the image's come from: checked below), the libraries they
// load: tsl's DsoLoader::Get<Name>DsoHandle and the <name>_stub.cc that
// dlopen one on first use.
func loaders(t *testing.T) []string {
	t.Helper()
	dso := regexp.MustCompile(`^_ZN3tsl8internal9DsoLoader[0-9]+Get([A-Za-z]+)DsoHandle`)
	stub := regexp.MustCompile(`^_GLOBAL__sub_I_([A-Za-z0-9_]+)_stub\.cc$`)
	seen := map[string]bool{}
	for _, so := range []string{"libtensorflow_cc.so.2", "libtensorflow_framework.so.2"} {
		raw, err := os.ReadFile(filepath.Join("..", "lib", so))
		if err != nil {
			t.Fatal(err)
		}
		// The names sit in the string and symbol tables, NUL-terminated.
		for _, s := range bytes.Split(raw, []byte{0}) {
			if len(s) < 20 || len(s) > 200 {
				continue
			}
			if m := dso.FindSubmatch(s); m != nil {
				seen[string(m[1])] = true
			} else if m := stub.FindSubmatch(s); m != nil {
				seen["stub:"+string(m[1])] = true
			}
		}
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range seen {
			if !yield(n) {
				return
			}
		}
	})
	if !slices.Contains(names, "CudaRuntime") || !slices.Contains(names, "Cudnn") {
		t.Fatalf("found no CUDA loaders in lib/'s TensorFlow (%v): is it the CUDA build?", names)
	}
	return names
}

// TestGPUImageLibraries: in the built GPU image, every CUDA library the
// TensorFlow libraries load (read from their symbols here, not from a
// list) resolves through the loader's cache, with nothing it needs
// missing but the host's libcuda.so.1, at the major version of the wheel
// docker/cuda-requirements.txt pins. check-gpu-libs (the image's own
// check) must pass and name every loader.
func TestGPUImageLibraries(t *testing.T) {
	docker, image := builtImage(t, "gpu")
	names := loaders(t)
	pins := cudaPins(t)
	// The image's TensorFlow libraries are the set-up's, byte for byte.
	sums := run(t, docker, "run", "--rm", "--pull=never", "--network", "none", "--entrypoint", "sha256sum", image,
		"/opt/sagefit/lib/libtensorflow_cc.so.2", "/opt/sagefit/lib/libtensorflow_framework.so.2")
	for _, so := range []string{"libtensorflow_cc.so.2", "libtensorflow_framework.so.2"} {
		local := run(t, "sha256sum", filepath.Join("..", "lib", so))
		if sum := strings.Fields(local)[0]; !strings.Contains(sums, sum+"  /opt/sagefit/lib/"+so) {
			t.Fatalf("the image's %s is not lib/'s (%s):\n%s", so, sum, sums)
		}
	}
	out := run(t, docker, "run", "--rm", "--pull=never", "--network", "none", "--entrypoint", "check-gpu-libs", image)
	resolved := map[string]string{} // loader -> soname
	paths := map[string]string{}    // soname -> file
	line := regexp.MustCompile(`(?m)^check-gpu-libs: (lib([A-Za-z]+)\.so\.([0-9]+)) -> (\S+) \(([A-Za-z_:]+)\)$`)
	for _, m := range line.FindAllStringSubmatch(out, -1) {
		resolved[m[5]] = m[1]
		paths[m[1]] = m[4]
		pkg, ok := libPackage[m[2]]
		if !ok {
			t.Errorf("check-gpu-libs resolved %s, which no pinned wheel ships", m[1])
			continue
		}
		if v := pins[pkg]; !strings.HasPrefix(v, m[3]+".") {
			t.Errorf("%s resolves to %s, but %s is pinned at %s", m[5], m[1], pkg, v)
		}
	}
	for _, n := range names {
		if notInImage.MatchString(n) {
			if !strings.Contains(out, "("+n+")") {
				t.Errorf("check-gpu-libs does not mention %s", n)
			}
			continue
		}
		if _, ok := resolved[n]; !ok {
			t.Errorf("TensorFlow loads %s, which does not resolve in %s:\n%s", n, image, out)
		}
	}
	// What each library needs resolves too, but the host's driver.
	var files []string
	for _, f := range paths {
		files = append(files, f)
	}
	slices.Sort(files)
	ldd := run(t, docker, append([]string{"run", "--rm", "--pull=never", "--network", "none", "--entrypoint", "ldd", image}, files...)...)
	for _, l := range strings.Split(ldd, "\n") {
		if strings.Contains(l, "not found") && !strings.Contains(l, "libcuda.so.1") {
			t.Errorf("in %s: %s", image, strings.TrimSpace(l))
		}
	}
	if t.Failed() {
		t.Logf("check-gpu-libs:\n%s", out)
	}
}

// ---- the SageMaker Python SDK's local mode ----

// sdkPython is the SDK's virtualenv (docker/sdk-requirements.txt), which
// make test-images installs and names in SAGEFIT_SDK_PYTHON.
func sdkPython(t *testing.T) string {
	t.Helper()
	p := os.Getenv("SAGEFIT_SDK_PYTHON")
	if p == "" {
		t.Skip("no SageMaker Python SDK: `make test-images` installs docker/sdk-requirements.txt and names its python in SAGEFIT_SDK_PYTHON")
	}
	return p
}

type container struct {
	Name  string
	State struct {
		ExitCode   int
		FinishedAt time.Time
	}
	Mounts []struct{ Source, Destination string }
}

func composeContainers(t *testing.T, docker string) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	for _, id := range strings.Fields(run(t, docker, "ps", "-aq", "--no-trunc", "--filter", "label=com.docker.compose.service")) {
		ids[id] = true
	}
	return ids
}

// TestSageMakerSDKLocalMode: the SageMaker Python SDK (v2, local mode)
// trains the CPU image on 1 and 2 hosts from file:// channels, as the
// README's Estimator does. Nothing leaves the machine: every AWS endpoint
// is a moto server on loopback and telemetry is off (config file). Its
// model.tar.gz holds 1/saved_model.pb, which TensorFlow loads and which
// predicts what sagefit's own run of the same job (`sagefit local`)
// predicts; output.tar.gz holds history.json with every epoch. On 2 hosts
// no container exits before rank 0 has written the model (the final
// barrier: local mode stops every container when the first one exits, and
// rank 1, with no model to write, has less to do); under local mode's TTY
// every epoch line stands on a line of its own.
func TestSageMakerSDKLocalMode(t *testing.T) {
	py := sdkPython(t)
	docker, image := builtImage(t, "cpu")
	fx := fixture.Make(t, "seed", "--rows", "300", "--no-fit")
	srv := s3test.Start(t)
	bin := filepath.Join(buildRoot(t, loadImage(t, "Dockerfile.cpu")), "opt", "sagefit", "bin", "sagefit")
	// The SDK finds `docker` (and docker-compose's own client) on PATH: this
	// one first.
	path := t.TempDir()
	if err := os.Symlink(lookPath(t, docker), filepath.Join(path, "docker")); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(t.TempDir(), "sagemaker-config.yaml")
	if err := os.WriteFile(config, []byte("SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := srv.Env("PATH="+path+string(os.PathListSeparator)+os.Getenv("PATH"),
		"SAGEMAKER_USER_CONFIG_OVERRIDE="+config, "AWS_DEFAULT_REGION="+s3test.Region)
	for _, svc := range []string{"", "_S3", "_STS", "_SAGEMAKER", "_ECR", "_SAGEMAKER_RUNTIME", "_LOGS"} {
		env = append(env, "AWS_ENDPOINT_URL"+svc+"="+srv.Endpoint)
	}
	const epochs = 3
	// On 2 hosts the model is one whose weights take rank 0 a while to
	// save, so a rank 1 that left early would be seen doing so.
	wide := filepath.Join(t.TempDir(), "wide")
	run(t, fixture.Python(t), "testdata/wide_mlp.py", wide, "--rows", "256", "--width", "2048")
	for _, c := range []struct {
		hosts int
		fx    string
	}{{1, fx}, {2, wide}} {
		hosts, fx := c.hosts, c.fx
		t.Run(fmt.Sprintf("%d hosts", hosts), func(t *testing.T) {
			before := composeContainers(t, docker)
			out := t.TempDir()
			cmd := exec.Command(py, "sdk_local.py", "--image", image, "--hosts", fmt.Sprint(hosts),
				"--model", filepath.Join(fx, "model"), "--training", filepath.Join(fx, "train"),
				"--validation", filepath.Join(fx, "validation"), "--output", out,
				"--hp", fmt.Sprintf("epochs=%d", epochs), "--hp", "batch_size=16")
			cmd.Env = env
			var log bytes.Buffer
			cmd.Stdout, cmd.Stderr = &log, &log
			err := cmd.Run()
			var cs []container
			for id := range composeContainers(t, docker) {
				if !before[id] {
					var c []container
					if err := json.Unmarshal([]byte(run(t, docker, "inspect", id)), &c); err != nil {
						t.Fatal(err)
					}
					cs = append(cs, c...)
					t.Cleanup(func() { exec.Command(docker, "rm", "-f", id).Run() })
				}
			}
			if err != nil {
				t.Fatalf("local mode: %v\n%s", err, log.String())
			}
			if len(cs) != hosts {
				t.Fatalf("%d new containers, want %d", len(cs), hosts)
			}
			var res struct{ Job, ModelData, OutputData string }
			if err := json.Unmarshal([]byte(lastLineOf(log.String())), &struct {
				Job        *string `json:"job"`
				ModelData  *string `json:"model_data"`
				OutputData *string `json:"output_data"`
			}{&res.Job, &res.ModelData, &res.OutputData}); err != nil {
				t.Fatalf("sdk_local.py said: %v\n%s", err, log.String())
			}
			sdkModel := untar(t, res.ModelData)
			if _, err := os.Stat(filepath.Join(sdkModel, "1", "saved_model.pb")); err != nil {
				t.Fatalf("model.tar.gz has no 1/saved_model.pb: %v", err)
			}
			hist := readHistory(t, filepath.Join(untar(t, res.OutputData), "data", "history.json"))
			for _, k := range []string{"loss", "accuracy", "val_loss", "val_accuracy"} {
				if len(hist[k]) != epochs {
					t.Errorf("history.json %s has %d epochs, want %d: %v", k, len(hist[k]), epochs, hist[k])
				}
			}

			// sagefit's own run of the same job.
			own := t.TempDir()
			run(t, bin, "local", "--hosts", fmt.Sprint(hosts), "--model", filepath.Join(fx, "model"),
				"--channel", "training="+filepath.Join(fx, "train"), "--channel", "validation="+filepath.Join(fx, "validation"),
				"--hp", fmt.Sprintf("epochs=%d", epochs), "--hp", "batch_size=16", "--output", own)
			if hosts > 1 {
				own = filepath.Join(own, "algo-1")
			}
			ownHist := readHistory(t, filepath.Join(own, "output", "data", "history.json"))
			for k, want := range ownHist {
				for e := range want {
					if e >= len(hist[k]) || abs(hist[k][e]-want[e]) > 1e-5 {
						t.Errorf("history %s: local mode %v, sagefit local %v", k, hist[k], want)
						break
					}
				}
			}
			if d := predictDiff(t, filepath.Join(sdkModel, "1"), filepath.Join(own, "model", "1"), filepath.Join(fx, "train", "train.npy")); d > 1e-5 {
				t.Errorf("model.tar.gz predicts up to %g away from sagefit local's model", d)
			}

			// The final barrier: rank 0's model files were all written before
			// any container finished.
			var written time.Time
			for _, c := range cs {
				for _, m := range c.Mounts {
					if m.Destination == "/opt/ml/model" && rank0Name.MatchString(c.Name) {
						written = fixture.LatestWrite(t, m.Source)
						t.Cleanup(func() { removeSDKRoot(m.Source) })
					}
				}
			}
			if written.IsZero() {
				t.Fatalf("no /opt/ml/model mount on algo-1 among %+v", cs)
			}
			for _, c := range cs {
				if c.State.ExitCode != 0 {
					t.Errorf("%s exited %d", c.Name, c.State.ExitCode)
				}
				if c.State.FinishedAt.Before(written) {
					t.Errorf("%s finished at %s, %v before rank 0 finished writing the model (%s)", c.Name,
						c.State.FinishedAt.Format(time.RFC3339Nano), written.Sub(c.State.FinishedAt), written.Format(time.RFC3339Nano))
				}
			}

			// Every epoch line on a line of its own under the containers' TTY:
			// after compose's "NAME |" prefix, the line is the epoch line (the
			// TTY ends lines with \r\n).
			n := 0
			for _, l := range strings.Split(log.String(), "\n") {
				if i := strings.Index(l, "Epoch "); i >= 0 {
					n++
					if !composePrefix.MatchString(l[:i]) || strings.ContainsAny(strings.TrimSuffix(l[i:], "\r"), "\r\x1b") {
						t.Errorf("an epoch line shares its line: %q", l)
					}
				}
			}
			if n == 0 {
				t.Errorf("no epoch lines in local mode's log:\n%s", log.String())
			}
			if t.Failed() {
				t.Logf("local mode's log:\n%s", log.String())
			}
		})
	}
}

// composePrefix is what docker-compose puts before a container's line:
// its name, colored, and "| ".
var composePrefix = regexp.MustCompile(`^(\x1b\[[0-9;]*m)?\S+ +\|(\x1b\[0m)? $`)

// rank0Name is local mode's name of algo-1's container: PREFIX-algo-1-SUFFIX.
var rank0Name = regexp.MustCompile(`-algo-1-[a-z0-9]+$`)

func lookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

func lastLineOf(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

func readHistory(t *testing.T, path string) map[string][]float64 {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var h map[string][]float64
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return h
}

// untar unpacks a .tar.gz into a new folder and returns it.
func untar(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	dir := t.TempDir()
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return dir
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		name := filepath.Clean(h.Name)
		if filepath.IsAbs(name) || strings.HasPrefix(name, "..") {
			t.Fatalf("%s: entry %q outside the archive", path, h.Name)
		}
		dst := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				t.Fatal(err)
			}
			w, err := os.Create(dst)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(w, tr); err != nil {
				t.Fatal(err)
			}
			w.Close()
		}
	}
}

// predictDiff loads two SavedModels in TensorFlow (the set-up's Python)
// and returns how far their serving_default predictions on the first rows
// of x differ.
func predictDiff(t *testing.T, a, b, x string) float64 {
	t.Helper()
	script := `
import json, sys, numpy as np, tensorflow as tf
x = np.load(sys.argv[3])[:32]
outs = []
for d in sys.argv[1:3]:
    serve = tf.saved_model.load(d).signatures["serving_default"]
    (key,) = serve.structured_input_signature[1].keys()
    (out,) = serve(**{key: tf.constant(x)}).values()
    outs.append(out.numpy().ravel())
print(json.dumps({"max_abs_diff": float(np.max(np.abs(outs[0] - outs[1])))}))
`
	cmd := exec.Command(fixture.Python(t), "-c", script, a, b, x)
	cmd.Env = append(os.Environ(), "TF_CPP_MIN_LOG_LEVEL=3")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	var r struct {
		MaxAbsDiff float64 `json:"max_abs_diff"`
	}
	if err := json.Unmarshal([]byte(lastLineOf(string(out))), &r); err != nil {
		t.Fatalf("python said %q: %v", out, err)
	}
	return r.MaxAbsDiff
}

// removeSDKRoot removes the temporary folder local mode left behind (the
// parent of the containers' shared model folder), if it is one.
func removeSDKRoot(model string) {
	root := filepath.Dir(model)
	if filepath.Dir(root) == filepath.Clean(os.TempDir()) && strings.HasPrefix(filepath.Base(root), "tmp") {
		os.RemoveAll(root)
	}
}
