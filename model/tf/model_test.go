package tf_test

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sagefit/sagefit/data"
	"github.com/sagefit/sagefit/internal/fixture"
	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/model/tf"
)

func TestMain(m *testing.M) {
	code := m.Run()
	fixture.Cleanup()
	os.Exit(code)
}

func seedFixture(t testing.TB) string {
	return fixture.Make(t, "seed", "--rows", "256", "--no-fit", "--no-validation")
}

func load(t testing.TB, dir string) *tf.Model {
	t.Helper()
	m, err := tf.Load(dir, tf.Config{IntraOpThreads: 1, InterOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// batch reads rows [lo, hi) of the seed fixture's channel.
func batch(t testing.TB, fx string, lo, hi int) model.Batch {
	t.Helper()
	rows := make([]int, hi-lo)
	for i := range rows {
		rows[i] = lo + i
	}
	b := model.Batch{Rows: hi - lo, Tensors: map[string][]byte{}}
	for file, name := range map[string]string{"train.npy": "x", "labels.npy": "y"} {
		a, err := data.Open(filepath.Join(fx, "train", file))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(rows)*a.RowElems()*4)
		if err := a.Gather(buf, data.Float32, rows); err != nil {
			t.Fatal(err)
		}
		a.Close()
		b.Tensors[name] = buf
	}
	return b
}

// named keys a batch by the model's input and target names.
func named(m *tf.Model, b model.Batch) model.Batch {
	meta := m.Meta()
	return model.Batch{Rows: b.Rows, Tensors: map[string][]byte{
		meta.Inputs[0].Name:  b.Tensors["x"],
		meta.Targets[0].Name: b.Tensors["y"],
	}}
}

func floats(t testing.TB, v model.Variable) []float32 {
	t.Helper()
	f, err := v.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestLoadReportsContract(t *testing.T) {
	m := load(t, filepath.Join(seedFixture(t), "model"))
	meta := m.Meta()
	if meta.ContractVersion != model.ContractVersion || meta.GradientSize != 193 {
		t.Errorf("contract %d, gradient size %d", meta.ContractVersion, meta.GradientSize)
	}
	if got := strings.Join(meta.Metrics, ","); got != "loss,accuracy" {
		t.Errorf("metrics %s", got)
	}
	lr, err := m.LearningRate()
	if err != nil || math.Abs(lr-0.001) > 1e-9 {
		t.Errorf("learning rate %v, %v; want adam's 0.001", lr, err)
	}
}

// An export of contract version 1 (before weights per element and models
// without targets) still loads; one of version 0 does not.
func TestLoadReadsContractVersionOne(t *testing.T) {
	fx := seedFixture(t)
	for version, ok := range map[int]bool{1: true, 0: false} {
		dir := t.TempDir()
		fixture.EditedExport(t, filepath.Join(fx, "model"), dir, func(meta map[string]any) { meta["contract_version"] = version })
		m, err := tf.Load(dir, tf.Config{})
		if (err == nil) != ok {
			t.Errorf("version %d: %v", version, err)
		}
		if m != nil {
			m.Close()
		}
	}
}

// A SavedModel whose files were cut short (an interrupted copy) is refused
// saying so and what to do: TensorFlow's words were all ("Read less bytes
// than requested.", "not an sstable (bad magic number)").
func TestLoadOfDamagedFilesSaysWhatToDo(t *testing.T) {
	fx := seedFixture(t)
	for _, name := range []string{"saved_model.pb", "variables/variables.index", "variables/variables.data-00000-of-00001"} {
		dir := t.TempDir()
		fixture.CopyTree(t, filepath.Join(fx, "model"), dir)
		if err := os.Truncate(filepath.Join(dir, name), 50); err != nil {
			t.Fatal(err)
		}
		_, err := tf.Load(dir, tf.Config{})
		if err == nil || !strings.Contains(err.Error(), "its files look cut short or mixed up (an interrupted copy or upload?): copy or export it again") {
			t.Errorf("%s cut short: %v", name, err)
		}
	}
}

// TestLoadNamesWhatIsMissing: a SavedModel whose graph lacks a role's
// signature, or whose metadata lacks a role, is refused with the name.
func TestLoadNamesWhatIsMissing(t *testing.T) {
	fx := seedFixture(t)
	for _, c := range []struct {
		name   string
		edit   func(meta map[string]any)
		expect string
	}{
		{"signature not in graph", func(meta map[string]any) {
			meta["signatures"].(map[string]any)["test_step"] = "no_such_signature"
		}, "signature no_such_signature (test_step) is missing"},
		{"role missing", func(meta map[string]any) {
			delete(meta["signatures"].(map[string]any), "compute_gradients_weighted") // the only form of this step
		}, "names no signature for compute_gradients"},
		{"newer contract", func(meta map[string]any) {
			meta["contract_version"] = 99
		}, "contract version 99"},
		// Edits a hostile-input probe made that loaded and failed later
		// (at the first step or checkpoint, in TensorFlow's words) or not
		// at all.
		{"gradient size edited", func(meta map[string]any) {
			meta["gradient_size"] = 5
		}, "does not hold together (gradient_size 5, where its gradients have 193 elements)"},
		{"no metrics", func(meta map[string]any) {
			delete(meta, "metrics")
		}, "it lists no variables, metrics or gradients"},
		{"no variables", func(meta map[string]any) {
			delete(meta, "variables")
		}, "it lists no variables, metrics or gradients"},
		{"variables folder missing", func(map[string]any) {}, "has no variables/variables.index"},
		// Another export's metadata: every step signature lacks its
		// inputs, which filled the failure file with 3.7 KB of them.
		{"another export's tensors", func(meta map[string]any) {
			meta["inputs"].([]any)[0].(map[string]any)["key"] = "a"
			meta["targets"].([]any)[0].(map[string]any)["key"] = "kind"
		}, "its assets.extra/sagefit.json does not describe its graph (signature "},
		// Edits that still held together and loaded: they failed at a
		// checkpoint or a resume, or only on several hosts.
		{"variable shape edited", func(meta map[string]any) {
			v := meta["variables"].([]any)[0].(map[string]any)
			v["shape"] = []any{999, 1}
		}, "in the graph, float32 (999, 1) in sagefit.json"},
		{"variable dtype changed", func(meta map[string]any) {
			meta["variables"].([]any)[0].(map[string]any)["dtype"] = "float64"
		}, "in the graph, float64 ("},
		{"metric state size edited", func(meta map[string]any) {
			meta["metric_state_size"] = 7
		}, "the metric state (metric_state_size) is float64 ("},
		{"variable dtype edited", func(meta map[string]any) {
			meta["variables"].([]any)[0].(map[string]any)["dtype"] = "float128"
		}, "export the model again"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			fixture.EditedExport(t, filepath.Join(fx, "model"), dir, c.edit)
			if c.name == "variables folder missing" {
				os.RemoveAll(filepath.Join(dir, "variables"))
			}
			_, err := tf.Load(dir, tf.Config{})
			if err == nil || !strings.Contains(err.Error(), c.expect) {
				t.Fatalf("Load error %v, want one containing %q", err, c.expect)
			}
			if len(err.Error()) > 1000 { // SageMaker shows a failure reason's first 1,024 characters
				t.Errorf("Load error of %d characters: %v", len(err.Error()), err)
			}
		})
	}
}

// TestComputeApplyEqualsTrainStep: the data-parallel pair computes the same
// update as Keras's fused train step.
func TestComputeApplyEqualsTrainStep(t *testing.T) {
	fx := seedFixture(t)
	fused, split := load(t, filepath.Join(fx, "model")), load(t, filepath.Join(fx, "model"))
	grads := make([]float32, split.Meta().GradientSize)
	for step := 0; step < 5; step++ {
		b := batch(t, fx, step*32, step*32+32)
		fm, err := fused.TrainStep(named(fused, b))
		if err != nil {
			t.Fatal(err)
		}
		sm, err := split.ComputeGradients(named(split, b), grads)
		if err != nil {
			t.Fatal(err)
		}
		if err := split.ApplyGradients(grads); err != nil {
			t.Fatal(err)
		}
		for i := range fm {
			if fm[i] != sm[i] {
				t.Errorf("step %d %s: fused %v, split %v", step, fm[i].Name, fm[i].Value, sm[i].Value)
			}
		}
	}
	fv, _ := fused.ReadVariables()
	sv, _ := split.ReadVariables()
	for i := range fv {
		if !bytes.Equal(fv[i].Data, sv[i].Data) {
			t.Errorf("variable %s differs after 5 steps", fv[i].Spec.Name)
		}
	}
}

// The single-threaded executor trains on with the numbers of the session
// the model was loaded into, bit for bit: the seed MLP, a model with
// dropout, whose random state is a variable that moves with the others, and
// a custom step that counts its steps in a tf.Variable of its own.
func TestSingleThreadedExecutorKeepsTheNumbers(t *testing.T) {
	for _, family := range []string{"seed", "dropout", "custom_step_state"} {
		t.Run(family, func(t *testing.T) {
			fx := fixture.Make(t, family, "--rows", "256", "--no-fit", "--no-validation")
			stay, move := load(t, filepath.Join(fx, "model")), load(t, filepath.Join(fx, "model"))
			trainBesideAMove(t, fx, stay, move, func(stayed error, _ int) {
				if stayed != nil {
					t.Fatalf("stayed on its session: %v", stayed)
				}
			})
			sv, mv := mustRead(t, stay), mustRead(t, move)
			for i := range sv {
				if !bytes.Equal(sv[i].Data, mv[i].Data) {
					t.Errorf("variable %s differs after 6 steps", sv[i].Spec.Name)
				}
			}
			two := batch(t, fx, 0, 64)
			if _, err := move.TrainSteps(named(move, two), 2); err == nil {
				t.Error("train_steps ran on the single-threaded executor")
			}
			// The moved model still saves (the graph outlives the first session).
			out := filepath.Join(t.TempDir(), "saved")
			if err := move.Save(out); err != nil {
				t.Fatal(err)
			}
			saved := load(t, out)
			for i, v := range mustRead(t, saved) {
				if !bytes.Equal(v.Data, mv[i].Data) {
					t.Errorf("saved variable %s differs", v.Spec.Name)
				}
			}
		})
	}
}

// A step the single-threaded executor refuses (TF1's Switch and Merge in
// the graph) fails the move on its first call: the model stays on its
// session, untouched by the try, and that call runs there once, so the
// steps, the variables and train_steps' blocks are those of a model that
// never tried.
func TestRefusedMoveRunsTheFirstCallOnce(t *testing.T) {
	fx := fixture.Make(t, "old_style_branch", "--rows", "256", "--no-fit", "--no-validation")
	stay, move := load(t, filepath.Join(fx, "model")), load(t, filepath.Join(fx, "model"))
	trainBesideAMove(t, fx, stay, move, func(stayed error, calls int) {
		if stayed == nil || !strings.Contains(stayed.Error(), "switch op") {
			t.Fatalf("the move was not refused for the Switch: stayed %v", stayed)
		}
		if calls != 2 {
			t.Fatalf("the first call ran %d times, want 2 (refused there, then run here)", calls)
		}
	})
	two := batch(t, fx, 192, 256)
	sm, err := stay.TrainSteps(named(stay, two), 2)
	if err != nil {
		t.Fatal(err)
	}
	mm, err := move.TrainSteps(named(move, two), 2)
	if err != nil {
		t.Fatalf("train_steps after the refused move: %v", err)
	}
	if !slices.Equal(sm, mm) {
		t.Errorf("train_steps: %v, after the refused move %v", sm, mm)
	}
	sv, mv := mustRead(t, stay), mustRead(t, move)
	for i := range sv {
		if !bytes.Equal(sv[i].Data, mv[i].Data) {
			t.Errorf("variable %s differs after 8 steps", sv[i].Spec.Name)
		}
	}
}

// trainBesideAMove trains stay and move on the same six batches of fx, one
// step per call, move moving to the single-threaded executor at the fourth
// with that step as its first call there; moved checks what the move said
// and how many times it ran the call. Every step's metrics must be equal.
func trainBesideAMove(t *testing.T, fx string, stay, move *tf.Model, moved func(stayed error, calls int)) {
	t.Helper()
	for step := 0; step < 6; step++ {
		b := batch(t, fx, step*32, step*32+32)
		sm, err := stay.TrainStep(named(stay, b))
		if err != nil {
			t.Fatal(err)
		}
		var mm []model.Metric
		if step == 3 {
			calls := 0
			stayed, err := move.MoveSingleThreaded(func() (err error) {
				calls++
				mm, err = move.TrainStep(named(move, b))
				return err
			})
			if err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			moved(stayed, calls)
		} else if mm, err = move.TrainStep(named(move, b)); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		for i := range sm {
			if sm[i] != mm[i] {
				t.Errorf("step %d %s: %v, beside a move %v", step, sm[i].Name, sm[i].Value, mm[i].Value)
			}
		}
	}
}

// Several processes move too: the gradient path (compute, apply, and the
// apply fused with the next gradient) gives the default executor's
// gradients and variables bit for bit after the move, on the seed MLP and
// an LSTM.
func TestSingleThreadedExecutorKeepsTheGradients(t *testing.T) {
	for _, family := range []string{"seed", "lstm"} {
		t.Run(family, func(t *testing.T) {
			fx := fixture.Make(t, family, "--rows", "256", "--no-fit", "--no-validation")
			stay, move := load(t, filepath.Join(fx, "model")), load(t, filepath.Join(fx, "model"))
			if !move.FusedApply() {
				t.Fatal("the export has no apply_compute_gradients")
			}
			n := stay.Meta().GradientSize
			sg, mg := make([]float32, n), make([]float32, n)
			for step := 0; step < 6; step++ {
				b := batch(t, fx, step*32, step*32+32)
				var sm, mm []model.Metric
				var err error
				switch {
				case step == 0:
					sm, err = stay.ComputeGradients(named(stay, b), sg)
					if err == nil {
						mm, err = move.ComputeGradients(named(move, b), mg)
					}
				case step == 3: // the move: the last gradient applied, then the new one computed there; stay fuses them
					sm, err = stay.ApplyThenComputeGradients(sg, named(stay, b))
					if err == nil {
						err = move.ApplyGradients(mg)
					}
					if err == nil {
						var stayed error
						stayed, err = move.MoveSingleThreaded(func() (err error) { mm, err = move.ComputeGradients(named(move, b), mg); return err })
						if stayed != nil {
							t.Fatalf("stayed on its session: %v", stayed)
						}
					}
				default:
					sm, err = stay.ApplyThenComputeGradients(sg, named(stay, b))
					if err == nil {
						mm, err = move.ApplyThenComputeGradients(mg, named(move, b))
					}
				}
				if err != nil {
					t.Fatalf("step %d: %v", step, err)
				}
				for i := range sm {
					if sm[i] != mm[i] {
						t.Errorf("step %d %s: %v, after the move %v", step, sm[i].Name, sm[i].Value, mm[i].Value)
					}
				}
				if !slices.Equal(sg, mg) {
					t.Errorf("step %d: the gradients differ", step)
				}
			}
			if err := stay.ApplyGradients(sg); err != nil {
				t.Fatal(err)
			}
			if err := move.ApplyGradients(mg); err != nil {
				t.Fatal(err)
			}
			sv, mv := mustRead(t, stay), mustRead(t, move)
			for i := range sv {
				if !bytes.Equal(sv[i].Data, mv[i].Data) {
					t.Errorf("variable %s differs after 6 steps", sv[i].Spec.Name)
				}
			}
		})
	}
}

// Runs keep their input tensors for the feed's next run and fill them
// again: every run computes on its own batch, whatever ran before (another
// batch, another row count). Two models predict the same batches in
// opposite orders; a stale input would make them differ.
func TestEveryRunSeesItsOwnInputs(t *testing.T) {
	fx := seedFixture(t)
	fwd, rev := load(t, filepath.Join(fx, "model")), load(t, filepath.Join(fx, "model"))
	spans := [][2]int{{0, 32}, {32, 64}, {64, 72}, {72, 104}, {104, 105}}
	predict := func(m *tf.Model, i int) []byte {
		b := named(m, batch(t, fx, spans[i][0], spans[i][1]))
		delete(b.Tensors, m.Meta().Targets[0].Name)
		p, err := m.Predict(b)
		if err != nil {
			t.Fatal(err)
		}
		return p[m.Meta().Outputs[0]].Data
	}
	got := make([][]byte, len(spans))
	for i := range spans {
		got[i] = predict(fwd, i)
	}
	for i := len(spans) - 1; i >= 0; i-- {
		if want := predict(rev, i); !bytes.Equal(got[i], want) {
			t.Errorf("rows %v predict differently in the batches' order and in the opposite one", spans[i])
		}
	}
	if bytes.Equal(got[0], got[1][:len(got[0])]) {
		t.Fatal("two batches predict the same: the check above cannot tell")
	}
}

func TestVariablesMetricsAndSave(t *testing.T) {
	fx := seedFixture(t)
	m := load(t, filepath.Join(fx, "model"))
	for s := 0; s < 4; s++ {
		if _, err := m.TrainStep(named(m, batch(t, fx, s*32, s*32+32))); err != nil {
			t.Fatal(err)
		}
	}
	// Metric state round trip: reset, assign the saved state, same results.
	results, _ := m.MetricResults()
	state, err := m.MetricState()
	if err != nil || len(state) != m.Meta().MetricStateSize {
		t.Fatalf("metric state %v, %v", state, err)
	}
	if err := m.ResetMetrics(); err != nil {
		t.Fatal(err)
	}
	if zero, _ := m.MetricResults(); zero[0].Value != 0 {
		t.Errorf("loss after reset = %v", zero[0].Value)
	}
	if err := m.AssignMetricState(state); err != nil {
		t.Fatal(err)
	}
	if again, _ := m.MetricResults(); again[0] != results[0] || again[1] != results[1] {
		t.Errorf("results after assigning state %v, before %v", again, results)
	}

	// Variables round trip, and the learning rate.
	vars, err := m.ReadVariables()
	if err != nil {
		t.Fatal(err)
	}
	if vars[0].Spec.Name != "sequential/dense/kernel" || len(vars) != len(m.Meta().Variables) {
		t.Errorf("variables start with %s, %d of them", vars[0].Spec.Name, len(vars))
	}
	// Read again into that copy after a step: the new values, in its memory
	// (a checkpoint's copy of the state is made once).
	before := make([][]byte, len(vars))
	for i, v := range vars {
		before[i] = bytes.Clone(v.Data)
	}
	if _, err := m.TrainStep(named(m, batch(t, fx, 128, 160))); err != nil {
		t.Fatal(err)
	}
	fresh, err := m.ReadVariables()
	if err != nil {
		t.Fatal(err)
	}
	into, err := m.ReadVariablesInto(vars)
	if err != nil {
		t.Fatal(err)
	}
	for i := range fresh {
		if !bytes.Equal(into[i].Data, fresh[i].Data) || into[i].Spec.Name != fresh[i].Spec.Name {
			t.Fatalf("%s read into an earlier copy differs from a fresh read", fresh[i].Spec.Name)
		}
		if len(vars[i].Data) > 0 && &into[i].Data[0] != &vars[i].Data[0] {
			t.Errorf("%s was not read into the copy given", fresh[i].Spec.Name)
		}
	}
	if bytes.Equal(into[0].Data, before[0]) {
		t.Error("the kernel did not change in a train step")
	}
	vars = into

	if err := m.SetLearningRate(0.01); err != nil {
		t.Fatal(err)
	}
	if lr, _ := m.LearningRate(); math.Abs(lr-0.01) > 1e-9 {
		t.Errorf("learning rate %v after setting 0.01", lr)
	}

	// Save, load the copy, same variables and predictions.
	out := filepath.Join(t.TempDir(), "1")
	if err := m.Save(out); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, "fingerprint.pb")); err == nil {
		t.Error("saved model carries the old fingerprint.pb")
	}
	saved := load(t, out)
	again, err := saved.ReadVariables()
	if err != nil {
		t.Fatal(err)
	}
	for i := range vars {
		if vars[i].Spec.Kind == "model" && !bytes.Equal(vars[i].Data, again[i].Data) {
			t.Errorf("saved %s differs", vars[i].Spec.Name)
		}
	}
	b := named(m, batch(t, fx, 0, 8))
	delete(b.Tensors, m.Meta().Targets[0].Name)
	p1, err := m.Predict(b)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := saved.Predict(b)
	if err != nil {
		t.Fatal(err)
	}
	if out := m.Meta().Outputs[0]; !bytes.Equal(p1[out].Data, p2[out].Data) {
		t.Error("the saved model predicts differently")
	}

	// Assigning modified variables changes predictions back when restored.
	zeroed := make([]model.Variable, len(vars))
	for i, v := range vars {
		zeroed[i] = v
		zeroed[i].Data = make([]byte, len(v.Data))
		copy(zeroed[i].Data, v.Data)
	}
	clear(zeroed[0].Data)
	if err := m.AssignVariables(zeroed); err != nil {
		t.Fatal(err)
	}
	if got := floats(t, mustRead(t, m)[0]); got[0] != 0 {
		t.Errorf("kernel[0] = %v after assigning zeros", got[0])
	}
}

