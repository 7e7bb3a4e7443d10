package main_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sagefit/sagefit/internal/fixture"
	"github.com/sagefit/sagefit/internal/s3sync/s3test"
)

// The tests in this file run `sagefit local` against a real S3-compatible
// server (moto, with IAM authentication enforced) on loopback; they skip,
// saying why, where moto is not installed.

// putDir uploads the files under dir as s3://bucket/prefix/<path>.
func putDir(t *testing.T, srv *s3test.Server, dir, bucket, prefix string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		srv.Put(t, bucket, prefix+"/"+filepath.ToSlash(rel), b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// runLocal runs `sagefit local args...` with env, bounded to 90 s.
func runLocalS3(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"local"}, args...)...)
	cmd.Env = env
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(90*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	cmd.Wait()
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

// untarNames lists a .tar.gz's entries (folders end in "/").
func untarNames(t *testing.T, b []byte) []string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
}

// TestLocalS3TrainsFromAndToS3: model and training data come from S3, the
// results go to S3 the way SageMaker lays them out.
func TestLocalS3TrainsFromAndToS3(t *testing.T) {
	srv := s3test.Start(t)
	fx := fixture.Make(t, "seed", "--rows", "200", "--no-fit")
	srv.CreateBucket(t, "data")
	srv.CreateBucket(t, "results")
	putDir(t, srv, filepath.Join(fx, "model"), "data", "seed/model")
	putDir(t, srv, filepath.Join(fx, "train"), "data", "seed/train")

	stdout, stderr, code := runLocalS3(t, srv.Env(),
		"--model", "s3://data/seed/model", "--channel", "training=s3://data/seed/train",
		"--hp", "epochs=2", "--output", "s3://results/runs", "--job-name", "seed-job-1")
	if code != 0 {
		t.Fatalf("exit code %d\n%s", code, stderr)
	}
	noTrace(t, stderr)
	if !strings.Contains(stdout, "Epoch 2/2 - 7/7 - ") {
		t.Errorf("stdout lacks the epoch lines:\n%s", stdout)
	}
	for _, want := range []string{
		"sagefit local: channel training: 2 files from s3://data/seed/train",
		"verified CRC32 2, MD5 2",
		"sagefit local: uploaded s3://results/runs/seed-job-1/output/model.tar.gz",
		"sagefit local: uploaded s3://results/runs/seed-job-1/output/output.tar.gz",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	keys := srv.Keys(t, "results", "")
	if want := []string{"runs/seed-job-1/output/model.tar.gz", "runs/seed-job-1/output/output.tar.gz"}; !slices.Equal(keys, want) {
		t.Fatalf("keys %v, want %v", keys, want)
	}
	model := untarNames(t, srv.Get(t, "results", keys[0]))
	for _, want := range []string{"1/", "1/saved_model.pb", "1/variables/", "1/variables/variables.index"} {
		if !slices.Contains(model, want) {
			t.Errorf("model.tar.gz lacks %s: %v", want, model)
		}
	}
	for _, name := range model {
		if strings.HasPrefix(name, "/") || strings.HasPrefix(name, "./") || strings.HasPrefix(name, "model/") {
			t.Errorf("model.tar.gz entry %q is not relative to the model dir", name)
		}
	}
	output := untarNames(t, srv.Get(t, "results", keys[1]))
	for _, want := range []string{"history.json", "loss.png"} {
		if !slices.Contains(output, want) {
			t.Errorf("output.tar.gz lacks %s: %v", want, output)
		}
	}
	// With an s3:// output the base dir was temporary, and is gone.
	if m := regexp.MustCompile(`SageMaker base dir (\S+)`).FindStringSubmatch(stderr); m == nil {
		t.Errorf("stderr does not name the base dir:\n%s", stderr)
	} else if _, err := os.Stat(m[1]); err == nil {
		t.Errorf("temporary base dir %s left behind", m[1])
	}
}

// TestLocalS3Errors: each S3 problem ends the command with exit code 1, one
// clear sentence (on stderr and in the failure file) and no Go trace.
func TestLocalS3Errors(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "data")
	srv.Put(t, "data", "train/train.npy", []byte("x"))
	model := t.TempDir() // never reached
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"unknown access key", s3test.Environ(srv.Endpoint, "AKIANOSUCHKEY0000000", "secret"),
			[]string{"--channel", "training=s3://data/train"},
			"channel training: s3://data/train: access denied: check AWS credentials (InvalidAccessKeyId: "},
		{"wrong secret", s3test.Environ(srv.Endpoint, srv.AccessKey, "wrong"),
			[]string{"--channel", "training=s3://data/train"},
			"channel training: s3://data/train: access denied: check AWS credentials (SignatureDoesNotMatch: "},
		{"no credentials", s3test.Environ(srv.Endpoint, "", ""),
			[]string{"--channel", "training=s3://data/train"},
			"s3: no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"},
		{"missing channel bucket", srv.Env(),
			[]string{"--channel", "training=s3://no-such-bucket/train"},
			`channel training: s3://no-such-bucket/train: bucket "no-such-bucket" does not exist`},
		{"missing output bucket", srv.Env(),
			[]string{"--channel", "training=" + model, "--output", "s3://no-such-bucket/out"},
			`s3://no-such-bucket/out: bucket "no-such-bucket" does not exist`},
		{"empty prefix", srv.Env(),
			[]string{"--channel", "training=s3://data/nothing"},
			"channel training: s3://data/nothing: no objects under this prefix"},
		{"endpoint down", s3test.Environ("http://127.0.0.1:1", srv.AccessKey, srv.SecretKey),
			[]string{"--channel", "training=s3://data/train"},
			"channel training: s3://data/train: cannot reach the S3 endpoint at 127.0.0.1:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			args := append([]string{"--model", model, "--output", out}, tc.args...)
			_, stderr, code := runLocalS3(t, tc.env, args...)
			if code != 1 {
				t.Fatalf("exit code %d, want 1\n%s", code, stderr)
			}
			if !strings.Contains(stderr, "sagefit local: "+tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, stderr)
			}
			noTrace(t, stderr)
			if !slices.Contains(tc.args, "s3://no-such-bucket/out") {
				reason, err := os.ReadFile(filepath.Join(out, "output", "failure"))
				if err != nil || !strings.Contains(string(reason), tc.want) {
					t.Errorf("failure file %q (%v), want %q", reason, err, tc.want)
				}
			}
		})
	}
}

