package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sagefit/sagefit/data"
	"github.com/sagefit/sagefit/distributed"
	"github.com/sagefit/sagefit/internal/hostlist"
	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/model/tf"
	"github.com/sagefit/sagefit/runtime/callbacks"
	"github.com/sagefit/sagefit/runtime/checkpoint"
	"github.com/sagefit/sagefit/runtime/fit"
	"github.com/sagefit/sagefit/runtime/input"
	"github.com/sagefit/sagefit/runtime/job"
	"github.com/sagefit/sagefit/runtime/launch"
	"github.com/sagefit/sagefit/runtime/report"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// Options are what the process hands to a training run.
type Options struct {
	Base     string   // SageMaker base dir; empty: SAGEMAKER_BASE_DIR or /opt/ml
	Environ  []string // the process environment (SM_* variables)
	Stdout   io.Writer
	Stderr   io.Writer
	Terminal bool // stdout is a terminal: draw progress bars
	// Exec re-runs this program as one more training process of this
	// host (argv, e.g. [/usr/local/bin/sagefit train]); empty: never more
	// than one process (see job.HPProcessesPerHost).
	Exec []string
	// Args are the train command's own arguments. It takes none (the job
	// comes through /opt/ml); any given (SageMaker's ContainerArguments, a
	// flag) is refused, not dropped.
	Args []string

	failure string // the failure file Main writes; a stop writes it early
}

// Result says where a finished run put its outputs.
type Result struct {
	ModelDir    string // empty on ranks other than 0
	HistoryPath string
	PlotPath    string
	TimingPath  string // timing.json: throughput and start-up, for benchmarks
	History     *report.History
}

// Main runs a training job the way SageMaker expects of a training image:
// on any error the reason goes to the failure file (the first 1024
// characters become the job's FailureReason) and the exit code is non-zero.
// It never lets a panic escape as a Go trace.
func Main(ctx context.Context, o Options) (code int) {
	if o.Stdout == nil {
		o.Stdout = os.Stdout
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.Base == "" {
		o.Base = sagemaker.DefaultBase(o.Environ)
	}
	paths := sagemaker.Paths{Base: o.Base}
	failure := paths.FailureFile()
	if f, _ := sagemaker.LookupEnv(o.Environ, launch.EnvFailureFile); f != "" {
		failure = f // a worker: its launcher picks the host's reason
		finish := launch.GuardWorker(o.Environ, f, paths.FailureFile())
		defer func() { finish(code) }()
	} else if err := os.Remove(failure); err == nil {
		// The first failure of a run is the one that counts, but a file
		// there at the start is an earlier run's (a reused /opt/ml): kept,
		// it stood beside a job that succeeded and hid the reason of one
		// that failed.
		fmt.Fprintf(o.Stderr, "sagefit: removed %s, left by an earlier run in this folder\n", failure)
	}
	defer func() {
		if r := recover(); r != nil {
			stack := debug.Stack()
			crash := filepath.Join(paths.OutputDataDir(), crashFile)
			_ = os.MkdirAll(filepath.Dir(crash), 0o755)
			_ = os.WriteFile(crash, fmt.Appendf(nil, "%v\n\n%s", r, stack), 0o644)
			code = fail(o.Stderr, failure, fmt.Errorf("internal error in sagefit: %v (details in %s)", r, crash))
		}
	}()
	if len(o.Args) > 0 {
		return fail(o.Stderr, failure, fmt.Errorf("arguments %q given to sagefit train are refused: the job's hyperparameters, channels and hosts reach it through %s/input/config alone; give the container no arguments beyond SageMaker's train (ContainerArguments, or an entrypoint that adds some)", o.Args, o.Base))
	}
	env, err := loadEnv(o)
	if err != nil {
		return fail(o.Stderr, failure, err)
	}
	if len(o.Exec) > 0 && !launch.IsWorker(o.Environ) {
		p, err := launch.WorkersPerHost(env, o.Environ, o.Stderr)
		if err != nil {
			return fail(o.Stderr, failure, err)
		}
		if p > 1 {
			spec := launch.Spec{Exec: o.Exec, Base: o.Base, Environ: o.Environ, Stdout: o.Stdout, Stderr: o.Stderr}
			if err := launch.Processes(ctx, spec, env, p); err != nil {
				return fail(o.Stderr, failure, err)
			}
			return 0
		}
	}
	o.failure = failure
	res, err := train(ctx, o, env)
	if err != nil {
		code := fail(o.Stderr, failure, err)
		if nj := (*notJoined)(nil); errors.As(err, &nj) {
			declineJoin(ctx, nj.job, o.Environ, o.Stderr, nj.err)
		}
		return code
	}
	// A stop that came after training had no step left to end (the last
	// validation of several processes, the model's write): the job is
	// whole, and the process that wrote the model says it saw the stop.
	if cause := context.Cause(ctx); cause != nil && res.ModelDir != "" {
		fmt.Fprintf(o.Stderr, "sagefit: %v after training ended: the model is written whole, and the job ends as finished\n", cause)
	}
	return 0
}

// The files sagefit writes in the job's output data folder.
const (
	historyFile = "history.json"
	timingFile  = "timing.json"
	plotFile    = "loss.png"
	crashFile   = "sagefit-crash.txt"
)

// writable makes dir where it is missing and checks a file can be made in it.
func writable(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".sagefit-write-check-")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

// replaceable checks that the folder the model goes to is empty or holds a
// model sagefit wrote (an earlier run's, in a reused base folder: replaced,
// and said so) and nothing else.
func replaceable(dir string, log io.Writer) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) || err == nil && len(entries) == 0 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("the model folder %s: %w", dir, err)
	}
	var names []string
	if _, err := os.Stat(filepath.Join(dir, model.ExtraDir, model.MetadataFile)); err == nil {
		// An earlier run's model, with files of the user's beside it or in
		// its variables folder: those are not replaced without a word.
		if names, err = notSavedModelFiles(dir, entries); err != nil {
			return fmt.Errorf("the model folder %s: %w", dir, err)
		}
		if len(names) == 0 {
			fmt.Fprintf(log, "sagefit: the model an earlier run wrote to %s will be replaced\n", dir)
			return nil
		}
	} else {
		for _, e := range entries {
			names = append(names, e.Name())
		}
	}
	return fmt.Errorf("the model folder %s holds files sagefit did not write (%s), which writing the model would remove; move them, or write the model elsewhere (hyperparameter %q)",
		dir, hostlist.Abbrev(names, "files"), job.HPModelVersion)
}

