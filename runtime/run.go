package runtime

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"strings"
	"unicode"

	"github.com/sagefit/sagefit/data"
	"github.com/sagefit/sagefit/distributed"
	"github.com/sagefit/sagefit/model"
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
	// than one process (see HPProcessesPerHost).
	Exec []string
}

// Result says where a finished run put its outputs.
type Result struct {
	ModelDir    string // empty on ranks other than 0
	HistoryPath string
	PlotPath    string
	TimingPath  string // per-epoch wall time, for benchmarks
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
	base := o.Base
	if base == "" {
		base = sagemaker.DefaultBase(o.Environ)
	}
	paths := sagemaker.Paths{Base: base}
	failure := paths.FailureFile()
	if f := lookupEnv(o.Environ, envFailureFile); f != "" {
		failure = f // a worker: its launcher picks the host's reason
	}
	defer func() {
		if r := recover(); r != nil {
			stack := debug.Stack()
			crash := filepath.Join(paths.OutputDataDir(), "sagefit-crash.txt")
			_ = os.MkdirAll(filepath.Dir(crash), 0o755)
			_ = os.WriteFile(crash, fmt.Appendf(nil, "%v\n\n%s", r, stack), 0o644)
			code = fail(o.Stderr, failure, fmt.Errorf("internal error in sagefit: %v (details in %s)", r, crash))
		}
	}()
	o.Base = base
	env, err := sagemaker.Load(base, o.Environ)
	if err != nil {
		return fail(o.Stderr, failure, err)
	}
	if len(o.Exec) > 0 && lookupEnv(o.Environ, sagemaker.EnvWorker) == "" {
		p, err := workersPerHost(env, o.Environ, o.Stderr)
		if err != nil {
			return fail(o.Stderr, failure, err)
		}
		if p > 1 {
			return launch(ctx, o, env, p)
		}
	}
	if _, err := train(ctx, o, env); err != nil {
		return fail(o.Stderr, failure, err)
	}
	return 0
}

func fail(stderr io.Writer, failure string, err error) int {
	reason := Reason(err)
	fmt.Fprintf(stderr, "sagefit: %s\n", reason)
	if werr := sagemaker.WriteFailure(failure, reason); werr != nil {
		fmt.Fprintf(stderr, "sagefit: could not write the failure file: %v\n", werr)
	}
	return 1
}

// Reason turns an error into the one sentence a user reads as the job's
// FailureReason.
func Reason(err error) string {
	var stopped *StoppedError
	var stop *sagemaker.StopError
	if errors.As(err, &stopped) {
		msg := stopped.Error()
		return strings.ToUpper(msg[:1]) + msg[1:] + "."
	}
	if errors.As(err, &stop) {
		return "Training stopped: " + stop.Error() + "."
	}
	msg := strings.TrimSpace(err.Error())
	if msg == "" {
		return "Training failed."
	}
	// Capitalise a leading word, not a leading path or quoted name.
	if word, _, _ := strings.Cut(msg, " "); strings.IndexFunc(word, func(r rune) bool { return !unicode.IsLetter(r) }) < 0 {
		msg = strings.ToUpper(msg[:1]) + msg[1:]
	}
	if !strings.HasSuffix(msg, ".") {
		msg += "."
	}
	return msg
}

// Train runs one host's part of the job described by the SageMaker
// environment under o.Base.
func Train(ctx context.Context, o Options) (*Result, error) {
	base := o.Base
	if base == "" {
		base = sagemaker.DefaultBase(o.Environ)
	}
	env, err := sagemaker.Load(base, o.Environ)
	if err != nil {
		return nil, err
	}
	return train(ctx, o, env)
}