// TestLocalS3EndpointNotAURLRefused: an --s3-endpoint that is no URL is a
// usage error, said before anything runs (it failed at the first request,
// in the SDK's words: "resolve auth scheme: resolve endpoint: endpoint rule
// error, Custom endpoint `127.0.0.1:9000` was not a valid URI").
func TestLocalS3EndpointNotAURLRefused(t *testing.T) {
	for _, bad := range []string{"127.0.0.1:9000", "ftp://host", "http://"} {
		_, stderr, code := runLocalS3(t, nil, "--model", t.TempDir(), "--channel", "training=s3://data/train", "--s3-endpoint", bad)
		if want := "sagefit local: --s3-endpoint " + strconv.Quote(bad) + " is not a URL such as http://127.0.0.1:9000"; code != 2 || !strings.Contains(stderr, want) {
			t.Errorf("--s3-endpoint %s: exit %d, stderr lacks %q:\n%s", bad, code, want, stderr)
		}
	}
}

// TestLocalS3CacheOfOtherFilesRefused: a cache mirrors S3, removing what
// S3 lacks, so --s3-cache at a folder of the user's own files is refused
// and the files stay (they were removed: a probe's --s3-cache DIR lost
// DIR/training/mine.npy). An empty folder becomes the cache and is reused.
func TestLocalS3CacheOfOtherFilesRefused(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "data")
	fx := fixture.Make(t, "seed", "--rows", "64", "--no-fit", "--no-validation")
	putDir(t, srv, filepath.Join(fx, "train"), "data", "train")
	mine := t.TempDir()
	own := filepath.Join(mine, "training", "mine.npy")
	os.MkdirAll(filepath.Dir(own), 0o755)
	os.WriteFile(own, []byte("the user's"), 0o644)
	args := []string{"--model", filepath.Join(fx, "model"), "--channel", "training=s3://data/train", "--hp", "epochs=1"}
	_, stderr, code := runLocalS3(t, srv.Env(), append(args, "--s3-cache", mine, "--output", t.TempDir())...)
	if want := "--s3-cache " + mine + " holds files sagefit did not put there (training, ...)"; code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("exit %d, stderr lacks %q:\n%s", code, want, stderr)
	}
	if b, err := os.ReadFile(own); err != nil || string(b) != "the user's" {
		t.Errorf("the user's file is gone or changed: %q %v", b, err)
	}
	cache := t.TempDir()
	for run := range 2 {
		if _, stderr, code := runLocalS3(t, srv.Env(), append(args, "--s3-cache", cache, "--output", t.TempDir())...); code != 0 {
			t.Fatalf("run %d into an empty cache: exit %d\n%s", run+1, code, stderr)
		}
	}
}

