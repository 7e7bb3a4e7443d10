package runtime_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/sagefit/sagefit/data"
	"github.com/sagefit/sagefit/internal/fixture"
	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/model/tf"
	"github.com/sagefit/sagefit/runtime"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// parityTol is how far the parity tests let a number be from Keras's; a
// test of the last bit sets it to 0 (toTheBit).
var parityTol = 1e-5

// toTheBit makes the parity checks of the rest of t exact.
func toTheBit(t *testing.T) {
	old := parityTol
	parityTol = 0
	t.Cleanup(func() { parityTol = old })
}

func close(a, b float64) bool {
	return math.Abs(a-b) <= parityTol*math.Max(1, math.Max(math.Abs(a), math.Abs(b)))
}

// localJob lays out a SageMaker base dir for a fixture and returns it.
func localJob(t *testing.T, fx string, hps map[string]string, channels map[string]string) string {
	t.Helper()
	base := t.TempDir()
	if channels == nil {
		channels = map[string]string{
			"model":      filepath.Join(fx, "model"),
			"training":   filepath.Join(fx, "train"),
			"validation": filepath.Join(fx, "validation"),
		}
	}
	if err := sagemaker.WriteLocal(base, sagemaker.LocalSpec{Channels: channels, Hyperparameters: hps}); err != nil {
		t.Fatal(err)
	}
	return base
}

// trainJob trains the job laid out in base, as a training process would,
// and returns where its outputs went and what it printed.
func trainJob(t *testing.T, base string) (*runtime.Result, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	res, err := runtime.Train(context.Background(), runtime.Options{Base: base, Stdout: &stdout, Stderr: &stderr})
	if err != nil {
		t.Fatalf("train: %v\n%s", err, stderr.String())
	}
	return res, &stdout, &stderr
}

// savedVars reads every variable of the SavedModel in dir.
func savedVars(t *testing.T, dir string) []model.Variable {
	t.Helper()
	m, err := tf.Load(dir, tf.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	vars, err := m.ReadVariables()
	if err != nil {
		t.Fatal(err)
	}
	return vars
}

// sameHistory checks the history.json at path against Keras's History:
// the same keys, epochs and values (within close).
func sameHistory(t *testing.T, path string, want map[string][]float64) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string][]float64
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("history keys %v, Keras has %v", keys(got), keys(want))
	}
	for k, w := range want {
		if len(got[k]) != len(w) {
			t.Errorf("%s: %d epochs, Keras has %d", k, len(got[k]), len(w))
			continue
		}
		for e := range w {
			if !close(got[k][e], w[e]) {
				t.Errorf("epoch %d %s = %.9g, Keras %.9g", e+1, k, got[k][e], w[e])
			}
		}
	}
}

// sameWeights checks variables against Keras's (get_weights, or its optimizer's),
// matched by name (Keras's order of model.weights is not the contract's
// where seed generators and counters are involved).
func sameWeights(t *testing.T, vars []model.Variable, want [][]float64, names []string) {
	t.Helper()
	byName := map[string]model.Variable{}
	for _, v := range vars {
		byName[v.Spec.Name] = v
	}
	for i, w := range want {
		v, ok := byName[names[i]]
		if !ok {
			t.Fatalf("the trained model has no variable %s (Keras weight %d)", names[i], i)
		}
		f := values(t, v)
		if len(f) != len(w) {
			t.Fatalf("variable %s has %d values, Keras's has %d", v.Spec.Name, len(f), len(w))
		}
		for j := range w {
			if !close(f[j], w[j]) {
				t.Fatalf("variable %s[%d] = %.9g, Keras %.9g", v.Spec.Name, j, f[j], w[j])
			}
		}
	}
}

// sameState checks the variables of the model sagefit saved in dir against
// Keras's after fit: the model's weights, its other variables (a random
// layer's seed state) and the optimizer's variables.
func sameState(t *testing.T, dir string, ref fixture.Reference) {
	t.Helper()
	if len(ref.OptimizerWeights) == 0 {
		t.Fatal("the reference holds no optimizer variables")
	}
	vars := savedVars(t, dir)
	sameWeights(t, vars, ref.Weights, ref.WeightNames)
	sameWeights(t, vars, ref.OtherVariables, ref.OtherVariableNames)
	sameWeights(t, vars, ref.OptimizerWeights, ref.OptimizerWeightNames)
}

// values reads a variable's elements as float64, whatever its dtype (Keras's
// get_weights also lists counters and seed state).
func values(t *testing.T, v model.Variable) []float64 {
	t.Helper()
	switch v.DType {
	case model.Float32:
		f, _ := v.Float32s()
		out := make([]float64, len(f))
		for i, x := range f {
			out[i] = float64(x)
		}
		return out
	case model.Int64:
		out := make([]float64, len(v.Data)/8)
		for i := range out {
			out[i] = float64(int64(binary.LittleEndian.Uint64(v.Data[8*i:])))
		}
		return out
	case model.Uint32, model.Int32:
		out := make([]float64, len(v.Data)/4)
		for i := range out {
			if v.DType == model.Int32 {
				out[i] = float64(int32(binary.LittleEndian.Uint32(v.Data[4*i:])))
			} else {
				out[i] = float64(binary.LittleEndian.Uint32(v.Data[4*i:]))
			}
		}
		return out
	}
	t.Fatalf("variable %s is %s", v.Spec.Name, v.DType)
	return nil
}

