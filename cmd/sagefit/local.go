package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/sagefit/sagefit/internal/s3sync"
	"github.com/sagefit/sagefit/model/tf"
	"github.com/sagefit/sagefit/runtime/launch"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// pairs collects repeated NAME=VALUE flags.
type pairs map[string]string

func (p pairs) String() string {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k+"="+p[k])
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}

func (p pairs) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want NAME=VALUE, got %q", s)
	}
	if old, dup := p[k]; dup {
		return fmt.Errorf("%s is given twice (%s=%s and %s=%s); give it once", k, k, old, k, v)
	}
	p[k] = v
	return nil
}

// local lays out a SageMaker base dir from flags and runs the same code path
// as `train` in it. Channels, the output and checkpoints may be s3:// URLs
// (see localS3).
func local(args []string, stdout, stderr io.Writer) int {
	if tf.SignalledBeforeStart() {
		fmt.Fprintln(stderr, "sagefit local: stopped by SIGTERM before it started the job")
		return 1
	}
	fs := flag.NewFlagSet("local", flag.ContinueOnError)
	fs.SetOutput(stderr)
	modelDir := fs.String("model", "", "training SavedModel written by sagefit.export, a folder or s3://bucket/prefix (becomes the \"model\" channel)")
	output := fs.String("output", "", "SageMaker base dir to create (model/, output/ land there; an earlier run's are emptied first, as every SageMaker job starts with them empty; checkpoints/ stays); or s3://bucket/prefix: upload model.tar.gz and output.tar.gz to <prefix>/<job-name>/output/ as SageMaker does, from a temporary base dir; default: a new temporary folder")
	instance := fs.String("instance-type", "local", "instance type to report in resourceconfig.json")
	hosts := fs.Int("hosts", 1, "simulate a job of N hosts: N processes on 127.0.0.1..N, one base dir each under --output")
	jobName := fs.String("job-name", "", "training job name (TRAINING_JOB_NAME; names the S3 output folder); default with an s3:// --output: sagefit-local-<timestamp>")
	checkpoint := fs.String("checkpoint", "", "s3://bucket/prefix, SageMaker's checkpoint_s3_uri: downloaded into <base>/checkpoints before training, new and changed checkpoints uploaded after it (also after a failure or stop)")
	s3Endpoint := fs.String("s3-endpoint", "", "endpoint URL of an S3-compatible store (path-style requests); default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, else AWS")
	s3Cache := fs.String("s3-cache", "", "folder that s3:// channels are downloaded into, one folder each (default <base>/.s3); when reused, only changed objects are fetched")
	image := fs.String("image", "", "run the job in this training image (docker run IMAGE train), one container per host on a network of the job's own, /opt/ml mounted from each host's base dir; the image must be on the Docker engine already (nothing is pulled)")
	gpus := fs.String("gpus", "", "with --image: the GPUs each container gets (docker run --gpus): all, a count, or device=0,1")
	dockerCLI := fs.String("docker", "docker", "with --image: the docker client to run")
	channels := pairs{}
	hps := pairs{}
	modes := pairs{}
	fs.Var(channels, "channel", "NAME=DIR or NAME=s3://bucket/prefix: a data channel (repeatable), e.g. training=./data")
	fs.Var(hps, "hp", "KEY=VALUE: a hyperparameter (repeatable), e.g. epochs=10")
	fs.Var(modes, "input-mode", "NAME=MODE: File (default), FastFile or Pipe for a channel")
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if *hosts < 1 {
		fmt.Fprintf(stderr, "sagefit local: --hosts must be at least 1\n")
		return 2
	}
	if *image == "" && *gpus != "" {
		fmt.Fprintf(stderr, "sagefit local: --gpus needs --image (without an image, sagefit uses the GPUs it finds)\n")
		return 2
	}
	if *image == "" && *dockerCLI != "docker" {
		fmt.Fprintf(stderr, "sagefit local: --docker needs --image (without an image, no docker client runs)\n")
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sagefit local: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *modelDir != "" {
		if dir, dup := channels["model"]; dup {
			fmt.Fprintf(stderr, "sagefit local: --model %s and --channel model=%s both name the model channel; give one\n", *modelDir, dir)
			return 2
		}
		channels["model"] = *modelDir
	}
	plan, err := planS3(channels, *output, *checkpoint, *jobName)
	if err != nil {
		fmt.Fprintf(stderr, "sagefit local: %v\n", err)
		return 2
	}
	if plan.empty() && *s3Endpoint != "" {
		fmt.Fprintf(stderr, "sagefit local: --s3-endpoint applies to s3:// channels, output or checkpoints, and this run has none\n")
		return 2
	}
	if len(plan.channels) == 0 && *s3Cache != "" {
		fmt.Fprintf(stderr, "sagefit local: --s3-cache holds s3:// channels, and this run has none\n")
		return 2
	}
	if u, err := url.Parse(*s3Endpoint); *s3Endpoint != "" && (err != nil || u.Host == "" || u.Scheme != "http" && u.Scheme != "https") {
		// Found at the first request, in the SDK's words, it was.
		fmt.Fprintf(stderr, "sagefit local: --s3-endpoint %q is not a URL such as http://127.0.0.1:9000 or https://s3.example.com\n", *s3Endpoint)
		return 2
	}
	if plan.jobName != "" {
		os.Setenv("TRAINING_JOB_NAME", plan.jobName) // read by train and by every host
	}
	for name, dir := range channels {
		if _, ok := plan.channels[name]; ok {
			continue // filled in by the download
		}
		// Checked before any base dir is made: a wrong argument leaves
		// nothing behind that looks like a job.
		abs, err := sagemaker.ChannelFolder(dir)
		if err != nil {
			fmt.Fprintf(stderr, "sagefit local: channel %s: %v\n", name, err)
			return 2
		}
		channels[name] = abs
	}
	base := *output
	if base != "" {
		// Absolute: the job's config names folders under it
		// (checkpointconfig.json's LocalPath), which must be.
		abs, err := filepath.Abs(base)
		if err != nil {
			fmt.Fprintf(stderr, "sagefit local: --output: %v\n", err)
			return 2
		}
		base = abs
	}
	if base == "" || plan.output != nil {
		dir, err := os.MkdirTemp("", "sagefit-local-")
		if err != nil {
			fmt.Fprintf(stderr, "sagefit local: %v\n", err)
			return 1
		}
		base = dir
	}
	spec := sagemaker.LocalSpec{
		Channels:        channels,
		Hyperparameters: hps,
		InputModes:      modes,
		InstanceType:    *instance,
		Log:             stderr,
	}
	for _, name := range slices.Sorted(maps.Keys(modes)) {
		if modes[name] == string(sagemaker.Pipe) && channels[name] != "" { // the folder went unused, then a wait for FIFOs nobody wrote
			fmt.Fprintf(stderr, "sagefit local: channel %q is in Pipe mode: %s is not read; the job reads each epoch's stream from the FIFO input/data/%s_<n> of the host's base dir, which SageMaker makes and sagefit local does not: make it and write the stream there (README: Channel data)\n", name, channels[name], name)
		}
	}
	run := func() int {
		if *image != "" {
			return launch.Containers(*hosts, base, spec, launch.Image{Docker: *dockerCLI, Image: *image, GPUs: *gpus}, stdout, stderr)
		}
		if *hosts > 1 {
			self, err := os.Executable()
			if err != nil {
				fmt.Fprintf(stderr, "sagefit local: %v\n", err)
				return 1
			}
			return launch.Hosts(*hosts, base, spec, []string{self, "train"}, stdout, stderr)
		}
		if err := sagemaker.WriteLocal(base, spec); err != nil {
			fmt.Fprintf(stderr, "sagefit local: %v\n", err)
			return 1
		}
		fmt.Fprintf(stderr, "sagefit local: SageMaker base dir %s\n", base)
		return train(stdout, stderr, base, nil)
	}
	if plan.empty() {
		return run()
	}
	plan.endpoint, plan.cache = *s3Endpoint, *s3Cache
	return localS3(plan, base, *hosts, channels, run, stderr)
}

// s3Plan is what a local run moves to and from S3.
type s3Plan struct {
	channels   map[string]s3sync.URL // channel name -> prefix to download
	output     *s3sync.URL           // SageMaker's output_path, or nil
	checkpoint *s3sync.URL           // SageMaker's checkpoint_s3_uri, or nil
	jobName    string
	endpoint   string // --s3-endpoint
	cache      string // --s3-cache
}

func (p s3Plan) empty() bool { return len(p.channels) == 0 && p.output == nil && p.checkpoint == nil }

// jobNameRE is what SageMaker accepts as a training job name.
var jobNameRE = regexp.MustCompile(`^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$`)

// planS3 reads the s3:// URLs among the flags.
func planS3(channels map[string]string, output, checkpoint, jobName string) (s3Plan, error) {
	p := s3Plan{channels: map[string]s3sync.URL{}, jobName: jobName}
	for name, src := range channels {
		if !s3sync.IsURL(src) {
			continue
		}
		if err := sagemaker.CheckChannelName(name); err != nil { // before a download makes a folder of that name
			return p, err
		}
		u, err := s3sync.Parse(src)
		if err != nil {
			return p, fmt.Errorf("channel %s: %v", name, err)
		}
		p.channels[name] = u
	}
	if s3sync.IsURL(output) {
		u, err := s3sync.Parse(output)
		if err != nil {
			return p, fmt.Errorf("--output: %v", err)
		}
		p.output = &u
		if p.jobName == "" {
			p.jobName = "sagefit-local-" + strings.ReplaceAll(time.Now().UTC().Format("2006-01-02-15-04-05.000"), ".", "-")
		}
	}
	if checkpoint != "" {
		if !s3sync.IsURL(checkpoint) {
			return p, fmt.Errorf("--checkpoint %q: want an s3:// URL (SageMaker's checkpoint_s3_uri); checkpoints are written to <base>/checkpoints either way", checkpoint)
		}
		u, err := s3sync.Parse(checkpoint)
		if err != nil {
			return p, fmt.Errorf("--checkpoint: %v", err)
		}
		p.checkpoint = &u
	}
	if p.jobName != "" && !jobNameRE.MatchString(p.jobName) {
		return p, fmt.Errorf("--job-name %q is not a SageMaker job name: 1 to 63 letters, digits and '-', starting and ending with a letter or digit", p.jobName)
	}
	return p, nil
}

// localS3 runs a local job whose channels, output or checkpoints are in
// S3, as SageMaker would: s3:// channels are downloaded (into the cache,
// <base>/.s3/<channel> by default) and become the channels' folders, the
// checkpoint prefix is downloaded into the checkpoint dir and named in
// checkpointconfig.json, run trains; then the checkpoints are uploaded
// (whatever the outcome) and, after a successful run, model.tar.gz and
// output.tar.gz go to <output>/<job-name>/output/. With an s3:// output the
// base dir is temporary and removed once everything is uploaded.
func localS3(plan s3Plan, base string, hosts int, channels map[string]string, run func() int, stderr io.Writer) int {
	// Rank 0's base dir: what the model, output and checkpoints come from.
	hostBases := []string{base}
	if hosts > 1 {
		hostBases = hostBases[:0]
		for i := range hosts {
			hostBases = append(hostBases, filepath.Join(base, fmt.Sprintf("algo-%d", i+1)))
		}
	}
	rank0 := sagemaker.Paths{Base: hostBases[0]}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "sagefit local: %v\n", err)
		if hosts == 1 {
			_ = sagemaker.WriteFailure(rank0.FailureFile(), err.Error())
		}
		if plan.output != nil {
			fmt.Fprintf(stderr, "sagefit local: the job's files are in %s\n", base)
		}
		return 1
	}
	var opts []s3sync.Option
	if plan.endpoint != "" {
		opts = append(opts, s3sync.WithEndpoint(plan.endpoint))
	}

	// Before training: downloads, stoppable by SIGTERM or Ctrl-C.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	client, err := s3sync.New(ctx, opts...)
	if err != nil {
		stop()
		return fail(err)
	}
	// Where results go must exist before an hour of training, not after.
	for _, u := range []*s3sync.URL{plan.output, plan.checkpoint} {
		if u == nil {
			continue
		}
		if err := client.CheckBucket(ctx, *u); err != nil {
			stop()
			return fail(err)
		}
	}
	cache := plan.cache
	if cache == "" {
		cache = filepath.Join(base, ".s3")
	}
	if cache, err = filepath.Abs(cache); err != nil {
		stop()
		return fail(err)
	}
	if err := claimCache(cache, plan.cache == ""); err != nil {
		stop()
		return fail(err)
	}
	for _, name := range slices.Sorted(maps.Keys(plan.channels)) {
		src, dir := plan.channels[name], filepath.Join(cache, name)
		start := time.Now()
		st, err := client.Download(ctx, src, dir, s3sync.DownloadOptions{Mirror: true})
		if err != nil {
			stop()
			return fail(fmt.Errorf("channel %s: %w", name, err))
		}
		fmt.Fprintf(stderr, "sagefit local: channel %s: %s from %s in %s into %s%s\n",
			name, count(st.Objects, "file"), src, time.Since(start).Round(time.Millisecond), dir, transferNote(st))
		channels[name] = dir
	}
	var ckptDirs []string
	if plan.checkpoint != nil {
		for _, hb := range hostBases {
			p := sagemaker.Paths{Base: hb}
			dir := p.DefaultCheckpointDir()
			ckptDirs = append(ckptDirs, dir)
			if err := writeCheckpointConfig(p, dir, *plan.checkpoint); err != nil {
				stop()
				return fail(err)
			}
		}
		// Only rank 0 reads and writes checkpoints.
		// Named before the download: one cut short leaves the prefix's files.
		if err := claimCheckpointDir(ckptDirs[0], *plan.checkpoint); err != nil {
			stop()
			return fail(err)
		}
		st, err := client.Download(ctx, *plan.checkpoint, ckptDirs[0], s3sync.DownloadOptions{AllowEmpty: true, Skip: s3sync.Hidden})
		if err != nil {
			stop()
			return fail(fmt.Errorf("checkpoints: %w", err))
		}
		fmt.Fprintf(stderr, "sagefit local: checkpoints: %s from %s into %s%s\n",
			count(st.Objects, "file"), plan.checkpoint, ckptDirs[0], transferNote(st))
	}
	stop()

	code := run()

	// After training: uploads, stoppable by a (second) SIGTERM or Ctrl-C.
	ctx, stop = signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var errs []error
	if plan.checkpoint != nil {
		st, err := client.UploadDir(ctx, ckptDirs[0], *plan.checkpoint, s3sync.UploadOptions{Skip: s3sync.Hidden})
		if err != nil {
			errs = append(errs, fmt.Errorf("checkpoints: %w", err))
		} else {
			fmt.Fprintf(stderr, "sagefit local: checkpoints: %s uploaded to %s, %d unchanged\n", count(st.Objects, "file"), plan.checkpoint, st.Skipped)
		}
	}
	// SageMaker uploads a stopped job's model and output data too (its
	// model, written at the stop, can be served): every host stopped (each
	// writes its reason before it leaves); one that failed of its own, or
	// left no reason (killed), got the others stopped.
	stopped := code != 0
	for _, hb := range hostBases {
		reason, _ := os.ReadFile(sagemaker.Paths{Base: hb}.FailureFile())
		stopped = stopped && sagemaker.IsStop(strings.TrimSpace(string(reason)))
	}
	if plan.output != nil && (code == 0 || stopped) {
		if stopped {
			fmt.Fprintf(stderr, "sagefit local: the job was stopped: uploading what it wrote, as SageMaker does after a stop\n")
		}
		out := plan.output.Join(plan.jobName, "output")
		for _, a := range []struct{ name, dir string }{
			{"model.tar.gz", rank0.ModelDir()},
			{"output.tar.gz", rank0.OutputDataDir()},
		} {
			dst := out.Join(a.name)
			n, err := client.UploadTarGz(ctx, a.dir, dst)
			if err != nil {
				errs = append(errs, err)
				break
			}
			fmt.Fprintf(stderr, "sagefit local: uploaded %s (%s)\n", dst, size(n))
		}
	} else if plan.output != nil {
		fmt.Fprintf(stderr, "sagefit local: the job failed: nothing uploaded to %s\n", plan.output.Join(plan.jobName, "output"))
	}
	if len(errs) > 0 {
		if code == 0 {
			return fail(errors.Join(errs...))
		}
		for _, err := range errs {
			fmt.Fprintf(stderr, "sagefit local: %v\n", err)
		}
	}
	if plan.output != nil {
		if code == 0 {
			os.RemoveAll(base)
		} else {
			fmt.Fprintf(stderr, "sagefit local: the job's files are in %s\n", base)
		}
	}
	return code
}