// train runs one host's (or one worker's) part of the job env describes.
func train(ctx context.Context, o Options, env *sagemaker.Env) (*Result, error) {
	job, err := NewJob(env)
	if err != nil {
		return nil, err
	}
	if job.Session.IntraOpThreads == 0 && env.NumCPUs > 0 {
		job.Session.IntraOpThreads = env.NumCPUs
	}
	if job.Session.IntraOpThreads == 0 {
		job.Session.IntraOpThreads = goruntime.NumCPU()
	}
	m, err := model.Load(job.ModelDir, job.Session)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	meta := m.Meta()
	// Rank 0 resumes from the newest good checkpoint (SageMaker puts them
	// back in the checkpoint dir of a restarted job); the others get its
	// weights and position below.
	var ck *loadedCheckpoint
	if env.Rank == 0 {
		if ck, err = latestCheckpoint(job.CheckpointDir, meta.Fingerprint, o.Stderr); err != nil {
			return nil, err
		}
		if ck != nil {
			if err := resumeVariables(m, ck, job, len(env.Hosts)); err != nil {
				return nil, err
			}
			fmt.Fprintf(o.Stderr, "sagefit: resuming from %s (epoch %d, step %d)\n", ck.path, ck.state.Epoch, ck.state.Step)
		}
	}
	if job.LearningRate > 0 && ck == nil {
		if err := m.SetLearningRate(job.LearningRate); err != nil {
			return nil, fmt.Errorf("hyperparameter %q: %w", HPLearningRate, err)
		}
	}
	// Pipe mode streams are spooled to the job's storage volume, not /tmp.
	pipeOpts := data.PipeOptions{SpoolDir: filepath.Join(env.Paths.InputDir(), "sagefit-spool"), OpenTimeout: job.PipeTimeout, IdleTimeout: job.PipeTimeout}
	dataDir := env.Paths.DataDir()
	train, err := openChannel(job.TrainChannel, dataDir, meta, job.TensorFiles, job.PipeTensors, pipeOpts)
	if err != nil {
		return nil, err
	}
	defer train.close()
	var val *channelData
	if job.ValChannel != nil {
		if val, err = openChannel(*job.ValChannel, dataDir, meta, job.TensorFiles, job.PipeTensors, pipeOpts); err != nil {
			return nil, err
		}
		defer val.close()
	}

	var group Group
	if len(env.Hosts) > 1 {
		hostAddrs := lookupEnv(o.Environ, distributed.EnvHostAddrs)
		if group, err = joinGRPC(ctx, job, meta.Fingerprint, hostAddrs, lookupEnv(o.Environ, envListenFD), o.Stderr); err != nil {
			return nil, err
		}
		defer group.Close()
		if err := broadcastVariables(ctx, m, group); err != nil {
			return nil, err
		}
	}
	from, err := resumeFrom(ctx, ck, group, meta.MetricStateSize)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Stderr, "sagefit: host %s (rank %d of %d) training %s on channel %q: %d examples, batch %d, %d epochs\n",
		env.CurrentHost, env.Rank, len(env.Hosts), job.ModelDir, job.TrainChannel.Name, train.examples(), job.BatchSize, job.Epochs)

	// A stop request (SIGTERM) ends training after the current step, with a
	// checkpoint; it does not cancel the step itself, nor the collectives
	// that bring the other hosts to the same stop.
	stop, requestStop := context.WithCancelCause(ctx)
	defer requestStop(nil)
	f := &fitter{job: job, model: m, group: group, train: train, val: val, out: o.Stdout, log: o.Stderr,
		terminal: o.Terminal, stop: stop, requestStop: requestStop}
	hist, err := f.run(context.WithoutCancel(ctx), from)
	if err != nil {
		var stopped *StoppedError
		if errors.As(err, &stopped) {
			return nil, err
		}
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
			return nil, fmt.Errorf("%w (%v)", cause, err)
		}
		return nil, err
	}
	res := &Result{History: hist}
	if env.Rank != 0 {
		return res, nil
	}
	res.ModelDir = job.OutputModelDir()
	if err := m.Save(res.ModelDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(env.OutputDataDir, 0o755); err != nil {
		return nil, fmt.Errorf("output data dir: %w", err)
	}
	res.HistoryPath = filepath.Join(env.OutputDataDir, "history.json")
	if err := hist.WriteJSON(res.HistoryPath); err != nil {
		return nil, err
	}
	res.TimingPath = filepath.Join(env.OutputDataDir, "timing.json")
	if err := writeTiming(res.TimingPath, f.timing); err != nil {
		return nil, err
	}
	res.PlotPath = filepath.Join(env.OutputDataDir, "loss.png")
	if err := report.WriteLossPlot(hist, res.PlotPath); err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Stderr, "sagefit: model written to %s, history to %s, loss curve to %s\n", res.ModelDir, res.HistoryPath, res.PlotPath)
	return res, nil
}