// TestLocalS3CutOff: a connection that closes halfway through a download
// (every time: a proxy cuts each one after 64 KiB) fails the command with a
// clear error and leaves no file under its final name in the channel.
func TestLocalS3CutOff(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, "data")
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	srv.Put(t, "data", "train/big.npy", big)
	srv.Put(t, "data", "train/small.npy", []byte("small"))
	proxy := s3test.CutProxy(t, s3test.Host(srv.Endpoint), 64<<10)

	out := t.TempDir()
	// The endpoint by flag, overriding AWS_ENDPOINT_URL_S3 (the server).
	_, stderr, code := runLocalS3(t, srv.Env(), "--model", t.TempDir(), "--output", out,
		"--channel", "training=s3://data/train", "--s3-endpoint", proxy)
	if code != 1 {
		t.Fatalf("exit code %d, want 1\n%s", code, stderr)
	}
	noTrace(t, stderr)
	re := regexp.MustCompile(`sagefit local: channel training: s3://data/train/big\.npy: transfer cut off after \d+ of 1048576 bytes \(tried 3 times\): unexpected EOF`)
	if !re.MatchString(stderr) {
		t.Errorf("stderr:\n%s", stderr)
	}
	dir := filepath.Join(out, ".s3", "training")
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.Name() == "big.npy" || strings.Contains(e.Name(), ".s3part-") {
			t.Errorf("%s left in %s after a cut-off transfer", e.Name(), dir)
		}
	}
	if _, err := os.Lstat(filepath.Join(out, "input", "data", "training")); err == nil {
		t.Error("the channel was linked although its download failed")
	}
}