// writeCheckpointConfig writes input/config/checkpointconfig.json as
// SageMaker does for a job with checkpoint_s3_uri.
func writeCheckpointConfig(p sagemaker.Paths, dir string, uri s3sync.URL) error {
	if err := os.MkdirAll(p.ConfigDir(), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(map[string]string{"LocalPath": dir, "S3Uri": uri.String()}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(p.ConfigDir(), sagemaker.CheckpointConfigFile), append(b, '\n'), 0o644)
}

// transferNote sums up what a download skipped, removed and verified.
func transferNote(st s3sync.Stats) string {
	var notes []string
	if st.Bytes > 0 {
		notes = append(notes, size(st.Bytes))
	}
	if st.Skipped > 0 {
		notes = append(notes, fmt.Sprintf("%d unchanged", st.Skipped))
	}
	if st.Removed > 0 {
		notes = append(notes, fmt.Sprintf("%d stale removed", st.Removed))
	}
	if len(st.Verified) > 0 {
		var v []string
		for _, alg := range slices.Sorted(maps.Keys(st.Verified)) {
			v = append(v, fmt.Sprintf("%s %d", alg, st.Verified[alg]))
		}
		notes = append(notes, "verified "+strings.Join(v, ", "))
	}
	if len(notes) == 0 {
		return ""
	}
	return " (" + strings.Join(notes, "; ") + ")"
}

func count(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func size(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// cacheMarker marks a folder as sagefit's S3 cache: what is in it mirrors
// S3, and files S3 no longer has are removed from it.
const cacheMarker = ".sagefit-s3-cache"

// claimCache makes dir the S3 cache, or refuses it where it holds files
// sagefit did not put there: a cache mirrors S3, so every file of a
// channel's folder that S3 lacks is removed (--s3-cache ~ emptied
// ~/training and ~/model of a user's own files). The default cache, in the
// job's base dir, is sagefit's own whatever it holds.
func claimCache(dir string, own bool) error {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("--s3-cache %s: %w", dir, err)
	}
	if _, err := os.Stat(filepath.Join(dir, cacheMarker)); err == nil {
		return nil
	}
	if len(entries) > 0 && !own {
		return fmt.Errorf("--s3-cache %s holds files sagefit did not put there (%s, ...), and a cache mirrors S3, removing what S3 lacks: give an empty or new folder, or one an earlier --s3-cache used (marked %s; a cache of an older sagefit has no mark: empty it)", dir, entries[0].Name(), cacheMarker)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--s3-cache %s: %w", dir, err)
	}
	return os.WriteFile(filepath.Join(dir, cacheMarker), []byte("sagefit's S3 cache: mirrors S3, removing files S3 lacks\n"), 0o644)
}

// checkpointURIFile, in a local job's checkpoint dir, names the
// --checkpoint prefix the dir was last filled from (hidden: not uploaded).
const checkpointURIFile = ".sagefit-checkpoint-uri"

// claimCheckpointDir refuses a checkpoint dir that holds another prefix's
// checkpoints, and names uri as the prefix it is filled from: SageMaker
// fills it from checkpoint_s3_uri alone, and a reused --output with another
// --checkpoint resumed from the first prefix's checkpoints and uploaded
// them to the second. A prefix is compared as a folder (s3://b/ckpt and
// s3://b/ckpt/ are one).
func claimCheckpointDir(dir string, uri s3sync.URL) error {
	this := uri.Join().String()
	marker := filepath.Join(dir, checkpointURIFile)
	last := this
	if b, err := os.ReadFile(marker); err == nil {
		last = strings.TrimSpace(string(b))
		if u, err := s3sync.Parse(last); err == nil {
			last = u.Join().String()
		}
	}
	if last != this {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), ".") {
				return fmt.Errorf("checkpoints: %s holds the checkpoints of --checkpoint %s, not of %s, which a job would resume from and upload there: give --checkpoint %s again, or another --output", dir, last, this, last)
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("checkpoints: %w", err)
	}
	if err := os.WriteFile(marker, []byte(this+"\n"), 0o644); err != nil {
		return fmt.Errorf("checkpoints: %w", err)
	}
	return nil
}
