package runtime

import (
	"context"
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
	defer func() {
		if r := recover(); r != nil {
			stack := debug.Stack()
			crash := filepath.Join(paths.OutputDataDir(), "sagefit-crash.txt")
			_ = os.MkdirAll(filepath.Dir(crash), 0o755)
			_ = os.WriteFile(crash, fmt.Appendf(nil, "%v\n\n%s", r, stack), 0o644)
			code = fail(o.Stderr, paths, fmt.Errorf("internal error in sagefit: %v (details in %s)", r, crash))
		}
	}()
	if _, err := Train(ctx, o); err != nil {
		return fail(o.Stderr, paths, err)
	}
	return 0
}

func fail(stderr io.Writer, paths sagemaker.Paths, err error) int {
	reason := Reason(err)
	fmt.Fprintf(stderr, "sagefit: %s\n", reason)
	if werr := sagemaker.WriteFailure(paths.FailureFile(), reason); werr != nil {
		fmt.Fprintf(stderr, "sagefit: could not write the failure file: %v\n", werr)
	}
	return 1
}

// Reason turns an error into the one sentence a user reads as the job's
// FailureReason.
func Reason(err error) string {
	var stop *sagemaker.StopError
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
	if job.LearningRate > 0 {
		if err := m.SetLearningRate(job.LearningRate); err != nil {
			return nil, fmt.Errorf("hyperparameter %q: %w", HPLearningRate, err)
		}
	}
	train, err := openChannel(job.TrainChannel, meta, job.TensorFiles)
	if err != nil {
		return nil, err
	}
	defer train.close()
	var val *channelData
	if job.ValChannel != nil {
		if val, err = openChannel(*job.ValChannel, meta, job.TensorFiles); err != nil {
			return nil, err
		}
		defer val.close()
	}

	var group Group
	if len(env.Hosts) > 1 {
		hostAddrs := lookupEnv(o.Environ, distributed.EnvHostAddrs)
		if group, err = joinGRPC(ctx, job, meta.Fingerprint, hostAddrs, o.Stderr); err != nil {
			return nil, err
		}
		defer group.Close()
		if err := broadcastVariables(ctx, m, group); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(o.Stderr, "sagefit: host %s (rank %d of %d) training %s on channel %q: %d examples, batch %d, %d epochs\n",
		env.CurrentHost, env.Rank, len(env.Hosts), job.ModelDir, job.TrainChannel.Name, train.ds.Len(), job.BatchSize, job.Epochs)

	f := &fitter{job: job, model: m, group: group, train: train, val: val, out: o.Stdout, terminal: o.Terminal}
	hist, err := f.run(ctx)
	if err != nil {
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
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
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