// TestLocalS3Checkpoints: checkpoints go up after a run (complete ones
// only) and come back down before the next, which resumes from them; a
// stopped run uploads the checkpoint it wrote on SIGTERM.
func TestLocalS3Checkpoints(t *testing.T) {
	srv := s3test.Start(t)
	fx := fixture.Make(t, "seed", "--rows", "200", "--no-fit")
	srv.CreateBucket(t, "ckpt")
	args := func(out string, epochs string) []string {
		return []string{"--model", filepath.Join(fx, "model"), "--channel", "training=" + filepath.Join(fx, "train"),
			"--hp", "epochs=" + epochs, "--checkpoint", "s3://ckpt/job", "--output", out}
	}

	// Run 1: 2 epochs, a checkpoint after the first; the base dir given
	// relative to the working folder (the job refused the relative
	// LocalPath written from it).
	out1 := t.TempDir()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(wd, out1)
	if err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runLocalS3(t, srv.Env(), args(rel, "2")...)
	if code != 0 {
		t.Fatalf("run 1: exit code %d\n%s", code, stderr)
	}
	cfg, _ := os.ReadFile(filepath.Join(out1, "input", "config", "checkpointconfig.json"))
	if !strings.Contains(string(cfg), `"S3Uri": "s3://ckpt/job"`) || !strings.Contains(string(cfg), `"LocalPath": "`+filepath.Join(out1, "checkpoints")+`"`) {
		t.Errorf("checkpointconfig.json: %s", cfg)
	}
	want := []string{"job/ckpt-000002-000000000/state.json", "job/ckpt-000002-000000000/state.json.sha256", "job/ckpt-000002-000000000/variables.bin"}
	if got := srv.Keys(t, "ckpt", ""); !slices.Equal(got, want) {
		t.Fatalf("after run 1: keys %v, want %v\n%s", got, want, stderr)
	}
	if !strings.Contains(stderr, "sagefit local: checkpoints: 3 files uploaded to s3://ckpt/job, 0 unchanged") {
		t.Errorf("run 1 stderr:\n%s", stderr)
	}
	// Run 1 again into its base dir, its prefix spelt as a folder: the
	// same prefix (refused as another, before).
	same := args(out1, "2")
	same[slices.Index(same, "s3://ckpt/job")] = "s3://ckpt/job/"
	if _, stderr, code := runLocalS3(t, srv.Env(), same...); code != 0 {
		t.Errorf("run 1 again, its prefix with a slash: exit %d\n%s", code, stderr)
	}
	// A checkpoint being written when the upload runs is not uploaded.
	os.MkdirAll(filepath.Join(out1, "checkpoints", ".tmp-ckpt-000009-000000000-1"), 0o755)
	os.WriteFile(filepath.Join(out1, "checkpoints", ".tmp-ckpt-000009-000000000-1", "variables.bin"), []byte("half"), 0o644)

	// Run 2, in a fresh base dir: 3 epochs, resumes after epoch 1.
	out2 := t.TempDir()
	stdout, stderr, code := runLocalS3(t, srv.Env(), args(out2, "3")...)
	if code != 0 {
		t.Fatalf("run 2: exit code %d\n%s", code, stderr)
	}
	for _, w := range []string{
		"sagefit local: checkpoints: 3 files from s3://ckpt/job into " + filepath.Join(out2, "checkpoints"),
		"sagefit: resuming from " + filepath.Join(out2, "checkpoints", "ckpt-000002-000000000") + " (epoch 2, step 0)",
		"sagefit local: checkpoints: 3 files uploaded to s3://ckpt/job, 3 unchanged",
	} {
		if !strings.Contains(stderr, w) {
			t.Errorf("run 2 stderr lacks %q:\n%s", w, stderr)
		}
	}
	if strings.Contains(stdout, "Epoch 1/3") || !strings.Contains(stdout, "Epoch 3/3") {
		t.Errorf("run 2 did not resume at epoch 2:\n%s", stdout)
	}
	want = append(want, "job/ckpt-000003-000000000/state.json", "job/ckpt-000003-000000000/state.json.sha256", "job/ckpt-000003-000000000/variables.bin")
	if got := srv.Keys(t, "ckpt", ""); !slices.Equal(got, want) {
		t.Fatalf("after run 2: keys %v, want %v", got, want)
	}

	// Run 3, stopped by SIGTERM mid-training: its stop checkpoint goes up,
	// and, as SageMaker uploads a stopped job's, its model and output data.
	srv.CreateBucket(t, "results")
	run3 := args(t.TempDir(), "100000")
	run3[len(run3)-1] = "s3://results/runs"
	cmd := exec.Command(binary, append([]string{"local", "--job-name", "stopped"}, run3...)...)
	cmd.Env = srv.Env()
	_, se := stopAfter(t, cmd, "Epoch 3/")
	if code := cmd.ProcessState.ExitCode(); code == 0 {
		t.Errorf("exit code 0 after SIGTERM")
	}
	if !strings.Contains(se, "sagefit local: the job was stopped: uploading what it wrote") {
		t.Errorf("run 3 does not say it uploads the stopped job's outputs:\n%s", se)
	}
	if keys := srv.Keys(t, "results", ""); !slices.Equal(keys, []string{"runs/stopped/output/model.tar.gz", "runs/stopped/output/output.tar.gz"}) {
		t.Errorf("run 3 uploaded %v, want its model and output data", keys)
	} else if names := untarNames(t, srv.Get(t, "results", keys[0])); !slices.Contains(names, "1/saved_model.pb") {
		t.Errorf("the stopped job's model.tar.gz holds %v, no model", names)
	}
	m := regexp.MustCompile(`sagefit: checkpoint \S+/(ckpt-\d+-\d+)`).FindAllStringSubmatch(se, -1)
	if m == nil {
		t.Fatalf("run 3 wrote no checkpoint:\n%s", se)
	}
	last := m[len(m)-1][1]
	if got := srv.Keys(t, "ckpt", "job/"+last+"/"); len(got) != 3 {
		t.Errorf("stop checkpoint %s not uploaded: %v\n%s", last, got, se)
	}
	if !strings.Contains(se, "sagefit local: checkpoints: ") || !strings.Contains(se, "uploaded to s3://ckpt/job") {
		t.Errorf("run 3 stderr:\n%s", se)
	}
	for _, k := range srv.Keys(t, "ckpt", "") {
		if strings.Contains(k, ".tmp-") {
			t.Errorf("incomplete checkpoint uploaded: %s", k)
		}
	}

	// Run 4, into run 1's base dir with another prefix: refused (it
	// resumed from run 1's checkpoints and uploaded them to the other).
	other := args(out1, "3")
	other[slices.Index(other, "s3://ckpt/job")] = "s3://ckpt/other"
	_, stderr, code = runLocalS3(t, srv.Env(), other...)
	want4 := "checkpoints: " + filepath.Join(out1, "checkpoints") + " holds the checkpoints of --checkpoint s3://ckpt/job, not of s3://ckpt/other"
	if code != 1 || !strings.Contains(stderr, want4) {
		t.Errorf("run 4: exit %d, stderr lacks %q:\n%s", code, want4, stderr)
	}
	if got := srv.Keys(t, "ckpt", "other/"); len(got) != 0 {
		t.Errorf("run 4 uploaded %v", got)
	}
}