// savedModelTop is what a SavedModel sagefit writes holds at its top
// (assets and assets.extra are the model's own; variables is checked file
// by file).
var savedModelTop = map[string]bool{"saved_model.pb": true, "fingerprint.pb": true, "variables": true, "assets": true, model.ExtraDir: true}

// notSavedModelFiles names the files of a model folder sagefit wrote that
// are not a SavedModel's.
func notSavedModelFiles(dir string, entries []os.DirEntry) ([]string, error) {
	var names []string
	for _, e := range entries {
		if !savedModelTop[e.Name()] || e.Name() == "variables" && !e.IsDir() {
			names = append(names, e.Name())
		}
	}
	vars, err := os.ReadDir(filepath.Join(dir, "variables"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
		return nil, err
	}
	for _, e := range vars {
		shard, _ := filepath.Match("variables.data-?????-of-?????", e.Name())
		if !shard && e.Name() != "variables.index" {
			names = append(names, filepath.Join("variables", e.Name()))
		}
	}
	return names, nil
}

func fail(stderr io.Writer, failure string, err error) int {
	if errors.As(err, new(*sagemaker.Written)) {
		return 1 // said and written where it happened (a stop, before the model)
	}
	reason := sagemaker.Reason(err)
	fmt.Fprintf(stderr, "sagefit: %s\n", reason)
	if werr := sagemaker.WriteFailure(failure, reason); werr != nil {
		fmt.Fprintf(stderr, "sagefit: could not write the failure file: %v\n", werr)
	}
	return 1
}

// loadEnv reads the job under o.Base, as this process's worker view when
// a host's launcher started it, and checks the processes-per-host setting.
func loadEnv(o Options) (*sagemaker.Env, error) {
	base := o.Base
	if base == "" {
		base = sagemaker.DefaultBase(o.Environ)
	}
	env, err := sagemaker.Load(base, o.Environ)
	if err != nil {
		return nil, err
	}
	if err := launch.WorkerView(env, o.Environ); err != nil {
		return nil, err
	}
	if _, err := launch.ProcessesPerHost(env); err != nil {
		return nil, err
	}
	return env, nil
}

// Train runs one host's part of the job described by the SageMaker
// environment under o.Base.
func Train(ctx context.Context, o Options) (*Result, error) {
	env, err := loadEnv(o)
	if err != nil {
		return nil, err
	}
	return train(ctx, o, env)
}

// train runs one host's (or one worker's) part of the job env describes:
// load the model, resume, open the channels, join the other processes, run
// the fit loop, and (rank 0) write the model and outputs.
func train(ctx context.Context, o Options, env *sagemaker.Env) (_ *Result, failed error) {
	j, err := job.New(env)
	if err != nil {
		return nil, err
	}
	joining := false
	defer func() {
		// A host of several that fails before it joins (its own channel's
		// bad file) tells the others why, once its failure file is written
		// (Main): they waited out their connect timeout, then failed in
		// words about a host that never came. Not on a stop: every host has
		// one.
		if failed != nil && !joining && len(env.Hosts) > 1 && ctx.Err() == nil {
			failed = &notJoined{err: failed, job: j}
		}
	}()
	if env.Rank == 0 {
		for _, why := range slices.Concat(env.Warnings(), j.Unused(len(env.Hosts))) { // env.Hosts: every training process
			fmt.Fprintf(o.Stderr, "sagefit: warning: %s\n", why)
		}
	}
	if j.Session.IntraOpThreads == 0 && env.NumCPUs > 0 {
		j.Session.IntraOpThreads = env.NumCPUs
	}
	if j.Session.IntraOpThreads == 0 {
		j.Session.IntraOpThreads = goruntime.NumCPU()
	}
	// No GPU on this host (SM_NUM_GPUS, else /dev/nvidia*, else nvidia-smi):
	// TensorFlow is not asked to look for one.
	j.Session.NoGPUs = env.NumGPUs == 0
	loadStart := time.Now()
	m, err := tf.Load(j.ModelDir, j.Session)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	loadTook := time.Since(loadStart)
	meta := m.Meta()
	if meta.TestStepRefused != "" && (j.ValChannel != nil || j.ValidationSplit > 0) {
		given := fmt.Sprintf("hyperparameter %q", job.HPValSplit)
		if j.ValChannel != nil {
			given = fmt.Sprintf("channel %q", j.ValChannel.Name)
		}
		return nil, fmt.Errorf("the job validates (%s), but the model was exported without a test step, as its test step could not be traced (%s), and fit fails on validation data the same way; give the model a test_step that runs on its validation batches and export it again, or train without validation data",
			given, strings.TrimSuffix(meta.TestStepRefused, "."))
	}
	if len(env.Hosts) > 1 && len(meta.SynchronizedBatchNorm) > 0 {
		return nil, fmt.Errorf("layer %s uses BatchNormalization(synchronized=True), whose batch statistics would need an all-reduce inside every step, which sagefit does not do; on %d training processes each would normalize with its own share of the batch only: export the model with synchronized=False (sagefit averages the moving statistics over hosts) or train on one host",
			strings.Join(meta.SynchronizedBatchNorm, ", "), len(env.Hosts))
	}
	if len(env.Hosts) > 1 && len(meta.LocalOptimizers) > 0 {
		return nil, fmt.Errorf("the model's train_step applies optimizer %s itself, besides the compiled one: sagefit all-reduces the gradients it hands the compiled optimizer only, so on %d training processes each would update those variables with its own share of the batch and they would drift apart; hand all gradients to self.optimizer, or train on one process (one host, sagefit_processes_per_host=1)",
			strings.Join(meta.LocalOptimizers, ", "), len(env.Hosts))
	}
	if name := meta.AmbiguousSparse(); len(env.Hosts) > 1 && name != "" {
		return nil, fmt.Errorf("several of the model's variables are named %s and one of them is an Embedding's rows, which %d training processes gather, but the model's export (by an earlier sagefit) does not say which; export the model again with this sagefit, or train on one process",
			name, len(env.Hosts))
	}
	for _, name := range slices.Sorted(maps.Keys(meta.LossReductions)) {
		reduction := meta.LossReductions[name]
		switch {
		case len(env.Hosts) == 1:
		case reduction == "sum":
			return nil, fmt.Errorf("the loss of output %s is a sum over the batch (reduction \"sum\" or None): on %d training processes sagefit weighs each one's gradient by its rows, which gives one process's numbers for a mean over the batch, not for a sum (each step would move the weights 1/%d as far); compile with the default reduction, \"sum_over_batch_size\", or train on one process",
				name, len(env.Hosts), len(env.Hosts))
		case env.Rank == 0:
			fmt.Fprintf(o.Stderr, "sagefit: warning: the loss of output %s is reduced by %q, not a mean over the batch: on %d training processes sagefit weighs each one's gradient by its rows, so the numbers differ a little from one process's (as MirroredStrategy's do)\n", name, reduction, len(env.Hosts))
		}
	}
	if len(env.Hosts) > 1 && len(meta.OwnMetrics) > 0 && env.Rank == 0 {
		what := "metric " + meta.OwnMetrics[0] + " is a class"
		if len(meta.OwnMetrics) > 1 {
			what = "metrics " + strings.Join(meta.OwnMetrics, ", ") + " are classes"
		}
		fmt.Fprintf(o.Stderr, "sagefit: warning: %s of the model's own: on %d training processes sagefit sums each metric's state over them, right for totals and counts (Keras's own metrics keep those), wrong for a state that is no sum (a running maximum, a last value), and so for callbacks that watch it\n",
			what, len(env.Hosts))
	}
	if len(env.Hosts) > 1 && len(meta.ClippedSparseGradients) > 0 && env.Rank == 0 {
		fmt.Fprintf(o.Stderr, "sagefit: warning: the gradient of %s is sparse (an Embedding's rows) and the optimizer clips gradients: on %d training processes sagefit sums it as a dense tensor before clipping, where Keras clips its rows before they are summed (a row looked up twice counts twice), so the numbers differ a little from one process's; train on one process for Keras's exactly\n",
			strings.Join(meta.ClippedSparseGradients, ", "), len(env.Hosts))
	}
	if len(meta.UntrainedVariables) > 0 && env.Rank == 0 {
		fmt.Fprintf(o.Stderr, "sagefit: warning: variables %s get no gradient from the loss and are not trained (fit leaves them as they are too, with the same warning); freeze them (trainable=False) or give their output a loss\n",
			hostlist.Abbrev(meta.UntrainedVariables, "variables"))
	}
	if len(meta.Unknown) > 0 && env.Rank == 0 {
		fmt.Fprintf(o.Stderr, "sagefit: warning: %s has metadata this sagefit does not read (%s): the model was exported by a newer sagefit Python package than this image's, and what it asks for there is not done; use the matching image, or export with this image's version\n",
			filepath.Join(j.ModelDir, model.ExtraDir, model.MetadataFile), strings.Join(meta.Unknown, ", "))
	}
	if len(meta.WrittenTables) > 0 && env.Rank == 0 {
		shared := ""
		if len(env.Hosts) > 1 {
			shared = fmt.Sprintf("; each of the %d training processes writes its own copy and the first one's is saved", len(env.Hosts))
		}
		fmt.Fprintf(o.Stderr, "sagefit: warning: the train or test step writes lookup table %s: the model sagefit writes holds its contents after the last step (a callback that puts back the best epoch's weights leaves it as it is), but checkpoints do not carry it (a resumed job starts it from the exported contents)%s\n",
			strings.Join(meta.WrittenTables, ", "), shared)
	}
	if len(meta.StatefulRandomOps) > 0 && env.Rank == 0 && len(env.Hosts) == 1 && j.StepsPerExecution > 1 {
		fmt.Fprintf(o.Stderr, "sagefit: warning: hyperparameter %q is %d, and the train step draws random numbers with TensorFlow's stateful random ops %s (tf.nn.dropout, tf-keras's Dropout), which keep their state in the op: the K-step loop holds its own copy of them, which draws another sequence, so the numbers differ from fit's at one step per call (as Keras's own steps_per_execution does); %q \"auto\" keeps one step per call for such a step\n",
			job.HPStepsPerExec, j.StepsPerExecution, hostlist.Abbrev(meta.StatefulRandomOps, "ops"), job.HPStepsPerExec)
	}
	if looped := slices.DeleteFunc(slices.Clone(meta.StatefulRandomOps), func(n string) bool { return !strings.Contains(n, "/while/") }); len(looped) > 0 && meta.LegacyKeras && env.Rank == 0 {
		// Found by a probe, not understood: see the exporter's warning.
		fmt.Fprintf(o.Stderr, "sagefit: warning: the train step draws random numbers inside a loop with TensorFlow's stateful random ops %s (a tf-keras RNN cell's dropout), whose draws may differ from fit's: training is as random, its numbers not fit's to the bit (Keras 3's RNN layers keep their seed in a variable and match)\n",
			hostlist.Abbrev(looped, "ops"))
	}
	// Rank 0 resumes from the newest good checkpoint (SageMaker puts them
	// back in the checkpoint dir of a restarted job); the others get its
	// weights and position below.
	var ck *checkpoint.Loaded
	if env.Rank == 0 {
		if ck, err = checkpoint.Latest(j.CheckpointDir, meta.Fingerprint, o.Stderr); err != nil {
			return nil, err
		}
		if ck != nil {
			if err := fit.Resume(m, ck, j, len(env.Hosts)); err != nil {
				return nil, err
			}
			fmt.Fprintf(o.Stderr, "sagefit: resuming from %s (epoch %d, step %d)\n", ck.Path, ck.State.Epoch, ck.State.Step)
			if len(meta.StatefulRandomOps) > 0 {
				fmt.Fprintf(o.Stderr, "sagefit: warning: the train step draws random numbers with TensorFlow's stateful random ops %s, which keep their state in the op, not in a variable a checkpoint carries: the resumed job draws their sequence from its start again, so its numbers differ from an uninterrupted run's (Keras 3's own layers keep theirs in variables)\n",
					hostlist.Abbrev(meta.StatefulRandomOps, "ops"))
			}
		}
	}
	if j.LearningRate > 0 && ck == nil {
		if err := m.SetLearningRate(j.LearningRate); err != nil {
			return nil, fmt.Errorf("hyperparameter %q: %w", job.HPLearningRate, err)
		}
	}
	if j.LearningRate > 0 && ck != nil {
		fmt.Fprintf(o.Stderr, "sagefit: warning: hyperparameter %q is not applied: training goes on from the checkpoint with the learning rate it holds (the one this hyperparameter set when the job first started, unless a schedule or callback changed it since)\n", job.HPLearningRate)
	}
	// Pipe mode streams are spooled to the job's storage volume, not /tmp.
	inOpts := input.Options{Files: j.TensorFiles, PipeTensors: j.PipeTensors, Pipe: data.PipeOptions{
		SpoolDir: filepath.Join(env.Paths.InputDir(), "sagefit-spool"), OpenTimeout: j.PipeTimeout, IdleTimeout: j.PipeTimeout}}
	// A host's channels are the same for each of its processes: its first
	// says what it finds there (unused files, a ContentType, no shard).
	inOpts.Warn = o.Stderr
	if env.LocalRank > 0 {
		inOpts.Warn = io.Discard
	}
	trainOpts := inOpts
	trainOpts.ClassWeight = j.ClassWeight // class_weight weighs the training rows only, as in Keras
	train, err := input.Open(j.TrainChannel, env.Paths, meta, trainOpts)
	if err != nil {
		return nil, err
	}
	defer train.Close()
	var val *input.Channel
	switch {
	case j.ValChannel != nil:
		valOpts := inOpts
		valOpts.Validates = true
		if val, err = input.Open(*j.ValChannel, env.Paths, meta, valOpts); err != nil {
			return nil, err
		}
		defer val.Close()
	case j.ValidationSplit > 0:
		if train, val, err = train.SplitValidation(j.ValidationSplit); err != nil {
			return nil, err
		}
	}

	var group fit.Group
	trained := false // the fit loop ended without a failure
	if len(env.Hosts) > 1 {
		joining = true // a failed join tells the others itself
		if group, err = joinGRPC(ctx, j, meta.Fingerprint, o.Environ, o.Stderr); err != nil {
			return nil, err
		}
		// Ticks come late by a little under load: a gap of 2 s at least.
		stalls := watchStalls(time.Second, max(j.PeerTimeout, 2*time.Second))
		defer stalls.close()
		defer func() {
			if r := recover(); r != nil { // rank 0's hosts must not read its panic as the job done
				failed = fmt.Errorf("internal error: %v", r)
				abandon(ctx, group, failed)
				leaveGroup(group, failed)
				panic(r)
			}
			if !trained { // after training, rank 0's failure reaches the others waiting for it (leaveGroup)
				abandon(ctx, group, failed)
			}
			failed = stalls.explain(leaveGroup(group, failed), j.PeerTimeout)
		}()
		if err := sameJobConfig(ctx, group, j); err != nil {
			return nil, err
		}
		if err := fit.BroadcastVariables(ctx, m, group); err != nil {
			return nil, err
		}
	}
	if env.Rank == 0 {
		// Found before training, not once it is done: a folder the model
		// or the outputs cannot be written to (SM_MODEL_DIR naming a file).
		// After the join, so the other hosts end at once, on rank 0 gone,
		// not at their connect timeout.
		for _, out := range []struct{ what, dir string }{{"the model", env.ModelDir}, {"the job's output data", env.OutputDataDir}} {
			if err := writable(out.dir); err != nil {
				return nil, fmt.Errorf("%s cannot be written to %s: %w", out.what, out.dir, err)
			}
		}
		if err := replaceable(j.OutputModelDir(), o.Stderr); err != nil {
			return nil, err
		}
	}
	from, err := fit.AgreeResumePoint(ctx, ck, group, meta.MetricStateSize)
	if err != nil {
		return nil, err
	}
	examples := fmt.Sprintf("%d examples", train.Examples())
	if train.Streams() {
		examples = "examples streamed each epoch (Pipe mode)"
	}
	// The first epoch trained: initial_epoch's next, or a later one a
	// checkpoint resumes in. An initial_epoch the checkpoint's job did not
	// have (not a restart of the same job) is said to be passed over.
	first := max(j.InitialEpoch+1, from.Epoch)
	if ck != nil && first > j.InitialEpoch+1 && first <= j.Epochs && (ck.State.InitialEpoch == nil || *ck.State.InitialEpoch != j.InitialEpoch) {
		fmt.Fprintf(o.Stderr, "sagefit: warning: hyperparameter %q is %d, and training goes on from the checkpoint, in epoch %d (as Keras's BackupAndRestore resumes past fit's initial_epoch)\n", job.HPInitialEpoch, j.InitialEpoch, first)
	}
	epochs := fmt.Sprintf("%d epochs", j.Epochs)
	switch {
	case first > j.Epochs:
		epochs = fmt.Sprintf("no epoch of %d: the checkpoint trained them all", j.Epochs)
	case first == j.Epochs && j.Epochs > 1: // as fit's epoch lines count them
		epochs = fmt.Sprintf("epoch %d of %d", j.Epochs, j.Epochs)
	case first > 1:
		epochs = fmt.Sprintf("epochs %d to %d of %d", first, j.Epochs, j.Epochs)
	case j.Epochs == 1:
		epochs = "1 epoch"
	}
	fmt.Fprintf(o.Stderr, "sagefit: host %s (rank %d of %d) training %s on channel %q: %s, batch %d, %s\n",
		env.CurrentHost, env.Rank, len(env.Hosts), j.ModelDir, j.TrainChannel.Name, examples, j.BatchSize, epochs)

	// JobTensorBoard: asked of the job, not of the model; as SageMaker
	// Debugger's hook does in AWS's TensorFlow images, the metrics go to
	// TensorBoard.
	// tf-keras's TensorBoard looks for a schedule on the compiled
	// optimizer itself, where a LossScaleOptimizer has none.
	schedule := !meta.LearningRateAssignable && !(meta.LegacyKeras && strings.HasPrefix(meta.Optimizer, "LossScaleOptimizer"))
	cbs, err := callbacks.New(meta.Callbacks, callbacks.Options{TFKeras: meta.LegacyKeras, JobTensorBoard: env.TensorBoardOutput, Schedule: schedule,
		OutputDataDir: env.OutputDataDir, TensorBoardDir: env.TensorBoardDir,
		Writer: env.Rank == 0, Host: env.CurrentHost, Log: o.Stderr,
		Taken: []string{historyFile, timingFile, plotFile, crashFile}})
	if err != nil {
		return nil, &fit.Agreed{Err: err} // every host refuses the model's callbacks alike
	}
	loop := &fit.Loop{Job: j, Model: m, Group: group, Train: train, Val: val, Out: o.Stdout, Log: o.Stderr, Terminal: o.Terminal, Callbacks: cbs}
	hist, err := loop.Run(ctx, from)
	if v := (*model.ValueOutOfRange)(nil); errors.As(err, &v) {
		// Bounded: a FastFile channel is read from S3, and the failure
		// waits on it; on several hosts, within half the peer timeout, so
		// the others hear why before they time out on this host.
		limit := 30 * time.Second
		if group != nil {
			limit = min(limit, j.PeerTimeout/2)
		}
		if where := locate(ctx, limit, v, train, val); where != "" {
			err = fmt.Errorf("%w; %s", err, where)
		}
	}
	in := (*fit.Interrupted)(nil)
	// What fails after this is rank 0's outputs, which leaveGroup tells the
	// others waiting for it, or a stop, every host's.
	trained = err == nil || errors.As(err, &in)
	if in != nil {
		return nil, stopped(err, in, env.Rank == 0 && hist != nil, m, j.OutputModelDir(), o.failure, func(res *Result) error {
			return writeOutputs(res, env.OutputDataDir, hist, loop, loadTook, o.Stderr)
		}, o.Stderr)
	}
	if err != nil {
		return nil, err
	}
	res := &Result{History: hist}
	if env.Rank != 0 {
		return res, nil
	}
	res.ModelDir = j.OutputModelDir()
	if err := m.Save(res.ModelDir); err != nil {
		return nil, err
	}
	if err := writeOutputs(res, env.OutputDataDir, hist, loop, loadTook, o.Stderr); err != nil {
		return nil, err
	}
	plot := ""
	if res.PlotPath != "" {
		plot = ", loss curve to " + res.PlotPath
	}
	fmt.Fprintf(o.Stderr, "sagefit: model written to %s, history to %s%s\n", res.ModelDir, res.HistoryPath, plot)
	return res, nil
}

// stopped ends a stopped job (SageMaker's stop, MaxRuntime, a spot
// interruption) in SageMaker's two minutes before the kill, and returns its
// error. Each process writes the stop's reason to its failure file (where
// given: the error then says so, and Main writes none) before it leaves:
// the others wait for rank 0 at the final barrier. The process that writes
// the job's outputs (writer) writes the finished epochs' history before it
// (small; a resumed job writes it whole), and the model after it, as
// SageMaker's own algorithms do (a stopped job's model is uploaded and can
// be served), which a large model's write may not finish in time. The
// model is written only where its weights are those a job ending there
// writes; a failure is a warning, the stop stays the reason.
func stopped(err error, in *fit.Interrupted, writer bool, m *tf.Model, dir, failure string, outputs func(*Result) error, log io.Writer) error {
	if writer {
		res := &Result{}
		if err := outputs(res); err != nil {
			fmt.Fprintf(log, "sagefit: warning: the history so far was not written: %v\n", err)
		} else {
			fmt.Fprintf(log, "sagefit: the history of the epochs finished before the stop written to %s\n", res.HistoryPath)
		}
	}
	if failure != "" {
		fail(log, failure, err)
		err = &sagemaker.Written{Err: err}
	}
	switch {
	case !writer:
	case in.Unfinished != nil:
		fmt.Fprintf(log, "sagefit: warning: no model written at the stop: %v\n", in.Unfinished)
	default:
		if err := m.Save(dir); err != nil {
			fmt.Fprintf(log, "sagefit: warning: no model written at the stop: %v\n", err)
		} else {
			fmt.Fprintf(log, "sagefit: the model at the stop (the weights a job ending there writes) written to %s\n", dir)
		}
	}
	return err
}

// writeOutputs writes the job's output data (history.json, timing.json, the
// loss curve) into dir and names them in res. A loss curve that cannot be
// drawn is a warning on log, not a failure: the history is written.
func writeOutputs(res *Result, dir string, hist *report.History, loop *fit.Loop, loadTook time.Duration, log io.Writer) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("output data dir: %w", err)
	}
	res.HistoryPath = filepath.Join(dir, historyFile)
	if err := hist.WriteJSON(res.HistoryPath); err != nil {
		return err
	}
	res.TimingPath = filepath.Join(dir, timingFile)
	timing := loop.Timing()
	timing.Startup.ModelLoadSeconds = loadTook.Seconds()
	if err := writeTiming(res.TimingPath, timing); err != nil {
		return err
	}
	if hist.Epochs() == 0 { // stopped in its first epoch: nothing to draw
		return nil
	}
	res.PlotPath = filepath.Join(dir, plotFile)
	if err := report.WriteLossPlot(hist, res.PlotPath); err != nil {
		fmt.Fprintf(log, "sagefit: warning: no loss curve: %v\n", err)
		res.PlotPath = ""
	}
	return nil
}

