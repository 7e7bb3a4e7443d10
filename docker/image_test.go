package docker

import (
	"bytes"
	"cmp"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sagefit/sagefit/distributed/transport"
	"github.com/sagefit/sagefit/internal/fixture"
	"github.com/sagefit/sagefit/runtime/report"
)

var dockerfiles = []string{"Dockerfile.cpu", "Dockerfile.gpu"}

const installScript = "scripts/install-libtensorflow.sh"

// image is what the checks read from one Dockerfile.
type image struct {
	name       string
	df         *dockerfile
	build      *stage   // the stage the binary is copied from
	final      *stage   // the stage that becomes the image
	env        []string // the final stage's ENV, on top of the base image's PATH
	workdir    string   // the final stage's WORKDIR
	entrypoint instruction
	cmd        *instruction
	copies     []copyOp // the final stage's COPY and ADD
	binary     *copyOp  // the COPY that puts the ENTRYPOINT's program in place
	lib        string   // LIB of `make build` in the build stage: the binary's rpath
	links      map[string]string
}

func loadImage(t *testing.T, name string) *image {
	t.Helper()
	src, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return imageFrom(t, name, string(src))
}

func imageFrom(t *testing.T, name, src string) *image {
	t.Helper()
	df, err := parseDockerfile(name, src)
	if err != nil {
		t.Fatal(err)
	}
	img := &image{name: name, df: df, final: df.Stages[len(df.Stages)-1], links: map[string]string{}}
	st, err := df.walk(img.final, func(in instruction, st *stageEnv) error {
		switch in.Cmd {
		case "ENTRYPOINT":
			img.entrypoint = in
		case "CMD":
			img.cmd = &in
		case "RUN":
			for link, target := range symlinks(in.Rest) {
				if !path.IsAbs(link) {
					link = path.Join(st.Workdir, link)
				}
				img.links[link] = target
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	img.env, img.workdir = st.Env, st.Workdir
	if img.copies, err = df.copies(img.final); err != nil {
		t.Fatal(err)
	}
	if img.entrypoint.Cmd == "" || len(img.entrypoint.Args) == 0 {
		t.Fatalf("%s: the final stage has no ENTRYPOINT", name)
	}
	for i, c := range img.copies {
		if c.Target == img.entrypoint.Args[0] {
			img.binary = &img.copies[i]
			img.build = df.stage(c.From)
		}
	}
	if img.build != nil {
		for _, in := range img.build.Instructions {
			if m := makeLibRE.FindStringSubmatch(in.Rest); in.Cmd == "RUN" && m != nil {
				img.lib = m[1]
			}
		}
	}
	return img
}

var (
	makeBuildRE = regexp.MustCompile(`\bmake build\b`)
	makeLibRE   = regexp.MustCompile(`\bmake build\b.*\bLIB=(\S+)`)
	lnRE        = regexp.MustCompile(`\bln\s+-sf?n?\s+(\S+)\s+(\S+)`)
	tiniRE      = regexp.MustCompile(`\btini\b`)
)

// symlinks finds the `ln -s TARGET LINK` of a RUN command.
func symlinks(run string) map[string]string {
	out := map[string]string{}
	for _, m := range lnRE.FindAllStringSubmatch(run, -1) {
		out[m[2]] = m[1]
	}
	return out
}

func lookupEnv(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, _ := strings.Cut(env[i], "="); k == key {
			return v, true
		}
	}
	return "", false
}

// rule is one check of a Dockerfile.
type rule struct {
	name  string
	check func(img *image) error
}

// rules are SageMaker's rules for training images and how sagefit is built.
var rules = []rule{
	{"multi-stage with a slim run stage", func(img *image) error {
		if len(img.df.Stages) < 2 {
			return fmt.Errorf("one stage: the build tools would ship in the image")
		}
		if img.df.stage(img.final.Base) != nil {
			return fmt.Errorf("the final stage is built FROM the stage %q, so it carries the build tools", img.final.Base)
		}
		for _, in := range img.final.Instructions {
			for _, tool := range []string{"pip ", "python", "go build", "make ", "apt-get install"} {
				if in.Cmd == "RUN" && strings.Contains(in.Rest, tool) {
					return fmt.Errorf("line %d: the run stage runs %q; build in the build stage", in.Line, strings.TrimSpace(tool))
				}
			}
		}
		return nil
	}},
	{"ENTRYPOINT is exec form", func(img *image) error {
		if !img.entrypoint.JSON {
			return fmt.Errorf("line %d: ENTRYPOINT %s is shell form: /bin/sh -c runs it, so `docker run IMAGE train` loses the argument train and SIGTERM goes to the shell", img.entrypoint.Line, img.entrypoint.Rest)
		}
		if img.cmd != nil && !img.cmd.JSON {
			return fmt.Errorf("line %d: CMD %s is shell form; with an exec ENTRYPOINT it becomes the arguments [/bin/sh -c ...]", img.cmd.Line, img.cmd.Rest)
		}
		if img.cmd != nil && !slices.Equal(img.cmd.Args, []string{"train"}) {
			return fmt.Errorf("line %d: CMD %q; SageMaker passes train, so a bare `docker run IMAGE` should do the same", img.cmd.Line, img.cmd.Args)
		}
		return nil
	}},
	{"no tini", func(img *image) error {
		for _, a := range img.entrypoint.Args {
			if b := path.Base(a); strings.Contains(b, "tini") || b == "dumb-init" {
				return fmt.Errorf("ENTRYPOINT %q runs %s: sagefit must be PID 1 and get SageMaker's SIGTERM itself", img.entrypoint.Args, b)
			}
		}
		for _, in := range img.final.Instructions {
			if in.Cmd == "RUN" && tiniRE.MatchString(in.Rest) {
				return fmt.Errorf("line %d installs tini", in.Line)
			}
		}
		return nil
	}},
	{"ENTRYPOINT runs the binary the run stage copies", func(img *image) error {
		ep := img.entrypoint.Args[0]
		if img.binary == nil {
			return fmt.Errorf("ENTRYPOINT %s: no COPY in the final stage puts a file there", ep)
		}
		if img.build == nil {
			return fmt.Errorf("line %d: %s is copied from %q, not from a build stage of this Dockerfile", img.binary.Line, ep, img.binary.From)
		}
		bst, err := img.df.walk(img.build, nil)
		if err != nil {
			return err
		}
		want := path.Join(bst.Workdir, "bin", "sagefit")
		if src := path.Clean(img.binary.Src); src != want {
			return fmt.Errorf("line %d: %s is copied from %s, but `make build` in %s writes %s", img.binary.Line, ep, src, bst.Workdir, want)
		}
		if !slices.ContainsFunc(img.build.Instructions, func(in instruction) bool {
			return in.Cmd == "RUN" && makeBuildRE.MatchString(in.Rest)
		}) {
			return fmt.Errorf("the build stage %q does not run `make build`", img.build.Name)
		}
		if target, ok := img.links[path.Join(path.Dir(ep), "train")]; !ok || path.Join(path.Dir(ep), target) != ep {
			return fmt.Errorf("no link %s/train -> %s (the binary trains when invoked as train)", path.Dir(ep), path.Base(ep))
		}
		if p, _ := lookupEnv(img.env, "PATH"); !slices.Contains(filepath.SplitList(p), path.Dir(ep)) {
			return fmt.Errorf("PATH %q lacks %s, so `train` is not found by name", p, path.Dir(ep))
		}
		return nil
	}},
	{"runs " + installScript, func(img *image) error {
		if img.build == nil {
			return fmt.Errorf("no build stage")
		}
		ops, err := img.df.copies(img.build)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(ops, func(c copyOp) bool { return c.From == "" && path.Clean(c.Src) == installScript }) ||
			!slices.ContainsFunc(ops, func(c copyOp) bool { return c.From == "" && path.Clean(c.Src) == "python" }) {
			return fmt.Errorf("the build stage does not copy %s and python/ (its requirements) from the context", installScript)
		}
		var args []string
		for _, in := range img.build.Instructions {
			if in.Cmd != "RUN" {
				continue
			}
			words := strings.Fields(in.Rest)
			if i := slices.IndexFunc(words, func(w string) bool { return path.Clean(w) == installScript }); i >= 0 && len(words) >= i+4 {
				args = words[i+1 : i+4]
			}
		}
		if args == nil {
			return fmt.Errorf("the build stage does not run %s PYTHON VENV LIBDIR: libtensorflow would not be the one the README's set-up installs and tests", installScript)
		}
		if img.lib == "" {
			return fmt.Errorf("`make build` is not given LIB=, so the binary's rpath is the build folder's lib/")
		}
		if args[2] != img.lib {
			return fmt.Errorf("%s lays out %s but `make build` links against LIB=%s", installScript, args[2], img.lib)
		}
		if !slices.ContainsFunc(img.copies, func(c copyOp) bool { return c.Target == img.lib && c.From == img.build.Name }) {
			return fmt.Errorf("the final stage does not copy the libraries to %s, the binary's rpath", img.lib)
		}
		return nil
	}},
	{"nothing under /opt/ml", func(img *image) error {
		for _, s := range img.df.Stages {
			for _, in := range s.Instructions {
				if strings.Contains(in.Rest, "/opt/ml") {
					return fmt.Errorf("line %d: %s %s: SageMaker mounts /opt/ml; the image must not put anything there", in.Line, in.Cmd, in.Rest)
				}
			}
		}
		return nil
	}},
	{"SageMaker's variables left to SageMaker", func(img *image) error {
		for _, kv := range img.env {
			k, _, _ := strings.Cut(kv, "=")
			if k == "SAGEMAKER_BASE_DIR" || strings.HasPrefix(k, "SM_") || k == "CUDA_VISIBLE_DEVICES" || k == "NVIDIA_VISIBLE_DEVICES" {
				return fmt.Errorf("ENV %s: set at run time (GPUs are counted when the job starts; the base dir is /opt/ml)", kv)
			}
		}
		return nil
	}},
	{"ring port exposed", func(img *image) error {
		want := strconv.Itoa(transport.DefaultPort)
		for _, in := range img.final.Instructions {
			if in.Cmd == "EXPOSE" && slices.ContainsFunc(in.Args, func(p string) bool { return strings.TrimSuffix(p, "/tcp") == want }) {
				return nil
			}
		}
		return fmt.Errorf("no EXPOSE %s (transport.DefaultPort)", want)
	}},
	{"build and run stages share a distribution release", func(img *image) error {
		if img.build == nil {
			return fmt.Errorf("no build stage")
		}
		bi, ri := img.df.baseImage(img.build), img.df.baseImage(img.final)
		b, r := release(bi), release(ri)
		if b == "" || b != r {
			return fmt.Errorf("the binary is built on %s (%q) and runs on %s (%q): build on the glibc it runs with", bi, b, ri, r)
		}
		return nil
	}},
	{"every stage starts from the local Debian base", func(img *image) error {
		// docker/base-image.sh makes these where no registry can be
		// reached; any other image would have to be pulled.
		for _, st := range img.df.Stages {
			if b := img.df.baseImage(st); !slices.Contains(localBases, b) {
				return fmt.Errorf("stage %q starts from %s, which would be pulled; start from one of %q (docker/base-image.sh makes them offline)", cmp.Or(st.Name, fmt.Sprint(st.Index)), b, localBases)
			}
			for _, in := range st.Instructions {
				if from := in.Flags["from"]; (in.Cmd == "COPY" || in.Cmd == "ADD") && from != "" && img.df.stage(from) == nil {
					return fmt.Errorf("line %d: COPY --from=%s copies from an image, which would be pulled", in.Line, from)
				}
			}
		}
		return nil
	}},
	{"extra CA certificates only as a build secret", func(img *image) error {
		for _, st := range img.df.Stages {
			for _, in := range st.Instructions {
				if in.Cmd == "RUN" && strings.Contains(in.Rest, "with-extra-ca") {
					if !slices.Contains(in.Mounts, "type=secret,id=extra-ca") {
						return fmt.Errorf("line %d: with-extra-ca without the secret mount --mount=type=secret,id=extra-ca", in.Line)
					}
				}
				if (in.Cmd == "COPY" || in.Cmd == "ADD") && caFileRE.MatchString(in.Rest) {
					return fmt.Errorf("line %d: %s %s copies certificates into a layer; hand them in as the build secret extra-ca", in.Line, in.Cmd, in.Rest)
				}
				if in.Cmd == "ENV" && caFileRE.MatchString(in.Rest) {
					return fmt.Errorf("line %d: ENV %s points at certificates in the image", in.Line, in.Rest)
				}
			}
		}
		for _, in := range img.final.Instructions {
			if in.Cmd == "RUN" && slices.ContainsFunc(in.Mounts, func(m string) bool { return strings.HasPrefix(m, "type=secret") }) {
				return fmt.Errorf("line %d: the run stage mounts a secret; only build stages download", in.Line)
			}
		}
		return nil
	}},
	{"dockerignore keeps the local set-up out", func(img *image) error {
		raw, err := os.ReadFile(img.name + ".dockerignore")
		if err != nil {
			return fmt.Errorf("%w: BuildKit reads <Dockerfile>.dockerignore beside the Dockerfile", err)
		}
		lines := strings.Fields(string(raw))
		for _, want := range []string{".venv", "lib", "bin", ".git"} {
			if !slices.Contains(lines, want) {
				return fmt.Errorf("%s.dockerignore does not exclude %s", img.name, want)
			}
		}
		return nil
	}},
}

// TestImageRules checks each Dockerfile against the rules.
func TestImageRules(t *testing.T) {
	for _, name := range dockerfiles {
		img := loadImage(t, name)
		for _, r := range rules {
			t.Run(name+"/"+r.name, func(t *testing.T) {
				if err := r.check(img); err != nil {
					t.Errorf("%s: %v", name, err)
				}
			})
		}
	}
}

// TestImageRulesCatchViolations breaks Dockerfile.cpu one way at a time and
// expects the rule about it to fail.
func TestImageRulesCatchViolations(t *testing.T) {
	raw, err := os.ReadFile("Dockerfile.cpu")
	if err != nil {
		t.Fatal(err)
	}
	orig := string(raw)
	const ep = `ENTRYPOINT ["/opt/sagefit/bin/sagefit"]`
	const runStage = "FROM debian:bookworm-slim\nCOPY --from=build"
	for _, c := range []struct {
		rule, old, new string
	}{
		{"ENTRYPOINT is exec form", ep, `ENTRYPOINT /opt/sagefit/bin/sagefit`},
		{"ENTRYPOINT is exec form", `CMD ["train"]`, `CMD train`},
		{"ENTRYPOINT is exec form", `CMD ["train"]`, `CMD ["serve"]`},
		{"no tini", ep, `ENTRYPOINT ["/usr/bin/tini", "--", "/opt/sagefit/bin/sagefit"]`},
		{"ENTRYPOINT runs the binary the run stage copies", ep, `ENTRYPOINT ["/usr/local/bin/sagefit"]`},
		{"ENTRYPOINT runs the binary the run stage copies", "/src/bin/sagefit /opt/sagefit/bin/sagefit", "/src/sagefit /opt/sagefit/bin/sagefit"},
		{"ENTRYPOINT runs the binary the run stage copies", "ln -s sagefit /opt/sagefit/bin/train", "true"},
		{"ENTRYPOINT runs the binary the run stage copies", "ENV PATH=/opt/sagefit/bin:$PATH", "ENV LANG=C.UTF-8"},
		{"runs " + installScript, "with-extra-ca scripts/install-libtensorflow.sh python3 /opt/sagefit/venv /opt/sagefit/lib", "python3 -m pip install tensorflow-cpu"},
		{"runs " + installScript, "COPY python/ python/", "COPY python/requirements.txt python/"},
		{"runs " + installScript, "VENV=/opt/sagefit/venv LIB=/opt/sagefit/lib", "VENV=/opt/sagefit/venv LIB=/usr/lib/tf"},
		{"runs " + installScript, "COPY --from=build /out/lib/ /opt/sagefit/lib/", "COPY --from=build /out/lib/ /usr/lib/"},
		{"nothing under /opt/ml", "WORKDIR /opt/sagefit\n", "WORKDIR /opt/ml/code\n"},
		{"nothing under /opt/ml", "EXPOSE 7001", "VOLUME /opt/ml/checkpoints\nEXPOSE 7001"},
		{"SageMaker's variables left to SageMaker", "ENV PATH=/opt/sagefit/bin:$PATH", "ENV PATH=/opt/sagefit/bin:$PATH SM_NUM_GPUS=1"},
		{"SageMaker's variables left to SageMaker", "ENV PATH=/opt/sagefit/bin:$PATH", "ENV PATH=/opt/sagefit/bin:$PATH SAGEMAKER_BASE_DIR=/data"},
		{"multi-stage with a slim run stage", runStage, "FROM build\nCOPY --from=build"},
		{"multi-stage with a slim run stage", "RUN ln -s", "RUN python3 -m pip install numpy && ln -s"},
		{"ring port exposed", "EXPOSE 7001", "EXPOSE 8080"},
		{"build and run stages share a distribution release", runStage, "FROM debian:trixie-slim\nCOPY --from=build"},
		{"every stage starts from the local Debian base", "FROM debian:bookworm-slim AS tools", "FROM golang:1.26-bookworm AS tools"},
		{"every stage starts from the local Debian base", "COPY docker/go-toolchain.sh /usr/local/bin/go-toolchain", "COPY --from=golang:1.26-bookworm /usr/local/go /usr/local/go"},
		{"extra CA certificates only as a build secret", "RUN --mount=type=secret,id=extra-ca --mount=type=tmpfs,target=/run/ca \\\n    with-extra-ca go mod download", "RUN with-extra-ca go mod download"},
		{"extra CA certificates only as a build secret", "COPY docker/with-extra-ca.sh /usr/local/bin/with-extra-ca", "COPY docker/with-extra-ca.sh /usr/local/bin/with-extra-ca\nCOPY extra-ca.pem /usr/local/share/ca-certificates/extra.crt"},
		{"extra CA certificates only as a build secret", "ENV PIP_NO_CACHE_DIR=1", "ENV SSL_CERT_FILE=/etc/ssl/extra.pem PIP_NO_CACHE_DIR=1"},
		{"extra CA certificates only as a build secret", "RUN ln -s sagefit", "RUN --mount=type=secret,id=extra-ca ln -s sagefit"},
	} {
		t.Run(c.rule+"/"+c.new, func(t *testing.T) {
			src := strings.Replace(orig, c.old, c.new, 1)
			if src == orig {
				t.Fatalf("Dockerfile.cpu has no %q to replace", c.old)
			}
			i := slices.IndexFunc(rules, func(r rule) bool { return r.name == c.rule })
			if i < 0 {
				t.Fatalf("no rule %q", c.rule)
			}
			if err := rules[i].check(imageFrom(t, "Dockerfile.cpu", src)); err == nil {
				t.Errorf("rule %q passed a Dockerfile with %q instead of %q", c.rule, c.new, c.old)
			} else {
				t.Log(err)
			}
		})
	}
}

// localBases are the images docker/base-image.sh makes offline.
var localBases = []string{"debian:bookworm", "debian:bookworm-slim"}

// caFileRE finds certificate files and folders named in an instruction.
var caFileRE = regexp.MustCompile(`\.(crt|pem)\b|ca-certificates|/certs\b|SSL_CERT_FILE|PIP_CERT|REQUESTS_CA_BUNDLE`)

var releaseRE = regexp.MustCompile(`(bookworm|bullseye|trixie|jammy|noble|ubuntu\d\d\.\d\d)`)

// release is the distribution release an image tag names ("bookworm",
// "ubuntu22.04"), or "".
func release(image string) string { return releaseRE.FindString(image) }

// TestImagesAgree: both images run the same binary at the same place with
// the same libraries, so one README and one contract test cover both.
func TestImagesAgree(t *testing.T) {
	cpu, gpu := loadImage(t, "Dockerfile.cpu"), loadImage(t, "Dockerfile.gpu")
	if !slices.Equal(cpu.entrypoint.Args, gpu.entrypoint.Args) {
		t.Errorf("ENTRYPOINT %q (cpu) and %q (gpu) differ", cpu.entrypoint.Args, gpu.entrypoint.Args)
	}
	if cpu.lib != gpu.lib {
		t.Errorf("LIB %q (cpu) and %q (gpu) differ", cpu.lib, gpu.lib)
	}
}

// TestGPUImageMatchesTheWheel ties the GPU image's CUDA libraries to the
// CUDA build of the TensorFlow wheel the set-up installs: the pinned NVIDIA
// wheels are CUDA major version as the build, no older minor, and cuDNN
// its major version; the loader finds them through ld.so.conf.d (no
// LD_LIBRARY_PATH, no Python); the run stage runs check-gpu-libs. It also
// checks that the set-up's libtensorflow is that CUDA build, since the GPU
// image builds from the same requirements.
func TestGPUImageMatchesTheWheel(t *testing.T) {
	info := buildInfo(t)
	if info["is_cuda_build"] != "True" {
		t.Fatalf("the set-up's libtensorflow is not a CUDA build (build_info %v): the GPU image, built from the same python/requirements.txt, would train on the CPU", info)
	}
	m := regexp.MustCompile(`^(\d+)\.(\d+)`).FindStringSubmatch(info["cuda_version"])
	if m == nil {
		t.Fatalf("build_info cuda_version %q", info["cuda_version"])
	}
	pins := cudaPins(t)
	rt := regexp.MustCompile(`^(\d+)\.(\d+)`).FindStringSubmatch(pins["nvidia-cuda-runtime-cu12"])
	if rt == nil {
		t.Fatalf("docker/cuda-requirements.txt pins no nvidia-cuda-runtime-cu12 (%v)", pins)
	}
	if atoi(t, rt[1]) != atoi(t, m[1]) || atoi(t, rt[2]) < atoi(t, m[2]) {
		t.Errorf("the CUDA runtime is pinned at %s; TensorFlow %s was built with CUDA %s (same major, no older minor)", pins["nvidia-cuda-runtime-cu12"], info["tf_version"], info["cuda_version"])
	}
	if cudnn := pins["nvidia-cudnn-cu12"]; !strings.HasPrefix(cudnn, strings.SplitN(info["cudnn_version"], ".", 2)[0]+".") {
		t.Errorf("cuDNN is pinned at %s; TensorFlow was built with cuDNN %s", cudnn, info["cudnn_version"])
	}
	gpu := loadImage(t, "Dockerfile.gpu")
	if !slices.ContainsFunc(gpu.copies, func(c copyOp) bool { return strings.HasPrefix(c.Target, "/etc/ld.so.conf.d/") }) {
		t.Error("the GPU run stage puts nothing in /etc/ld.so.conf.d: the loader would not find the CUDA libraries without LD_LIBRARY_PATH")
	}
	if v, ok := lookupEnv(gpu.env, "LD_LIBRARY_PATH"); ok {
		t.Errorf("ENV LD_LIBRARY_PATH=%s: the loader's cache (ld.so.conf.d) finds the libraries for any process", v)
	}
	var checks, ldconfig bool
	for _, in := range gpu.final.Instructions {
		if in.Cmd == "RUN" {
			checks = checks || strings.Contains(in.Rest, "check-gpu-libs")
			ldconfig = ldconfig || regexp.MustCompile(`\bldconfig\b`).MatchString(in.Rest)
		}
	}
	if !ldconfig {
		t.Error("the GPU run stage does not run ldconfig after adding the CUDA libraries' folders")
	}
	if !checks {
		t.Error("the GPU run stage does not run check-gpu-libs: a missing CUDA library would make TensorFlow train on the CPU without failing")
	}
	if !slices.ContainsFunc(gpu.build.Instructions, func(in instruction) bool {
		return in.Cmd == "RUN" && strings.Contains(in.Rest, "is_cuda_build")
	}) {
		t.Error("the GPU build stage does not check that libtensorflow is the CUDA build")
	}
}

// TestBuildStagesShared: Dockerfile.gpu's tools and build stages begin
// with Dockerfile.cpu's, instruction for instruction, so building the GPU
// image after the CPU one reuses its layers (TensorFlow's wheel, the Go
// modules, the binary).
func TestBuildStagesShared(t *testing.T) {
	cpu, gpu := loadImage(t, "Dockerfile.cpu"), loadImage(t, "Dockerfile.gpu")
	for _, name := range []string{"tools", "build"} {
		c, g := cpu.df.stage(name), gpu.df.stage(name)
		if c == nil || g == nil {
			t.Fatalf("stage %q missing (cpu %v, gpu %v)", name, c != nil, g != nil)
		}
		if c.Base != g.Base || len(g.Instructions) < len(c.Instructions) {
			t.Fatalf("stage %q: cpu FROM %s (%d instructions), gpu FROM %s (%d)", name, c.Base, len(c.Instructions), g.Base, len(g.Instructions))
		}
		for i, in := range c.Instructions {
			if gi := g.Instructions[i]; gi.Cmd != in.Cmd || gi.Rest != in.Rest || !slices.Equal(gi.Mounts, in.Mounts) || !maps.Equal(gi.Flags, in.Flags) {
				t.Errorf("stage %q instruction %d: cpu line %d %s %s, gpu line %d %s %s", name, i+1, in.Line, in.Cmd, in.Rest, gi.Line, gi.Cmd, gi.Rest)
				break
			}
		}
	}
	raw := func(name string) string {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		return regexp.MustCompile(`(?m)^#.*\n`).ReplaceAllString(string(b), "")
	}
	if a, b := raw("Dockerfile.cpu.dockerignore"), raw("Dockerfile.gpu.dockerignore"); a != b {
		t.Errorf("the two .dockerignore files differ, so COPY . . differs:\n%s\n%s", a, b)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// buildInfo reads build_info.py of the TensorFlow package whose libraries
// the set-up linked into lib/.
func buildInfo(t *testing.T) map[string]string {
	t.Helper()
	so, err := filepath.EvalSymlinks(filepath.Join("..", "lib", "libtensorflow_cc.so.2"))
	if err != nil {
		t.Fatalf("no lib/libtensorflow_cc.so.2 (run `make setup`): %v", err)
	}
	tfdir := filepath.Dir(so)
	raw, err := os.ReadFile(filepath.Join(tfdir, "python", "platform", "build_info.py"))
	if err != nil {
		t.Fatal(err)
	}
	info := map[string]string{}
	for _, m := range regexp.MustCompile(`\('(\w+)', '?([^',)\]]*)'?\)`).FindAllStringSubmatch(string(raw), -1) {
		info[m[1]] = m[2]
	}
	if dist, _ := filepath.Glob(filepath.Join(filepath.Dir(tfdir), "tensorflow-*.dist-info")); len(dist) == 1 {
		info["tf_version"] = strings.TrimSuffix(strings.TrimPrefix(filepath.Base(dist[0]), "tensorflow-"), ".dist-info")
	}
	return info
}

// ---- the container contract: the binary run as the images run it ----

// root stands for the image's file system: the binary at the ENTRYPOINT's
// path, linked with an rpath into LIB, and in LIB only the two libraries the
// run stage copies.
var root string

func TestMain(m *testing.M) {
	code := m.Run()
	fixture.Cleanup()
	if root != "" {
		os.RemoveAll(root)
	}
	os.Exit(code)
}

// buildRoot builds cmd/sagefit into a folder laid out like the images'
// run stage, once per test binary.
func buildRoot(t *testing.T, img *image) string {
	t.Helper()
	if root != "" {
		return root
	}
	ldflags := os.Getenv("CGO_LDFLAGS")
	if !strings.Contains(ldflags, "tensorflow") {
		t.Fatal("CGO_LDFLAGS does not link libtensorflow: run the tests with `make test`, or `eval \"$(make -s env)\"` first")
	}
	dir, err := os.MkdirTemp("", "sagefit-image-")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, filepath.FromSlash(img.entrypoint.Args[0]))
	lib := filepath.Join(dir, filepath.FromSlash(img.lib))
	for _, d := range []string{filepath.Dir(bin), lib, filepath.Join(dir, filepath.FromSlash(img.workdir))} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The image links with rpath LIB; here LIB sits under dir, so the rpath
	// is the same place relative to the binary ($ORIGIN keeps the go build
	// cache warm across runs).
	rel, err := filepath.Rel(path.Dir(img.entrypoint.Args[0]), img.lib)
	if err != nil {
		t.Fatal(err)
	}
	rpath := "-Wl,-rpath,$ORIGIN/" + filepath.ToSlash(rel)
	rpathRE := regexp.MustCompile(`-Wl,-rpath,\S+`)
	if rpathRE.MatchString(ldflags) {
		ldflags = rpathRE.ReplaceAllLiteralString(ldflags, rpath)
	} else {
		ldflags += " " + rpath
	}
	build := exec.Command("go", "build", "-o", bin, "github.com/sagefit/sagefit/cmd/sagefit")
	build.Env = append(os.Environ(), "CGO_LDFLAGS="+ldflags)
	if out, err := build.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// The run stage's `cp -L` of the two libraries: hard links where the
	// file system allows, else links to the files.
	for _, so := range []string{"libtensorflow_cc.so.2", "libtensorflow_framework.so.2"} {
		src, err := filepath.EvalSymlinks(filepath.Join("..", "lib", so))
		if err != nil {
			t.Fatal(err)
		}
		if os.Link(src, filepath.Join(lib, so)) != nil {
			if err := os.Symlink(src, filepath.Join(lib, so)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for link, target := range img.links {
		if err := os.Symlink(target, filepath.Join(dir, filepath.FromSlash(link))); err != nil {
			t.Fatal(err)
		}
	}
	root = dir
	return root
}

// systemLibs are the libraries of the run stages' base images (libc6,
// libstdc++6, libgcc-s1: in debian:bookworm-slim, both images' base).
var systemLibs = []string{"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1",
	"ld-linux-x86-64.so.2", "libstdc++.so.6", "libgcc_s.so.1"}

// TestRunStageHasWhatTheBinaryLinks: the binary and the two libraries need
// nothing but each other and the base image's C and C++ runtime, so the run
// stage can leave the virtualenv behind.
func TestRunStageHasWhatTheBinaryLinks(t *testing.T) {
	img := loadImage(t, "Dockerfile.cpu")
	dir := buildRoot(t, img)
	lib := filepath.Join(dir, filepath.FromSlash(img.lib))
	entries, err := os.ReadDir(lib)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, e := range entries {
		have[e.Name()] = true
	}
	files := []string{filepath.Join(dir, filepath.FromSlash(img.entrypoint.Args[0]))}
	for name := range have {
		files = append(files, filepath.Join(lib, name))
	}
	for _, f := range files {
		ef, err := elf.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		needed, err := ef.ImportedLibraries()
		ef.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range needed {
			if !have[n] && !slices.Contains(systemLibs, n) {
				t.Errorf("%s needs %s, which is neither in the run stage's %s nor in its base image", filepath.Base(f), n, img.lib)
			}
		}
	}
	ef, err := elf.Open(files[0])
	if err != nil {
		t.Fatal(err)
	}
	defer ef.Close()
	runpath, _ := ef.DynString(elf.DT_RUNPATH)
	rpath, _ := ef.DynString(elf.DT_RPATH)
	if !slices.Contains(append(runpath, rpath...), "$ORIGIN/../lib") {
		t.Errorf("binary rpath %q %q, want $ORIGIN/../lib", runpath, rpath)
	}
}

// TestContainerContract runs the binary as SageMaker runs each image:
// `docker run IMAGE train` (the ENTRYPOINT with the argument train), and
// `train` found on the image's PATH; with only the image's ENV plus what
// SageMaker sets, and /opt/ml (here SAGEMAKER_BASE_DIR) holding the files
// SageMaker writes for a one-host job.
func TestContainerContract(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "200", "--no-fit")
	for _, name := range dockerfiles {
		img := loadImage(t, name)
		dir := buildRoot(t, img)
		instance := "ml.m5.large"
		if strings.Contains(name, "gpu") {
			instance = "ml.p3.2xlarge"
		}
		// The image's ENV; paths under the image's /opt/sagefit point into dir.
		var env []string
		for _, kv := range img.env {
			k, v, _ := strings.Cut(kv, "=")
			parts := filepath.SplitList(v)
			for i, p := range parts {
				if strings.HasPrefix(p, "/opt/sagefit") {
					parts[i] = filepath.Join(dir, filepath.FromSlash(p))
				}
			}
			env = append(env, k+"="+strings.Join(parts, string(filepath.ListSeparator)))
		}
		pathVar, _ := lookupEnv(env, "PATH")
		for variant, argv := range map[string][]string{
			"docker run IMAGE train": append(slices.Clone(img.entrypoint.Args), "train"),
			"train on PATH":          {"train"},
		} {
			t.Run(name+"/"+variant, func(t *testing.T) {
				base := sageMakerJob(t, fx, instance)
				prog := argv[0]
				if path.IsAbs(prog) {
					prog = filepath.Join(dir, filepath.FromSlash(prog))
				} else if prog = findOnPath(pathVar, prog); prog == "" {
					t.Fatalf("%s is not on the image's PATH %s", argv[0], pathVar)
				}
				inputBefore := tree(t, filepath.Join(base, "input"))
				workdir := filepath.Join(dir, filepath.FromSlash(img.workdir))
				workBefore := tree(t, workdir)

				cmd := exec.Command(prog, argv[1:]...)
				cmd.Args[0] = argv[0] // argv[0] as the image's runtime passes it
				cmd.Dir = workdir
				cmd.Env = append(slices.Clone(env),
					"HOME="+t.TempDir(),
					"HOSTNAME=ip-10-0-0-1.ec2.internal",
					"TRAINING_JOB_NAME=sagefit-contract",
					"TRAINING_JOB_ARN=arn:aws:sagemaker:us-east-1:123456789012:training-job/sagefit-contract",
					"AWS_REGION=us-east-1",
					"SAGEMAKER_BASE_DIR="+base) // stands in for the /opt/ml mount
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				if err := cmd.Run(); err != nil {
					failure, _ := os.ReadFile(filepath.Join(base, "output", "failure"))
					t.Fatalf("%q: %v\nfailure file: %s\nstderr:\n%s", argv, err, failure, stderr.String())
				}
				for _, f := range []string{"model/1/saved_model.pb", "model/1/variables/variables.index", "output/data/history.json"} {
					if _, err := os.Stat(filepath.Join(base, f)); err != nil {
						t.Errorf("missing %s: %v", f, err)
					}
				}
				if _, err := os.Stat(filepath.Join(base, "output", "failure")); err == nil {
					t.Error("a failure file after a good run")
				}
				var hist map[string][]float64
				if raw, err := os.ReadFile(filepath.Join(base, "output", "data", "history.json")); err == nil {
					if err := json.Unmarshal(raw, &hist); err != nil {
						t.Errorf("history.json: %v", err)
					}
				}
				if len(hist["loss"]) != 2 || len(hist["val_loss"]) != 2 {
					t.Errorf("history.json has %d loss and %d val_loss values, want 2 epochs of each: %v", len(hist["loss"]), len(hist["val_loss"]), hist)
				}
				// The metric_definitions of README.md find every epoch's value.
				for name, re := range readmeMetrics(t) {
					if got := len(re.FindAllStringSubmatch(stdout.String(), -1)); got != 2 {
						t.Errorf("README metric %s (%q) matched %d times in stdout, want 2 (epochs):\n%s", name, re, got, stdout.String())
					}
				}
				if after := tree(t, filepath.Join(base, "input")); !slices.Equal(after, inputBefore) {
					t.Errorf("the job changed /opt/ml/input: %q -> %q", inputBefore, after)
				}
				if after := tree(t, workdir); !slices.Equal(after, workBefore) {
					t.Errorf("the job wrote into the image's WORKDIR %s: %q -> %q", img.workdir, workBefore, after)
				}
			})
		}
	}
}

// readmeMetrics reads the metric_definitions of README.md: each
// {"Name": ..., "Regex": ...} of its Python examples. The training metrics
// must be the regexes runtime/report documents ([report.MetricRegex]).
func readmeMetrics(t *testing.T) map[string]*regexp.Regexp {
	t.Helper()
	raw, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*regexp.Regexp{}
	for _, m := range regexp.MustCompile(`\{"Name": "([^"]+)", "Regex": "([^"\\]+)"\}`).FindAllStringSubmatch(string(raw), -1) {
		re, err := regexp.Compile(m[2])
		if err != nil {
			t.Fatalf("README metric %s: %v", m[1], err)
		}
		out[m[1]] = re
	}
	for name, metric := range map[string]string{"train:loss": "loss", "train:accuracy": "accuracy", "validation:loss": "val_loss", "validation:accuracy": "val_accuracy"} {
		if re, ok := out[name]; !ok || re.String() != report.MetricRegex(metric) {
			t.Errorf("README has no metric definition {\"Name\": %q, \"Regex\": %q}", name, report.MetricRegex(metric))
		}
	}
	if _, ok := out["epoch"]; !ok {
		t.Error("README has no epoch metric definition")
	}
	return out
}

// sageMakerJob writes what SageMaker puts under /opt/ml for a one-host job
// with the seed model in a "model" channel and the data in "training" and
// "validation" (File mode: the files themselves, copied).
func sageMakerJob(t *testing.T, fx, instanceType string) string {
	t.Helper()
	base := t.TempDir()
	files := map[string]any{
		// SageMaker writes every hyperparameter as a string.
		"hyperparameters.json": map[string]string{"epochs": "2", "batch_size": "32"},
		"resourceconfig.json": map[string]any{
			"current_host":          "algo-1",
			"current_instance_type": instanceType,
			"current_group_name":    "homogeneousCluster",
			"hosts":                 []string{"algo-1"},
			"instance_groups": []map[string]any{{
				"instance_group_name": "homogeneousCluster",
				"instance_type":       instanceType,
				"hosts":               []string{"algo-1"},
			}},
			"network_interface_name": "eth0",
		},
		"inputdataconfig.json": map[string]any{
			"model":      map[string]string{"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"},
			"training":   map[string]string{"ContentType": "application/x-npy", "TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"},
			"validation": map[string]string{"ContentType": "application/x-npy", "TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"},
		},
	}
	config := filepath.Join(base, "input", "config")
	for _, d := range []string{config, filepath.Join(base, "model"), filepath.Join(base, "output")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, v := range files {
		raw, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(config, name), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for channel, src := range map[string]string{"model": "model", "training": "train", "validation": "validation"} {
		if err := os.CopyFS(filepath.Join(base, "input", "data", channel), os.DirFS(filepath.Join(fx, src))); err != nil {
			t.Fatal(err)
		}
	}
	return base
}

// findOnPath finds an executable name in the folders of pathVar, as the
// container runtime does for an ENTRYPOINT or command without a slash.
func findOnPath(pathVar, name string) string {
	for _, d := range filepath.SplitList(pathVar) {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// tree lists the paths under dir with their sizes.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out = append(out, fmt.Sprintf("%s %d", strings.TrimPrefix(p, dir), info.Size()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