// TestKerasParity trains each model family through the SageMaker contract
// and checks every epoch's metrics, the final weights and the predictions
// against Keras model.fit from the same initial weights on the same batches.
func TestKerasParity(t *testing.T) {
	families := []string{"seed", "multiclass", "two_inputs"}
	// Adam with use_ema: fit ends by copying the moving averages into the
	// weights (the saved model's predictions were up to 0.12 off).
	families = append(families, "seed_ema")
	// tf-keras's Nadam bakes a Python count of its traces into its step:
	// each step the export traced after the first had another (weights
	// 9e-3 off fit's after 3 epochs). Each step now finds the count a
	// fresh fit's step finds, and the fixture's fit after the export is a
	// fresh fit's (test_tf_keras_nadam_export_leaves_fit_fresh).
	families = append(families, "seed_nadam")
	for _, f := range families {
		families = append(families, fixture.LegacyKeras+f)
	}
	// A metric whose result is a dict logs its keys, as fit flattens them
	// (the export named the metric, and every job failed at load).
	families = append(families, "seed_dict_metric")
	// Heads with their own losses (a sparse one beside a 2-unit regression):
	// each target's shape comes from its own loss.
	families = append(families, "two_heads")
	// A head compiled without a loss (None): its variables get no gradient,
	// which fit warns about and leaves untrained (export refused it).
	families = append(families, "untrained_head", fixture.LegacyKeras+"untrained_head")
	// The Keras 3 guide's custom train step (optimizer.apply, compute_loss,
	// metrics updated in the step), one that updates only the last layer,
	// and one that keeps a count of its own in a tf.Variable.
	families = append(families, "custom_step", "custom_step_partial", "custom_step_state")
	// Trackers of the step's own, one that only train_step updates, which
	// test_step leaves out: the validation logs are test_step's (the job
	// was refused: the test step did not output every metric).
	families = append(families, "custom_trackers")
	// A step that returns its own values, the batch's loss and the
	// gradient's norm: the epoch logs are the last step's, as fit's.
	families = append(families, "custom_logs")
	// A custom step that applies a second optimizer of its own (one host:
	// a multi-host job refuses it).
	families = append(families, "custom_step_two_optimizers")
	// A custom step as tf-keras's guides write it, its class defined
	// outside tf_keras (as in a user's script).
	families = append(families, fixture.LegacyKeras+"custom_step_keras2")
	// Layers with their own ways: Dropout's seed state, an Embedding's
	// sparse gradients, recurrent layers, an adapted Normalization, mixed
	// precision, convolutions (the model zoo with the families above).
	families = append(families, "dropout", "embedding", "lstm", "gru", "normalized", "mixed_bfloat16", "cnn")
	// tf-keras's Dropout draws with a stateful random op, whose state is
	// the op's: steps_per_execution "auto" keeps one step per call (its
	// trial blocks drew from the loop's own copy of the op, and the job
	// went on off fit's sequence).
	families = append(families, fixture.LegacyKeras+"dropout")
	// Text and categorical strings: lookup tables exported with the model,
	// bytes ('S') and unicode ('U') files, a string input beside an int64 one.
	families = append(families, "string_lookup", "text_vectorization", "categorical")
	// Losses of one value per pixel and per (masked) time step: their steps
	// take no weight per row, as fit without sample_weight runs them (they
	// failed at the first step, fed weights of one per row).
	families = append(families, "per_pixel", "per_timestep")
	// A model built on dicts of inputs and outputs, compiled with a loss,
	// loss weight and metrics per output key (refused at export before).
	families = append(families, "dict_io")
	// A model compiled without a loss, trained on what its layers add
	// (add_loss), from inputs alone as fit(x) (it asked for a target file).
	families = append(families, "add_loss_only", fixture.LegacyKeras+"add_loss_only")
	// A train_step of the model's own on a model compiled without a loss,
	// computing its loss from the inputs alone as fit(x) hands them (a
	// VAE's): the export traced it with targets it never takes and failed.
	families = append(families, "own_loss_inputs_alone", fixture.LegacyKeras+"own_loss_inputs_alone")
	// tf-keras weighs a loss per pixel by weights of its shape too.
	families = append(families, fixture.LegacyKeras+"per_pixel")
	// A keras.applications model: MobileNetV2 (52 BatchNormalization layers),
	// on fewer rows, as it is the slowest to export and train here.
	families = append(families, "mobilenet_v2")
	for _, family := range families {
		t.Run(family, func(t *testing.T) {
			stderr := checkParity(t, family, nil)
			untrained := strings.Contains(stderr, "variables [emb/kernel emb/bias] get no gradient from the loss and are not trained")
			if untrained != strings.HasSuffix(family, "untrained_head") {
				t.Errorf("warning about untrained variables: %v; stderr:\n%s", untrained, stderr)
			}
		})
	}
}

// TestModelWithoutTestStep: a model compiled without a loss whose
// train_step computes one of its own (keras.io's lower-level custom step)
// has Keras's test step, which has no loss to compute; fit trains it
// without validation data and fails with it. The export failed on it; it
// now exports the model without a test step, the job trains it to fit's
// numbers, and a job given validation data is refused in one sentence.
func TestModelWithoutTestStep(t *testing.T) {
	for _, c := range []struct {
		family string
		flags  []string
	}{
		{"own_loss_no_test_step", nil},
		// A step that takes sample weights: its weighted roles without the
		// weighted test step (the job failed to load it).
		{"own_loss_no_test_step_weighted", []string{"--sample-weight"}},
	} {
		t.Run(c.family, func(t *testing.T) {
			fx := fixture.Make(t, c.family, append([]string{"--epochs", "3", "--rows", "200", "--no-validation"}, c.flags...)...)
			ref := fixture.ReadReference(t, fx)
			channels := map[string]string{"model": filepath.Join(fx, "model"), "training": filepath.Join(fx, "train")}
			hps := map[string]string{"epochs": "3", "shuffle": "false", "batch_size": "32"}
			res, _, _ := trainJob(t, localJob(t, fx, hps, channels))
			sameHistory(t, res.HistoryPath, ref.History)
			sameState(t, res.ModelDir, ref)

			for _, v := range []struct {
				name     string
				channels map[string]string
				hps      map[string]string
				given    string
			}{
				{"channel", map[string]string{"validation": filepath.Join(fx, "train")}, nil, `channel "validation"`},
				{"split", nil, map[string]string{"validation_split": "0.25"}, `hyperparameter "validation_split"`},
			} {
				jobHPs, jobChannels := maps.Clone(hps), maps.Clone(channels)
				maps.Copy(jobHPs, v.hps)
				maps.Copy(jobChannels, v.channels)
				base := localJob(t, fx, jobHPs, jobChannels)
				_, err := runtime.Train(context.Background(), runtime.Options{Base: base, Stdout: io.Discard, Stderr: io.Discard})
				want := "the job validates (" + v.given + "), but the model was exported without a test step, as its test step could not be traced (No loss to compute."
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("%s: validation without a test step: %v, want %q", v.name, err, want)
				}
			}
		})
	}
}