// locate says where in the channels the value a step failed on first is,
// or that none holds it, searching for at most limit.
func locate(ctx context.Context, limit time.Duration, v *model.ValueOutOfRange, channels ...*input.Channel) string {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	nowhere := true // every channel searched, the value in none
	for _, c := range channels {
		where, searched := c.Where(ctx, v)
		if where != "" {
			return where
		}
		nowhere = nowhere && searched
	}
	switch {
	case !nowhere:
		return ""
	case v.Label:
		return "no label holds that value: the loss that failed reads labels the model computes, not the data's"
	}
	// A Keras optimizer's own lookup out of range (RMSprop's centered
	// momentum on an Embedding's rows, which fails in fit too) was blamed
	// on the data's ids (an optimizer probe).
	return "no input or label holds that id: the lookup that failed reads ids the model or its optimizer computes, not the data's"
}

// abandon tells the job's other hosts why this one fails of its own once
// they met and before training ended (its Pipe stream cut, a label out of
// range, a model folder it cannot write): their collectives fail with its
// reason. They said only that its link closed, and the reason was in this
// host's failure file alone (two probes). A failure of the group's own (a
// peer lost, a mismatch) travels already; one every host reaches together
// (fit.Agreed) is each host's to say, and a stop is every host's.
func abandon(ctx context.Context, g fit.Group, err error) {
	var pe *distributed.PeerError
	var in *fit.Interrupted
	var agreed *fit.Agreed
	if g == nil || err == nil || ctx.Err() != nil || errors.As(err, &pe) || errors.As(err, &in) || errors.As(err, &agreed) {
		return
	}
	if a, ok := g.(interface{ Abandon(error) }); ok {
		a.Abandon(err)
	}
}

// leaveGroup closes the job's group. A host other than rank 0 waits there
// for rank 0 to finish the job's model and outputs, and fails where rank 0
// was lost or failed meanwhile (it ended as if the job had succeeded); where the job
// already failed on rank 0's loss it does not wait (a frozen rank 0 held it
// for a connection timeout).
func leaveGroup(g fit.Group, failed error) error {
	if pe := (*distributed.PeerError)(nil); errors.As(failed, &pe) && pe.Rank == 0 {
		if s, ok := g.(interface{ SkipFinalWait() }); ok {
			s.SkipFinalWait()
		}
	}
	if s, ok := g.(interface{ Failed(error) }); ok && failed != nil && g.Rank() == 0 {
		s.Failed(failed) // the others, waiting for rank 0, fail too
	}
	if err := g.Close(); err != nil && failed == nil {
		return err
	}
	return failed
}

// writeTiming writes timing.json (schema fit.Timing, documented in the
// README): throughput per epoch and overall, step-time percentiles, input
// wait and all-reduce shares, start-up, so benchmark harnesses need not
// scrape logs.
func writeTiming(path string, t fit.Timing) error {
	raw, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o644)
}
