package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/sagefit/sagefit/internal/hostlist"
	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/model/tf"
	"github.com/sagefit/sagefit/runtime/fit"
	"github.com/sagefit/sagefit/runtime/job"
)

// inspect loads a training SavedModel through libtensorflow, checks its
// contract and prints it; given a job's timing.json, it prints that as
// tables instead.
func inspect(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the contract metadata (or the timing.json given) as JSON")
	// --json may come after the path too (flag stops at the first
	// argument that is no flag).
	var paths []string
	for {
		if err := fs.Parse(args); err != nil {
			return flagExit(err)
		}
		if fs.NArg() == 0 {
			break
		}
		paths = append(paths, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(paths) != 1 {
		fmt.Fprint(stderr, "usage: sagefit inspect [--json] SAVEDMODEL|timing.json\n")
		return 2
	}
	path := paths[0]
	// A .json that is no folder (or is missing: the error names the file,
	// not a SavedModel) is a timing.json.
	if st, err := os.Stat(path); (err != nil || !st.IsDir()) && strings.HasSuffix(strings.ToLower(path), ".json") {
		return inspectTiming(path, *asJSON, stdout, stderr)
	}
	m, err := tf.Load(path, tf.Config{NoGPUs: true}) // inspecting needs no GPU
	if err != nil {
		fmt.Fprintf(stderr, "sagefit inspect: %v\n", err)
		return 1
	}
	defer m.Close()
	meta := m.Meta()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(meta); err != nil {
			fmt.Fprintf(stderr, "sagefit inspect: %v\n", err)
			return 1
		}
		return 0
	}
	lr, _ := m.LearningRate()
	fmt.Fprintf(stdout, "training SavedModel %s\n", m.Dir())
	fmt.Fprintf(stdout, "  contract       %s v%d (TensorFlow %s, Keras %s)\n", meta.Format, meta.ContractVersion, meta.TensorFlowVersion, meta.KerasVersion)
	for _, t := range meta.Inputs {
		fmt.Fprintf(stdout, "  input          %-20s %-8s %s\n", t.Name, t.DType, t.ShapeString())
	}
	for _, t := range meta.Targets {
		fmt.Fprintf(stdout, "  target         %-20s %-8s %s\n", t.Name, t.DType, t.ShapeString())
	}
	if len(meta.Targets) == 0 {
		fmt.Fprintf(stdout, "  target         none: compiled without a loss, trained on its inputs alone, as fit(x) trains it\n")
	}
	fmt.Fprintf(stdout, "  outputs        %s\n", strings.Join(meta.Outputs, ", "))
	for _, w := range meta.SampleWeights {
		fmt.Fprintf(stdout, "  weight         %-20s %-8s %s\n", w.Name, w.DType, w.ShapeString())
	}
	if meta.TestStepRefused != "" {
		fmt.Fprintf(stdout, "  test step      none, so no validation: %s\n", meta.TestStepRefused)
	}
	if meta.SampleWeightsRefused != "" {
		fmt.Fprintf(stdout, "  weights        none: %s\n", meta.SampleWeightsRefused)
	}
	fmt.Fprintf(stdout, "  metrics        %s\n", strings.Join(meta.Metrics, ", "))
	// The rate is a float32 variable: printed as float32, 0.05 and not
	// 0.05000000074505806.
	rate := strconv.FormatFloat(lr, 'g', -1, 32)
	if meta.LearningRateAssignable {
		fmt.Fprintf(stdout, "  optimizer      %s (learning rate %s; the learning_rate hyperparameter and ReduceLROnPlateau set it)\n", meta.Optimizer, rate)
	} else {
		fmt.Fprintf(stdout, "  optimizer      %s (learning rate from a schedule, %s now; not assignable)\n", meta.Optimizer, rate)
	}
	if meta.JITCompile {
		fmt.Fprintf(stdout, "  compiled       with XLA (jit_compile=True): each step signature is one XLA program\n")
	}
	fmt.Fprintf(stdout, "  gradients      %d floats over %d trainable variables\n", meta.GradientSize, len(meta.Gradients))
	if n := len(meta.UntrainedVariables); n > 0 {
		fmt.Fprintf(stdout, "  untrained      %d trainable variables the loss gives no gradient (%s): left as they are, as fit leaves them\n", n, hostlist.Abbrev(meta.UntrainedVariables, "variables"))
	}
	fmt.Fprintf(stdout, "  variables      %d (%s)\n", len(meta.Variables), variableKinds(meta.Variables))
	if len(meta.WrittenTables) > 0 {
		fmt.Fprintf(stdout, "  tables         %s, written by the steps (in the saved model, not in checkpoints)\n", strings.Join(meta.WrittenTables, ", "))
	}
	if n := len(meta.StatefulRandomOps); n > 0 {
		fmt.Fprintf(stdout, "  random ops     %d with their state in the op (%s): one step per call under steps_per_execution auto; a resumed job draws anew\n", n, hostlist.Abbrev(meta.StatefulRandomOps, "ops"))
	}
	fmt.Fprintf(stdout, "  fingerprint    %s\n", meta.Fingerprint)
	roles := make([]string, 0, len(meta.Signatures))
	for r := range meta.Signatures {
		roles = append(roles, r)
	}
	sort.Strings(roles)
	for _, r := range roles {
		fmt.Fprintf(stdout, "  signature      %-20s %s\n", r, meta.Signatures[r])
	}
	return 0
}

// inspectTiming prints a timing.json (fit.Timing) as a reader would want
// it: start-up, then a row per epoch and the totals; asJSON prints the
// file itself, once it is known to be one.
func inspectTiming(path string, asJSON bool, stdout, stderr io.Writer) int {
	raw, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(stderr, "sagefit inspect: %v\n", err)
		return 1
	}
	var t fit.Timing
	if err := json.Unmarshal(raw, &t); err != nil {
		fmt.Fprintf(stderr, "sagefit inspect: %s is not a timing.json sagefit wrote (a JSON object of version %d): %v\n", path, fit.TimingVersion, err)
		return 1
	}
	if t.Version == 0 {
		// timing.json has had a version since its schema was fixed; one
		// without is an older sagefit's (it had epoch_seconds) or another
		// file (a history.json, say).
		if len(t.EpochSeconds) > 0 {
			fmt.Fprintf(stderr, "sagefit inspect: %s is an older sagefit's timing.json, from before its schema had versions; this sagefit reads version %d\n", path, fit.TimingVersion)
		} else {
			fmt.Fprintf(stderr, "sagefit inspect: %s is not a timing.json sagefit wrote (it has no \"version\"); give it output/data/timing.json or a model folder\n", path)
		}
		return 1
	}
	if t.Version != fit.TimingVersion {
		fmt.Fprintf(stderr, "sagefit inspect: %s is timing.json version %d; this sagefit reads version %d\n", path, t.Version, fit.TimingVersion)
		return 1
	}
	if asJSON {
		stdout.Write(append(bytes.TrimSpace(raw), '\n'))
		return 0
	}
	fmt.Fprintf(stdout, "timing %s (version %d): %d training process(es), batch %d, %d steps in the last epoch, %d per call\n",
		path, t.Version, t.Hosts, t.BatchSize, t.StepsPerEpoch, t.StepsPerCall)
	if in := t.Inline; in != nil {
		where := "TensorFlow's inter-op pool"
		if in.CallingThread {
			where = "the calling thread"
		}
		fmt.Fprintf(stdout, "  steps ended running their ops in %s (timed both ways %d time(s), %d switch(es); the last time: %s in the pool, %s in the calling thread)\n",
			where, in.Probes, in.Switches, dur(in.PoolStepSeconds), dur(in.CallingThreadStepSeconds))
	}
	if t.Executor != "" {
		line := fmt.Sprintf("  steps ended on TensorFlow's %s executor", t.Executor)
		if t.ExecutorMoveSeconds > 0 {
			line += fmt.Sprintf(" (moved in %s, its first step included)", dur(t.ExecutorMoveSeconds))
		}
		if w := t.ExecutorWeighed; w != nil {
			verdict := "not worth the move"
			switch {
			case w.Move && t.Executor == job.ExecutorSingleThreaded:
				verdict = "worth the move"
			case w.Move:
				verdict = "worth the move, which failed (see the job's log)"
			case w.Worth:
				verdict = "worth the move on rank 0, not on every process"
			}
			line += fmt.Sprintf("; auto weighed %d steps left at %s each: %s", w.StepsLeft, dur(w.StepSeconds), verdict)
		}
		fmt.Fprintln(stdout, line)
	}
	s := t.Startup
	first := "first step"
	if s.FirstCallSteps > 1 {
		first = fmt.Sprintf("first call (%d steps)", s.FirstCallSteps)
	}
	if s.FirstStepEndUnix == 0 { // (first_call_steps came later in version 1: an older file has 0)
		fmt.Fprintf(stdout, "  start-up       no train step ended: %.2f s to Go's init (libraries), %.2f s model load\n", s.LibrariesSeconds, s.ModelLoadSeconds)
	} else {
		fmt.Fprintf(stdout, "  start-up       %.2f s to the end of the %s: %.2f s to Go's init (libraries), %.2f s model load, %.2f s more to the first step, %s %.2f s\n",
			s.ToFirstStepSeconds+s.FirstStepSeconds, first, s.LibrariesSeconds, s.ModelLoadSeconds,
			s.ToFirstStepSeconds-s.LibrariesSeconds-s.ModelLoadSeconds, first, s.FirstStepSeconds)
	}
	if len(t.AverageSeconds) > 0 {
		each := make([]string, len(t.AverageSeconds))
		for i, v := range t.AverageSeconds {
			each[i] = dur(v)
		}
		fmt.Fprintf(stdout, "  BatchNormalization statistics averaged over the hosts %d time(s): %s\n", len(t.AverageSeconds), strings.Join(each, ", "))
	}
	fmt.Fprintf(stdout, "  %-16s %9s %7s %12s %10s %10s %10s %10s %7s %7s\n",
		"", "seconds", "steps", "examples/s", "step mean", "p50", "p90", "p99", "input", "allred")
	row := func(name string, sp fit.Span) {
		d := sp.StepSeconds
		fmt.Fprintf(stdout, "  %-16s %9.2f %7d %12.0f %10s %10s %10s %10s %6.1f%% %6.1f%%\n",
			name, sp.Seconds, sp.Steps, sp.ExamplesPerSecond, dur(d.Mean), dur(d.P50), dur(d.P90), dur(d.P99),
			100*sp.InputWaitShare, 100*sp.AllReduceShare)
	}
	for _, e := range t.Epochs {
		row(fmt.Sprintf("epoch %d", e.Epoch), e.Span)
	}
	row("overall", t.Overall)
	if t.AfterFirstEpoch != nil { // the epochs after this run's first (a resumed or initial_epoch run's is not epoch 1)
		name := "after 1st epoch"
		if len(t.Epochs) > 0 {
			name = fmt.Sprintf("after epoch %d", t.Epochs[0].Epoch)
		}
		row(name, *t.AfterFirstEpoch)
	}
	return 0
}

// dur prints seconds with a unit that suits them.
func dur(s float64) string {
	switch {
	case s >= 1:
		return fmt.Sprintf("%.2fs", s)
	case s >= 1e-3:
		return fmt.Sprintf("%.2fms", s*1e3)
	}
	return fmt.Sprintf("%.1fµs", s*1e6)
}

// variableKinds counts the contract's variables by whose state they are,
// for example "4 model, 10 optimizer, 1 the train step's own".
func variableKinds(vars []model.VariableSpec) string {
	say := map[string]string{model.KindModel: "model", model.KindOptimizer: "optimizer", model.KindStep: "the train step's own", "": "of no kind"}
	var kinds []string
	counts := map[string]int{}
	for _, v := range vars {
		if counts[v.Kind] == 0 {
			kinds = append(kinds, v.Kind) // contract order: the model's first
		}
		counts[v.Kind]++
	}
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		name, ok := say[k]
		if !ok {
			name = k
		}
		parts[i] = fmt.Sprintf("%d %s", counts[k], name)
	}
	return strings.Join(parts, ", ")
}