// TestLoopedRandomOpsAreNamed: tf-keras's SimpleRNN(dropout) draws its
// masks inside the RNN's loop with a stateful random op, and trains off
// fit's numbers (found by a probe, not understood): the job says so at its
// start (it trained silently). Keras 3's keeps its seed in a variable and
// matches fit.
func TestLoopedRandomOpsAreNamed(t *testing.T) {
	stderr := checkParity(t, "rnn_dropout", nil)
	if strings.Contains(stderr, "inside a loop") {
		t.Errorf("Keras 3's RNN dropout is named as off fit's:\n%s", stderr)
	}
	fx := fixture.Make(t, fixture.LegacyKeras+"rnn_dropout", "--epochs", "2", "--rows", "100", "--no-fit")
	base := localJob(t, fx, map[string]string{"epochs": "2", "batch_size": "32"}, nil)
	_, _, stderr2 := trainJob(t, base)
	if !strings.Contains(stderr2.String(), "draws random numbers inside a loop with TensorFlow's stateful random ops [") {
		t.Errorf("no warning of tf-keras's RNN dropout:\n%s", stderr2)
	}
}

// TestCapturedConstantsTrainLikeFit: an adapted Normalization's mean and
// variance are tensors its traced step captured, which fit's function takes
// as inputs and the SavedModel holds as constants. Left constants, Grappler
// folded them into the step and rounded otherwise (x / c as x * 1/c): the
// loss of epoch 2 one float step from fit's (0.715480626 against
// 0.715480685) and the weights after it. Fed as inputs, they give fit's
// numbers to the bit, history and every weight, at one and at K steps per
// call.
func TestCapturedConstantsTrainLikeFit(t *testing.T) {
	toTheBit(t)
	for _, c := range []struct{ family, k string }{
		{"normalized", "1"}, {"normalized", "8"},
		// A captured tensor too large to feed at every call stays a
		// constant; the small ones beside it are still fed.
		{"normalized_big_constant", "1"},
	} {
		t.Run(c.family+"/steps_per_execution="+c.k, func(t *testing.T) {
			fx := fixture.Make(t, c.family, "--epochs", "3", "--rows", "500")
			ref := fixture.ReadReference(t, fx)
			base := localJob(t, fx, map[string]string{"epochs": "3", "shuffle": "false", "batch_size": "32", "steps_per_execution": c.k}, nil)
			res, _, _ := trainJob(t, base)
			sameHistory(t, res.HistoryPath, ref.History)
			sameState(t, res.ModelDir, ref)
		})
	}
}

// The families whose steps are many small ops, and those that test what
// moves with the model's state (Dropout's seed, lookup tables, mixed
// precision's loss scale), trained on TensorFlow's single-threaded
// executor from the first step: Keras's numbers still.
func TestSingleThreadedExecutorKerasParity(t *testing.T) {
	for _, family := range []string{"seed", "dropout", "lstm", "mixed_bfloat16", "string_lookup", "text_vectorization"} {
		t.Run(family, func(t *testing.T) {
			stderr := checkParity(t, family, map[string]string{"executor": "single_threaded"})
			if !strings.Contains(stderr, "single-threaded executor (moved in") {
				t.Errorf("the job did not move:\n%s", stderr)
			}
		})
	}
}

// A job asked to move whose step the single-threaded executor refuses (TF1's
// Switch in the graph) says so and trains on where it was: Keras's numbers,
// the refused first step run once.
func TestRefusedMoveKeepsKerasNumbers(t *testing.T) {
	stderr := checkParity(t, "old_style_branch", map[string]string{"executor": "single_threaded"})
	if !strings.Contains(stderr, "train steps stay on TensorFlow's default executor: its first call failed") || !strings.Contains(stderr, "switch op") {
		t.Errorf("no warning that the move was refused for the Switch:\n%s", stderr)
	}
}