func lookupEnv(environ []string, key string) string {
	v, _ := lookupEnvOK(environ, key)
	return v
}

// lookupEnvOK also says whether key is set at all (it may be set empty).
func lookupEnvOK(environ []string, key string) (string, bool) {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// writeTiming records how long each epoch took, so benchmark harnesses can
// compare throughput without scraping logs.
func writeTiming(path string, t timing) error {
	raw, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, raw, 0o644)
}

// resumeVariables checks a checkpoint fits this job and loads its weights.
func resumeVariables(m *model.Model, ck *loadedCheckpoint, job *Job, hosts int) error {
	st := ck.state
	if st.Step > 0 && (st.BatchSize != job.BatchSize || st.Hosts != hosts || st.Seed != job.Seed || st.Shuffle != job.Shuffle) {
		return fmt.Errorf("checkpoint %s stopped mid-epoch with batch_size %d, %d training processes (hosts x processes per host), seed %d, shuffle %v, but this job has batch_size %d, %d training processes, seed %d, shuffle %v; resuming mid-epoch needs the same settings (or remove the checkpoint)",
			ck.path, st.BatchSize, st.Hosts, st.Seed, st.Shuffle, job.BatchSize, hosts, job.Seed, job.Shuffle)
	}
	vars, err := splitVariables(m, ck.vars)
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", ck.path, err)
	}
	if err := m.AssignVariables(vars); err != nil {
		return fmt.Errorf("checkpoint %s: %w", ck.path, err)
	}
	return nil
}

// resumeFrom tells every host where training starts: rank 0 decided (from
// its checkpoint, if any) and broadcasts it. Rank 0 carries the summed
// metric state of a resumed epoch; the others start theirs at zero.
func resumeFrom(ctx context.Context, ck *loadedCheckpoint, g Group, stateSize int) (resumePoint, error) {
	type header struct {
		Epoch, Step int
		State       []float64
		History     *report.History
	}
	h := header{Epoch: 1}
	if ck != nil {
		h = header{Epoch: ck.state.Epoch, Step: ck.state.Step, State: ck.state.MetricState, History: ck.hist}
	}
	if g != nil {
		raw, err := json.Marshal(h)
		if err != nil {
			return resumePoint{}, err
		}
		size := make([]byte, 8)
		binary.LittleEndian.PutUint64(size, uint64(len(raw)))
		if err := g.Broadcast(ctx, size, 0); err != nil {
			return resumePoint{}, fmt.Errorf("broadcast resume point: %w", err)
		}
		if g.Rank() != 0 {
			raw = make([]byte, binary.LittleEndian.Uint64(size))
		}
		if err := g.Broadcast(ctx, raw, 0); err != nil {
			return resumePoint{}, fmt.Errorf("broadcast resume point: %w", err)
		}
		if g.Rank() != 0 {
			h = header{}
			if err := json.Unmarshal(raw, &h); err != nil {
				return resumePoint{}, fmt.Errorf("resume point from rank 0: %w", err)
			}
			if h.Step > 0 {
				h.State = make([]float64, stateSize)
			}
		}
	}
	if h.Step > 0 && len(h.State) != stateSize {
		return resumePoint{}, fmt.Errorf("checkpoint metric state has %d values, the model %d", len(h.State), stateSize)
	}
	return resumePoint{epoch: h.Epoch, step: h.Step, metricState: h.State, history: h.History}, nil
}

// broadcastVariables makes every host start from rank 0's weights and
// optimizer state.
func broadcastVariables(ctx context.Context, m *model.Model, g Group) error {
	vars, err := m.ReadVariables()
	if err != nil {
		return err
	}
	var size int
	for _, v := range vars {
		size += len(v.Data)
	}
	// One buffer, one broadcast: the ring pipelines it in chunks.
	buf := make([]byte, 0, size)
	for _, v := range vars {
		buf = append(buf, v.Data...)
	}
	if err := g.Broadcast(ctx, buf, 0); err != nil {
		return fmt.Errorf("broadcast initial weights from host rank 0: %w", err)
	}
	if g.Rank() == 0 {
		return nil
	}
	for i := range vars {
		n := len(vars[i].Data)
		vars[i].Data, buf = buf[:n:n], buf[n:]
	}
	return m.AssignVariables(vars)
}