func mustRead(t *testing.T, m *tf.Model) []model.Variable {
	v, err := m.ReadVariables()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestBatchOfWrongSizeIsRefused(t *testing.T) {
	fx := seedFixture(t)
	m := load(t, filepath.Join(fx, "model"))
	b := named(m, batch(t, fx, 0, 4))
	b.Rows = 5
	_, err := m.TrainStep(b)
	if err == nil || !strings.Contains(err.Error(), "batch of 5 rows has 160 bytes, want 200") {
		t.Fatalf("error %v", err)
	}
}

// TestStepLoopMemoryIsFlat: 100,000 train steps must not grow resident
// memory: every tensor of the step loop is released at once, not by a
// finalizer. Set SAGEFIT_MEMORY_STEPS to change the count.
func TestStepLoopMemoryIsFlat(t *testing.T) {
	steps := 100_000
	if s := os.Getenv("SAGEFIT_MEMORY_STEPS"); s != "" {
		steps, _ = strconv.Atoi(s)
	}
	if testing.Short() {
		steps = 20_000
	}
	fx := seedFixture(t)
	m := load(t, filepath.Join(fx, "model"))
	b := named(m, batch(t, fx, 0, 32))
	warm := steps / 10
	var first int64
	for i := 1; i <= steps; i++ {
		if _, err := m.TrainStep(b); err != nil {
			t.Fatal(err)
		}
		if i == warm {
			first = rss(t)
		}
	}
	last := rss(t)
	growth := float64(last-first) / (1 << 20)
	t.Logf("resident memory after %d steps: %.1f MiB; after %d: %.1f MiB; growth %.2f MiB",
		warm, float64(first)/(1<<20), steps, float64(last)/(1<<20), growth)
	if growth > 16 {
		t.Errorf("resident memory grew %.1f MiB over %d steps", growth, steps-warm)
	}
}

func rss(t *testing.T) int64 {
	raw, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skipf("no /proc/self/statm to measure resident memory: %v", err)
	}
	f := strings.Fields(string(raw))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// TestSubnormalsAsInThePool: a step whose ops run in the calling thread
// flushes subnormal floats to zero as TensorFlow's pool threads do (and
// so Keras's fit): inputs of 1e-37 make subnormal gradients and Adam
// moments, which the calling thread kept (a probe's moments differed by
// 1e-35 between inter_op_threads -1 and the pool, and so after a resume
// whose probe ran steps the other way).
func TestSubnormalsAsInThePool(t *testing.T) {
	fx := seedFixture(t)
	pool, inline := load(t, filepath.Join(fx, "model")), load(t, filepath.Join(fx, "model"))
	inline.SetInline(true)
	b := batch(t, fx, 0, 32)
	x := b.Tensors["x"]
	for i := 0; i < len(x); i += 4 {
		f := math.Float32frombits(binary.LittleEndian.Uint32(x[i:]))
		binary.LittleEndian.PutUint32(x[i:], math.Float32bits(f*1e-37))
	}
	for _, m := range []*tf.Model{pool, inline} {
		for range 3 {
			if _, err := m.TrainStep(named(m, b)); err != nil {
				t.Fatal(err)
			}
		}
	}
	pv, iv := mustRead(t, pool), mustRead(t, inline)
	subnormals := 0
	for i := range pv {
		if !bytes.Equal(pv[i].Data, iv[i].Data) {
			t.Errorf("variable %s differs between the pool and the calling thread", pv[i].Spec.Name)
		}
		for j := 0; iv[i].DType == model.Float32 && j+4 <= len(iv[i].Data); j += 4 {
			if b := binary.LittleEndian.Uint32(iv[i].Data[j:]); b&0x7f800000 == 0 && b&0x7fffff != 0 {
				subnormals++
			}
		}
	}
	if subnormals > 0 {
		t.Errorf("%d subnormal floats in the variables after steps in the calling thread", subnormals)
	}
}