// A custom step that keeps its count in a lookup table Keras does not track
// (a MutableHashTable): exported with the model, it trains to Keras's
// numbers; the job says what does not carry the table, and asked to move to
// the single-threaded executor, whose new session would start the table
// from the saved contents, it says it stays. (Asked, the move would come
// before the first step, with nothing written yet: the numbers alone do not
// show the refusal; the move executor "auto" may choose after its probe
// would lose the steps' writes.)
func TestStepWrittenTableKeepsKerasNumbers(t *testing.T) {
	stderr := checkParity(t, "custom_step_table", map[string]string{"executor": "single_threaded"})
	for _, want := range []string{
		"warning: the train or test step writes lookup table steps_seen: the model sagefit writes holds its contents after the last step",
		"train steps stay on TensorFlow's default executor: the train or test step writes lookup table steps_seen, which a move to another session would not carry",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

// checkParity trains family's fixture through the SageMaker contract, with
// hps added to the job's hyperparameters, checks it against Keras, and
// returns the job's stderr.
func checkParity(t *testing.T, family string, hps map[string]string) string {
	t.Helper()
	rows := "500"
	if family == "mobilenet_v2" {
		rows = "64"
	}
	fx := fixture.Make(t, family, "--epochs", "3", "--rows", rows)
	ref := fixture.ReadReference(t, fx)
	hp := map[string]string{"epochs": "3", "shuffle": "false", "batch_size": "32"}
	maps.Copy(hp, hps)
	base := localJob(t, fx, hp, nil)
	res, stdout, stderr := trainJob(t, base)

	sameHistory(t, res.HistoryPath, ref.History)

	sameState(t, res.ModelDir, ref)

	trained, err := tf.Load(res.ModelDir, tf.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer trained.Close()
	pred := predict(t, trained, filepath.Join(fx, "train"), 16)
	if len(pred) != len(ref.Predictions) {
		t.Fatalf("%d predictions, Keras made %d", len(pred), len(ref.Predictions))
	}
	for i := range pred {
		if !close(float64(pred[i]), ref.Predictions[i]) {
			t.Fatalf("prediction %d = %.9g, Keras %.9g", i, pred[i], ref.Predictions[i])
		}
	}
	line := regexp.MustCompile(`(?m)^Epoch 3/3 .*loss: [0-9.]+`)
	if !line.Match(stdout.Bytes()) {
		t.Errorf("no scrapeable epoch line in output:\n%s", stdout.String())
	}
	return stderr.String()
}

// predict runs serving_default on the first n rows of a channel.
func predict(t *testing.T, m *tf.Model, channel string, n int) []float32 {
	t.Helper()
	files, err := data.ListChannel(channel)
	if err != nil {
		t.Fatal(err)
	}
	meta := m.Meta()
	var names []string
	for _, in := range meta.Inputs {
		names = append(names, in.Name)
	}
	var targets []string
	for _, tg := range meta.Targets {
		targets = append(targets, tg.Name)
	}
	paths, err := data.MapTensors(files, names, targets, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := model.Batch{Rows: n, Tensors: map[string][]byte{}}
	rows := make([]int, n)
	for i := range rows {
		rows[i] = i
	}
	for _, in := range meta.Inputs {
		a, err := data.Open(paths[in.Name])
		if err != nil {
			t.Fatal(err)
		}
		dt, err := data.ParseDType(in.DType)
		if err != nil {
			t.Fatal(err)
		}
		size := dt.Size()
		if dt == data.String {
			size = a.TextWidth()
		}
		buf := make([]byte, n*a.RowElems()*size)
		if err := a.Gather(buf, dt, rows); err != nil {
			t.Fatal(err)
		}
		a.Close()
		b.Tensors[in.Name] = buf
	}
	out, err := m.Predict(b)
	if err != nil {
		t.Fatal(err)
	}
	f, err := out[meta.Outputs[0]].Float32s()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestFitArgumentsParity: fit's own arguments, given as hyperparameters,
// train as model.fit does with them: steps_per_epoch going on across
// epochs, initial_epoch, validation_freq and validation_steps, and
// validation_split taking the last training rows.
func TestFitArgumentsParity(t *testing.T) {
	for _, c := range []struct {
		name    string
		fitArgs string
		hps     map[string]string
		noVal   bool
	}{
		{"steps_initial_freq", `{"steps_per_epoch": 5, "initial_epoch": 1, "validation_freq": 2, "validation_steps": 3}`,
			map[string]string{"steps_per_epoch": "5", "initial_epoch": "1", "validation_freq": "2", "validation_steps": "3"}, false},
		{"validation_split", `{"validation_split": 0.2}`, map[string]string{"validation_split": "0.2"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			fx := fixture.Make(t, "seed", "--epochs", "4", "--rows", "200", "--fit-args", c.fitArgs)
			ref := fixture.ReadReference(t, fx)
			hps := map[string]string{"epochs": "4", "shuffle": "false", "batch_size": "32"}
			for k, v := range c.hps {
				hps[k] = v
			}
			channels := map[string]string{"model": filepath.Join(fx, "model"), "training": filepath.Join(fx, "train")}
			if !c.noVal {
				channels["validation"] = filepath.Join(fx, "validation")
			}
			base := localJob(t, fx, hps, channels)
			res, _, _ := trainJob(t, base)
			sameHistory(t, res.HistoryPath, ref.History)
		})
	}
}

// TestCallbacksParity: the Keras callbacks a model is exported with run in
// the Go loop as model.fit runs them: EarlyStopping with
// restore_best_weights stops at the same epoch and restores the same
// weights, ReduceLROnPlateau lowers the rate at the same epochs and logs
// learning_rate, CSVLogger writes the same file byte for byte, and
// TensorBoard the same scalars at the same steps (read with TensorBoard's
// own reader).
func TestCallbacksParity(t *testing.T) {
	for _, family := range []string{"seed", fixture.LegacyKeras + "seed"} {
		t.Run(family, func(t *testing.T) { callbacksParity(t, family) })
	}
}

func callbacksParity(t *testing.T, family string) {
	callbacks := `[["EarlyStopping", {"monitor": "val_loss", "patience": 2, "min_delta": 0.002, "restore_best_weights": true}],` +
		` ["ReduceLROnPlateau", {"monitor": "loss", "patience": 1, "factor": 0.5, "min_delta": 0.01}],` +
		` ["CSVLogger", {"filename": "log.csv"}], ["TensorBoard", {"log_dir": "tb", "update_freq": 3}], ["TerminateOnNaN", {}]]`
	fx := fixture.Make(t, family, "--epochs", "12", "--rows", "300", "--callbacks", callbacks)
	ref := fixture.ReadReference(t, fx)
	if n := len(ref.History["loss"]); n >= 12 {
		t.Fatalf("Keras ran all %d epochs: the fixture no longer stops early, so the test would prove nothing", n)
	}
	base := localJob(t, fx, map[string]string{"epochs": "12", "shuffle": "false", "batch_size": "32"}, nil)
	res, _, _ := trainJob(t, base)
	sameHistory(t, res.HistoryPath, ref.History)

	// The restored best epoch's weights, and the optimizer's as training
	// left them (Keras restores the model's weights only): the last epoch's
	// slots and the rate ReduceLROnPlateau set.
	sameState(t, res.ModelDir, ref)

	kcsv, err := os.ReadFile(filepath.Join(fx, "keras", "log.csv"))
	if err != nil {
		t.Fatal(err)
	}
	scsv, err := os.ReadFile(filepath.Join(base, "output", "data", "log.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(kcsv, scsv) {
		t.Errorf("CSVLogger files differ:\nKeras:\n%q\nsagefit:\n%q", kcsv, scsv)
	}

	events := func(dir string) string { return tensorBoardScalars(t, dir) }
	kev, sev := events(filepath.Join(fx, "keras", "tb")), events(filepath.Join(base, "output", "tensorboard"))
	if kev != sev || !strings.Contains(sev, "train/epoch_loss") || !strings.Contains(sev, "train/batch_loss") {
		t.Errorf("TensorBoard scalars differ:\nKeras:   %s\nsagefit: %s", kev, sev)
	}

	// Blocks of 7 steps over epochs of 10 end at every third batch, which
	// TensorBoard records (update_freq 3): the same scalars at the same
	// steps. Uncut, they ended at steps 7, 10, 17, 20, ... and wrote only
	// the few of those that are multiples of 3.
	base = localJob(t, fx, map[string]string{"epochs": "12", "shuffle": "false", "batch_size": "32", "steps_per_execution": "7"}, nil)
	res, _, _ = trainJob(t, base)
	sameHistory(t, res.HistoryPath, ref.History)
	if sev := events(filepath.Join(base, "output", "tensorboard")); kev != sev {
		t.Errorf("TensorBoard scalars differ at steps_per_execution 7:\nKeras:   %s\nsagefit: %s", kev, sev)
	}
}

// TestTensorBoardScheduleParity: with a learning-rate schedule, TensorBoard
// writes the rate in force after each epoch as Keras 3 and tf-keras do
// (tf-keras's schedule at the steps so far; it was written one step
// behind, the rate tf-keras's last step used). The schedule is computed in
// TensorFlow's session, where Keras's callback computes it eagerly: the
// rate may differ in its last float32 bit (every other scalar is equal).
func TestTensorBoardScheduleParity(t *testing.T) {
	for _, family := range []string{"seed_schedule", fixture.LegacyKeras + "seed_schedule"} {
		t.Run(family, func(t *testing.T) {
			fx := fixture.Make(t, family, "--epochs", "3", "--rows", "200", "--callbacks", `[["TensorBoard", {"log_dir": "tb"}]]`)
			ref := fixture.ReadReference(t, fx)
			base := localJob(t, fx, map[string]string{"epochs": "3", "shuffle": "false", "batch_size": "32"}, nil)
			res, _, _ := trainJob(t, base)
			sameHistory(t, res.HistoryPath, ref.History)
			sameState(t, res.ModelDir, ref)
			var kev, sev map[string][][2]float64
			for dir, into := range map[string]*map[string][][2]float64{filepath.Join(fx, "keras", "tb"): &kev, filepath.Join(base, "output", "tensorboard"): &sev} {
				if err := json.Unmarshal([]byte(tensorBoardScalars(t, dir)), into); err != nil {
					t.Fatal(err)
				}
			}
			if len(kev["train/epoch_learning_rate"]) != 3 || !slices.Equal(slices.Sorted(maps.Keys(kev)), slices.Sorted(maps.Keys(sev))) {
				t.Fatalf("TensorBoard scalars differ:\nKeras:   %v\nsagefit: %v", kev, sev)
			}
			for tag, want := range kev {
				for i, got := range sev[tag] {
					if got[0] != want[i][0] || !close(got[1], want[i][1]) || (tag != "train/epoch_learning_rate" && got[1] != want[i][1]) {
						t.Errorf("%s[%d] = %v, Keras %v", tag, i, got, want[i])
					}
				}
			}
		})
	}
}

// tensorBoardScalars reads the scalars of the event files under dir with
// TensorBoard's own reader, one line each.
func tensorBoardScalars(t *testing.T, dir string) string {
	t.Helper()
	out, err := exec.Command(fixture.Python(t), "-m", "sagefit.events", dir).Output()
	if err != nil {
		t.Fatalf("read events in %s: %v", dir, err)
	}
	return string(out)
}

// TestTensorBoardOutputConfig: a job given a TensorBoardOutputConfig writes
// TensorBoard's event files to its LocalPath, where SageMaker uploads them
// from: a model without a TensorBoard callback writes each epoch's metrics
// there as Keras's TensorBoard(update_freq="epoch") does (as SageMaker
// Debugger's hook does in AWS's TensorFlow images), and a model's own
// callback writes there too. Before, the config was not read: nothing was
// written without the callback, and the callback wrote to
// output/tensorboard whatever the LocalPath.
func TestTensorBoardOutputConfig(t *testing.T) {
	withCallback := fixture.Make(t, "seed", "--epochs", "3", "--rows", "100", "--callbacks", `[["TensorBoard", {"log_dir": "tb"}]]`)
	keras := tensorBoardScalars(t, filepath.Join(withCallback, "keras", "tb"))
	for _, fx := range []string{fixture.Make(t, "seed", "--epochs", "3", "--rows", "100"), withCallback} {
		base := localJob(t, fx, map[string]string{"epochs": "3", "shuffle": "false", "batch_size": "32"}, nil)
		local := filepath.Join(base, "tensorboard-here")
		config := fmt.Sprintf(`{"LocalPath": %q, "S3OutputPath": "s3://bucket/tb"}`, local)
		if err := os.WriteFile(filepath.Join(base, "input", "config", "tensorboardoutputconfig.json"), []byte(config), 0o644); err != nil {
			t.Fatal(err)
		}
		_, _, stderr := trainJob(t, base)
		if got := tensorBoardScalars(t, local); got != keras || !strings.Contains(got, "train/epoch_loss") || !strings.Contains(got, "validation/epoch_loss") {
			t.Errorf("TensorBoard scalars in LocalPath differ from Keras's TensorBoard callback's:\nKeras:   %s\nsagefit: %s", keras, got)
		}
		if _, err := os.Stat(filepath.Join(base, "output", "tensorboard")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("output/tensorboard was written beside the LocalPath: %v", err)
		}
		note := strings.Contains(stderr.String(), "the job has a TensorBoardOutputConfig and the model no TensorBoard callback: each epoch's metrics are written as TensorBoard scalars to "+local)
		if note != (fx != withCallback) {
			t.Errorf("note about the added TensorBoard callback: %v; stderr:\n%s", note, stderr)
		}
	}
}

// TestRestoredBestWeightsLeaveTheSeedState: EarlyStopping's
// restore_best_weights restores the model's weights, as Keras's
// set_weights does, and leaves a Dropout's seed state where training left
// it (a probe found it rolled back to the best epoch's: a model trained
// further from model/1 drew other masks than Keras's).
func TestRestoredBestWeightsLeaveTheSeedState(t *testing.T) {
	callbacks := `[["EarlyStopping", {"monitor": "val_loss", "patience": 100, "restore_best_weights": true}]]`
	fx := fixture.Make(t, "dropout", "--epochs", "8", "--rows", "300", "--learning-rate", "0.05", "--callbacks", callbacks)
	ref := fixture.ReadReference(t, fx)
	if val := ref.History["val_loss"]; slices.Index(val, slices.Min(val)) == len(val)-1 {
		t.Fatalf("the best epoch is the last (val_loss %v): the test would prove nothing", val)
	}
	if len(ref.OtherVariableNames) == 0 {
		t.Fatal("the reference holds no seed state")
	}
	base := localJob(t, fx, map[string]string{"epochs": "8", "shuffle": "false", "batch_size": "32", "learning_rate": "0.05"}, nil)
	res, _, _ := trainJob(t, base)
	sameHistory(t, res.HistoryPath, ref.History)
	sameState(t, res.ModelDir, ref)
}

// TestCallbacksKeepTheirOwnBestWeights: two EarlyStopping callbacks with
// restore_best_weights each keep their own best epoch's weights and restore
// them in the callbacks' order, as Keras's do: the model is the last one's
// best (val_loss's, epoch 8 here). They shared one copy, which the loss's
// best epoch (the last) overwrote: the model written was epoch 12's, while
// the log said "Restoring model weights from the end of the best epoch: 8".
func TestCallbacksKeepTheirOwnBestWeights(t *testing.T) {
	callbacks := `[["EarlyStopping", {"monitor": "loss", "patience": 100, "restore_best_weights": true}],` +
		` ["EarlyStopping", {"monitor": "val_loss", "patience": 100, "restore_best_weights": true}]]`
	fx := fixture.Make(t, "seed", "--epochs", "12", "--rows", "100", "--learning-rate", "0.02", "--callbacks", callbacks)
	ref := fixture.ReadReference(t, fx)
	if loss, val := ref.History["loss"], ref.History["val_loss"]; slices.Index(loss, slices.Min(loss)) == slices.Index(val, slices.Min(val)) {
		t.Fatalf("the loss and val_loss are best at one epoch (%v, %v): the test would prove nothing", loss, val)
	}
	base := localJob(t, fx, map[string]string{"epochs": "12", "shuffle": "false", "batch_size": "32", "learning_rate": "0.02"}, nil)
	res, _, _ := trainJob(t, base)
	sameHistory(t, res.HistoryPath, ref.History)
	sameState(t, res.ModelDir, ref)
}

// TestLossScaleOptimizerLearningRateParity: under mixed_float16, compile
// wraps the optimizer in a LossScaleOptimizer, which steps with its inner
// optimizer's rate; the learning_rate hyperparameter and ReduceLROnPlateau
// set that one, as Keras's learning_rate property does (they set the
// wrapper's own, which nothing reads: training kept the exported rate).
func TestLossScaleOptimizerLearningRateParity(t *testing.T) {
	for _, c := range []struct {
		name  string
		flags []string
		hps   map[string]string
	}{
		{"hyperparameter", []string{"--learning-rate", "0.05"}, map[string]string{"learning_rate": "0.05"}},
		{"ReduceLROnPlateau", []string{"--callbacks", `[["ReduceLROnPlateau", {"monitor": "loss", "factor": 0.1, "patience": 0, "min_delta": 10}]]`}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			fx := fixture.Make(t, "mixed_float16", append([]string{"--epochs", "3", "--rows", "300"}, c.flags...)...)
			ref := fixture.ReadReference(t, fx)
			if lr := ref.History["learning_rate"]; c.hps == nil && (len(lr) != 3 || lr[2] >= lr[0]) {
				t.Fatalf("Keras's learning rates %v did not fall: the test would prove nothing", lr)
			}
			hps := map[string]string{"epochs": "3", "shuffle": "false", "batch_size": "32"}
			maps.Copy(hps, c.hps)
			base := localJob(t, fx, hps, nil)
			res, _, _ := trainJob(t, base)
			sameHistory(t, res.HistoryPath, ref.History)
			sameState(t, res.ModelDir, ref)
		})
	}
}

// TestWeightsPerRowOnlyWhereFitRepeatsThem: tf-keras's fit repeats one
// weight per row over a loss per time step (TestSampleAndClassWeightsParity)
// but refuses it over a loss per pixel, and so does the job (a review found
// it repeated, into memory, where fit refuses); so does a Keras 3 job
// over a loss per time step, as Keras 3's fit does.
func TestWeightsPerRowOnlyWhereFitRepeatsThem(t *testing.T) {
	for _, family := range []string{fixture.LegacyKeras + "per_pixel", "per_timestep"} {
		fx := fixture.Make(t, family, "--epochs", "1", "--rows", "64", "--no-fit", "--no-validation")
		float32NPY(t, filepath.Join(fx, "train", "sample_weight.npy"), 64, 0)
		base := localJob(t, fx, map[string]string{"epochs": "1", "batch_size": "32"}, map[string]string{
			"model": filepath.Join(fx, "model"), "training": filepath.Join(fx, "train")})
		var stderr bytes.Buffer
		_, err := runtime.Train(context.Background(), runtime.Options{Base: base, Stdout: io.Discard, Stderr: &stderr})
		if err == nil || !strings.Contains(err.Error(), "to weigh whole rows, repeat each row's weight over its elements") {
			t.Errorf("%s with one weight per row: %v", family, err)
		}
	}
}

// TestSampleAndClassWeightsParity: a sample_weight.npy in the training and
// validation channels weighs the loss and weighted metrics as
// fit(sample_weight=..., validation_data=(x, y, w)) does, and the
// class_weight hyperparameter as fit(class_weight=...), the validation rows
// unweighted.
func TestSampleAndClassWeightsParity(t *testing.T) {
	const classes8 = `{"0": 1.0, "1": 3.0, "2": 0.5, "3": 2.0, "4": 1.5, "5": 0.25, "6": 1.0, "7": 4.0}`
	for _, c := range []struct {
		name, family string
		flags        []string
		hps          map[string]string
	}{
		{"sample_weight", "seed_weighted", []string{"--sample-weight"}, nil},
		// Two outputs: one file weighs both, or one file per output, as fit
		// takes one array or a list of them.
		{"sample_weight_all_outputs", "two_heads_weighted", []string{"--sample-weight"}, nil},
		{"sample_weight_per_output", "two_heads_weighted", []string{"--sample-weight", "per-output"}, nil},
		// Losses of one value per pixel and per masked time step: a weight
		// per element, as fit takes them.
		{"sample_weight_per_pixel", "per_pixel", []string{"--sample-weight"}, nil},
		{"sample_weight_per_time_step", "per_timestep", []string{"--sample-weight"}, nil},
		{"sample_weight_per_pixel_tf_keras", fixture.LegacyKeras + "per_pixel", []string{"--sample-weight"}, nil},
		// tf-keras takes a weight per time step too (sample_weight_mode
		// "temporal"): its steps took one per row, and the file was refused.
		{"sample_weight_per_time_step_tf_keras", fixture.LegacyKeras + "per_timestep", []string{"--sample-weight"}, nil},
		// tf-keras's fit repeats one weight per row, or a class weight (of
		// the argmax of each row's labels, as it takes them), over a loss
		// per time step, and so does the job (a review found both refused
		// after the change above). Keras 3's fit refuses a weight per row
		// there, and so does the job.
		{"sample_weight_per_row_over_time_steps_tf_keras", fixture.LegacyKeras + "per_timestep", []string{"--sample-weight", "per-row"}, nil},
		{"class_weight_over_time_steps_tf_keras", fixture.LegacyKeras + "per_timestep", []string{"--class-weight", classes8}, map[string]string{"class_weight": classes8}},
		// A model built on a dict of outputs takes them by key.
		{"sample_weight_per_output_by_key", "dict_io", []string{"--sample-weight", "per-output"}, nil},
		{"class_weight", "multiclass", []string{"--class-weight", `{"0": 1.0, "1": 3.0, "2": 0.5}`}, map[string]string{"class_weight": `{"0": 1.0, "1": 3.0, "2": 0.5}`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			fx := fixture.Make(t, c.family, append([]string{"--epochs", "3", "--rows", "300"}, c.flags...)...)
			ref := fixture.ReadReference(t, fx)
			hps := map[string]string{"epochs": "3", "shuffle": "false", "batch_size": "32"}
			for k, v := range c.hps {
				hps[k] = v
			}
			base := localJob(t, fx, hps, nil)
			res, _, stderr := trainJob(t, base)
			if strings.Contains(stderr.String(), "feeds no input") {
				t.Errorf("sample_weight.npy was left unused:\n%s", stderr.String())
			}
			sameHistory(t, res.HistoryPath, ref.History)
			sameState(t, res.ModelDir, ref)
		})
	}
}

// TestTrainedModelServesInPython loads the SavedModel that sagefit wrote with
// Python's tf.saved_model.load and checks serving_default predicts what the
// equally trained Keras model predicts.
func TestTrainedModelServesInPython(t *testing.T) {
	fx := fixture.Make(t, "seed", "--epochs", "3", "--rows", "500")
	base := localJob(t, fx, map[string]string{"epochs": "3", "shuffle": "false"}, nil)
	res, err := runtime.Train(context.Background(), runtime.Options{Base: base, Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	script := `
import json, sys, numpy as np, tensorflow as tf
ref = json.load(open(sys.argv[2]))
m = tf.saved_model.load(sys.argv[1])
serve = m.signatures["serving_default"]
(key,) = serve.structured_input_signature[1].keys()
x = np.load(sys.argv[3])[:16]
(out,) = serve(**{key: tf.constant(x)}).values()
err = float(np.max(np.abs(out.numpy().ravel() - np.array(ref["predictions"]))))
print(json.dumps({"max_abs_err": err}))
`
	cmd := exec.Command(fixture.Python(t), "-c", script, res.ModelDir, filepath.Join(fx, "reference.json"), filepath.Join(fx, "train", "train.npy"))
	cmd.Env = append(os.Environ(), "TF_CPP_MIN_LOG_LEVEL=3")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	var r struct {
		MaxAbsErr float64 `json:"max_abs_err"`
	}
	if err := json.Unmarshal(lastLine(out), &r); err != nil {
		t.Fatalf("python said %q: %v", out, err)
	}
	if r.MaxAbsErr > 1e-5 {
		t.Errorf("Python predictions of the saved model differ from Keras by %g", r.MaxAbsErr)
	}
	if _, err := os.Stat(filepath.Join(res.ModelDir, "fingerprint.pb")); err == nil {
		t.Errorf("stale fingerprint.pb copied into the trained model")
	}
}

func lastLine(b []byte) []byte {
	b = bytes.TrimSpace(b)
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		return b[i+1:]
	}
	return b
}

func keys(m map[string][]float64) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestTextCSVChannel trains string_lookup from a text/csv training channel
// (label first, the colour after it, as text) and gets Keras's numbers: a
// CSV channel's feature columns feed a string input as text.
func TestTextCSVChannel(t *testing.T) {
	fx := fixture.Make(t, "string_lookup", "--epochs", "2", "--rows", "200")
	ref := fixture.ReadReference(t, fx)
	csvDir := t.TempDir()
	script := `import csv, sys, numpy as np
x = np.load(sys.argv[1] + "/train.npy"); y = np.load(sys.argv[1] + "/labels.npy")
with open(sys.argv[2] + "/train.csv", "w", newline="") as f:
    w = csv.writer(f)
    for label, color in zip(y, x[:, 0]):
        w.writerow([int(label), color.decode()])
`
	if out, err := exec.Command(fixture.Python(t), "-c", script, filepath.Join(fx, "train"), csvDir).CombinedOutput(); err != nil {
		t.Fatalf("write CSV: %v\n%s", err, out)
	}
	base := localJob(t, fx, map[string]string{"epochs": "2", "shuffle": "false", "batch_size": "32"}, map[string]string{
		"model": filepath.Join(fx, "model"), "training": csvDir, "validation": filepath.Join(fx, "validation"),
	})
	res, _, _ := trainJob(t, base)
	sameHistory(t, res.HistoryPath, ref.History)
}

// TestStepsPerExecutionParity runs K train steps per session call
// (steps_per_execution, the batches stacked, an in-graph loop) and gets
// the numbers of one step per call, Keras's fit, to the bit: blocks of 4
// with the epoch's short last batch in a block of its own, weights, a
// dropout seed, an adapted text vocabulary and a checkpoint_steps
// boundary that cuts blocks; the loop with the step traced into it and
// calling the traced step (built from its gradients and update).
func TestStepsPerExecutionParity(t *testing.T) {
	for _, c := range []struct {
		family string
		flags  []string
		hps    map[string]string
	}{
		{"seed", nil, map[string]string{"steps_per_execution": "4"}},
		{"dropout", nil, map[string]string{"steps_per_execution": "3", "checkpoint_steps": "5"}},
		{"two_heads_weighted", []string{"--sample-weight", "per-output"}, map[string]string{"steps_per_execution": "4"}},
		{"text_vectorization", nil, map[string]string{"steps_per_execution": "auto"}},
		// jit_compile=True: every step and the whole K-step loop XLA-compiled,
		// against Keras's own jit_compile=True fit.
		{"seed_xla", nil, map[string]string{"steps_per_execution": "1"}},
		{"seed_xla", nil, map[string]string{"steps_per_execution": "4"}},
		// The step as exported for a large model (MobileNetV2's size): built
		// from its traced gradients and update, the loop calling it; plain
		// and XLA-compiled.
		{"dropout", []string{"--large-step"}, map[string]string{"steps_per_execution": "3", "checkpoint_steps": "5"}},
		{"seed_xla", []string{"--large-step"}, map[string]string{"steps_per_execution": "4"}},
		// Every op in the calling thread (the default times it against the
		// pool in its first steps): the same numbers, one step per call and
		// in the K-step loop.
		{"cnn", nil, map[string]string{"steps_per_execution": "1", "inter_op_threads": "-1"}},
		{"dropout", nil, map[string]string{"steps_per_execution": "3", "inter_op_threads": "-1"}},
	} {
		name := c.family + "/" + c.hps["steps_per_execution"]
		if c.hps["inter_op_threads"] == "-1" {
			name += "/calling-thread"
		}
		if len(c.flags) > 0 {
			name += "/" + strings.TrimLeft(c.flags[0], "-")
		}
		t.Run(name, func(t *testing.T) {
			fx := fixture.Make(t, c.family, append([]string{"--epochs", "3", "--rows", "500"}, c.flags...)...)
			ref := fixture.ReadReference(t, fx)
			hps := map[string]string{"epochs": "3", "shuffle": "false", "batch_size": "32"}
			maps.Copy(hps, c.hps)
			res, _, _ := trainJob(t, localJob(t, fx, hps, nil))
			sameHistory(t, res.HistoryPath, ref.History)
			sameState(t, res.ModelDir, ref)
		})
	}
}
