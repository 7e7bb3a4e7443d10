package runtime_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/sagefit/sagefit/data"
	"github.com/sagefit/sagefit/internal/fixture"
	"github.com/sagefit/sagefit/runtime"
	"github.com/sagefit/sagefit/runtime/fit"
	"github.com/sagefit/sagefit/runtime/launch"
	"github.com/sagefit/sagefit/runtime/report"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// objectNPY is what np.save writes for an object array (allow_pickle=True):
// a valid header with descr '|O'.
func objectNPY(t *testing.T, path string) {
	headerNPY(t, path, "{'descr': '|O', 'fortran_order': False, 'shape': (3,), }", []byte("\x80\x04garbage-pickle"))
}

// headerNPY writes a .npy file of the given header dict and data bytes.
func headerNPY(t *testing.T, path, header string, data []byte) {
	t.Helper()
	pad := 64 - (10+len(header)+1)%64
	header += strings.Repeat(" ", pad) + "\n"
	var b bytes.Buffer
	b.WriteString("\x93NUMPY\x01\x00")
	binary.Write(&b, binary.LittleEndian, uint16(len(header)))
	b.WriteString(header)
	b.Write(data)
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func float32NPY(t *testing.T, path string, rows, cols int) {
	shape := []int{rows, cols}
	if cols == 0 {
		shape = []int{rows}
		cols = 1
	}
	if err := data.WriteNPY(path, data.Float32, shape, make([]byte, rows*cols*4)); err != nil {
		t.Fatal(err)
	}
}

// badInput is a job broken one way, and the failure it must end in.
type badInput struct {
	name string
	// breakJob changes the job laid out in base; fx is a private copy of
	// the fixture.
	breakJob func(t *testing.T, base, fx string)
	reason   string // regexp the failure file must match
}

// foundAfterJoin are the bad inputs found once the hosts have joined: a
// host of a job whose others never come fails on the join first.
var foundAfterJoin = map[string]bool{"model folder that is a file": true, "output data folder that is a file": true, "model version folder holding other files": true}

// badInputs is the table of TestBadInputs and TestBadInputsManyHosts.
func badInputs() []badInput {
	return []badInput{
		{"missing training channel", func(t *testing.T, base, fx string) {
			os.Remove(filepath.Join(base, "input", "data", "training"))
			os.Remove(filepath.Join(base, "input", "config", "inputdataconfig.json"))
		}, `(?i)no training data: the job has no "training" channel`},
		{"missing model", func(t *testing.T, base, fx string) {
			os.Remove(filepath.Join(base, "input", "data", "model"))
			os.Remove(filepath.Join(base, "input", "config", "inputdataconfig.json"))
		}, `(?i)no training SavedModel: the job has no "model" channel`},
		{"malformed hyperparameters JSON", func(t *testing.T, base, fx string) {
			os.WriteFile(filepath.Join(base, "input", "config", "hyperparameters.json"), []byte(`{"epochs": "3",`), 0o644)
		}, `hyperparameters\.json.*(JSON|json)`},
		{"non-numeric epochs", func(t *testing.T, base, fx string) {
			os.WriteFile(filepath.Join(base, "input", "config", "hyperparameters.json"), []byte(`{"epochs": "ten"}`), 0o644)
		}, `(?i)hyperparameter "epochs" must be an integer, got "ten"`},
		{"truncated npy", func(t *testing.T, base, fx string) {
			p := filepath.Join(fx, "train", "train.npy")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-100], 0o644)
		}, `train\.npy.*truncated`},
		{"object dtype npy", func(t *testing.T, base, fx string) {
			objectNPY(t, filepath.Join(fx, "train", "labels.npy"))
		}, `labels\.npy: dtype object .* never unpickles; save numbers as a numeric array and text as a fixed-width string array`},
		{"text for a numeric input", func(t *testing.T, base, fx string) {
			headerNPY(t, filepath.Join(fx, "train", "train.npy"), "{'descr': '<U2', 'fortran_order': False, 'shape': (64, 10), }", make([]byte, 64*10*8))
		}, `train\.npy holds text \(<U2\) but model input .* takes float32 numbers`},
		{"row counts differ", func(t *testing.T, base, fx string) {
			float32NPY(t, filepath.Join(fx, "train", "labels.npy"), 63, 0)
		}, `64 rows but .*63|63 rows but .*64`},
		{"feature shape the model does not take", func(t *testing.T, base, fx string) {
			float32NPY(t, filepath.Join(fx, "train", "train.npy"), 64, 12)
		}, `train\.npy has examples of shape \(12\) but model input .* takes examples of shape \(10\)`},
		{"SavedModel without the contract", func(t *testing.T, base, fx string) {
			os.RemoveAll(filepath.Join(fx, "model", "assets.extra"))
		}, `not a sagefit training SavedModel.*sagefit\.export`},
		{"model channel without a SavedModel", func(t *testing.T, base, fx string) {
			os.RemoveAll(filepath.Join(fx, "model"))
			os.MkdirAll(filepath.Join(fx, "model"), 0o755)
		}, `holds no saved_model\.pb`},
		{"negative batch size", func(t *testing.T, base, fx string) {
			os.WriteFile(filepath.Join(base, "input", "config", "hyperparameters.json"), []byte(`{"batch_size": "-4"}`), 0o644)
		}, `(?i)hyperparameter "batch_size" must be at least 1`},
		{"processes per host not a number", func(t *testing.T, base, fx string) {
			os.WriteFile(filepath.Join(base, "input", "config", "hyperparameters.json"), []byte(`{"sagefit_processes_per_host": "many"}`), 0o644)
		}, `(?i)hyperparameter "sagefit_processes_per_host" must be "auto" \(one process per GPU\) or a whole number of at least 1, got "many"`},
		{"current host not among the hosts", func(t *testing.T, base, fx string) {
			path := filepath.Join(base, "input", "config", "resourceconfig.json")
			var rc map[string]any
			raw, _ := os.ReadFile(path)
			json.Unmarshal(raw, &rc)
			rc["current_host"] = "algo-9999"
			raw, _ = json.Marshal(rc)
			os.WriteFile(path, raw, 0o644)
		}, `(?i)current host "algo-9999" is not in hosts \[algo-1`},
		{"unknown hyperparameter", func(t *testing.T, base, fx string) {
			os.WriteFile(filepath.Join(base, "input", "config", "hyperparameters.json"), []byte(`{"epoch": "5", "batchsize": "8"}`), 0o644)
		}, `(?i)hyperparameters "batchsize" \(did you mean "batch_size"\?\) and "epoch" \(did you mean "epochs"\?\) are not ones sagefit reads`},
		{"unknown all-reduce transport", func(t *testing.T, base, fx string) {
			os.WriteFile(filepath.Join(base, "input", "config", "hyperparameters.json"), []byte(`{"sagefit_allreduce_transport": "rdma"}`), 0o644)
		}, `(?i)hyperparameter "sagefit_allreduce_transport" must be "lane" .* or "grpc" .*, got "rdma"`},
		{"unknown executor", func(t *testing.T, base, fx string) {
			os.WriteFile(filepath.Join(base, "input", "config", "hyperparameters.json"), []byte(`{"executor": "fast"}`), 0o644)
		}, `(?i)hyperparameter "executor" must be "auto", "default" or "single_threaded", got "fast"`},
		// Found before training, after the join (they failed once it was done).
		{"model folder that is a file", func(t *testing.T, base, fx string) {
			os.RemoveAll(filepath.Join(base, "model"))
			os.WriteFile(filepath.Join(base, "model"), nil, 0o644)
		}, `^The model cannot be written to .*/model: mkdir .*: not a directory`},
		{"output data folder that is a file", func(t *testing.T, base, fx string) {
			os.RemoveAll(filepath.Join(base, "output", "data"))
			os.MkdirAll(filepath.Join(base, "output"), 0o755)
			os.WriteFile(filepath.Join(base, "output", "data"), nil, 0o644)
		}, `^The job's output data cannot be written to .*/output/data: mkdir .*: not a directory`},
		// Writing the model removed them without a word.
		{"model version folder holding other files", func(t *testing.T, base, fx string) {
			os.MkdirAll(filepath.Join(base, "model", "1", "src"), 0o755)
			os.WriteFile(filepath.Join(base, "model", "1", "notes.txt"), nil, 0o644)
		}, `^The model folder .*/model/1 holds files sagefit did not write \(\[notes\.txt src\]\), which writing the model would remove; move them, or write the model elsewhere \(hyperparameter "sagefit_model_version"\)`},
		{"single-threaded executor with steps per call", func(t *testing.T, base, fx string) {
			os.WriteFile(filepath.Join(base, "input", "config", "hyperparameters.json"), []byte(`{"executor": "single_threaded", "steps_per_execution": "8"}`), 0o644)
		}, `(?i)hyperparameter "executor" "single_threaded" runs one train step per session call, so "steps_per_execution" cannot be 8`},
	}
}

// TestBadInputs: every bad config, data or model ends in one clear sentence
// in the failure file, a non-zero exit, and no Go panic trace.
func TestBadInputs(t *testing.T) {
	fx := fixture.Make(t, "seed", "--epochs", "1", "--rows", "64", "--no-fit")
	for _, c := range badInputs() {
		t.Run(c.name, func(t *testing.T) {
			own := t.TempDir()
			fixture.CopyTree(t, fx, own)
			base := localJob(t, own, map[string]string{"epochs": "1"}, nil)
			c.breakJob(t, base, own)
			failsWith(t, runtime.Options{Base: base}, c.reason, sagemaker.FailureLimit)
		})
	}
}

// A step that fails on one value of the data (a sparse label past the
// classes, an id past an Embedding's rows) says where the value first is:
// TensorFlow's words named a position in the batch, no file or row. Stored
// as integers or floats, in a channel split for validation (the file's
// row), and in CSV files (the file's own row).
func TestValueOutOfRangeNamesItsRow(t *testing.T) {
	for _, c := range []struct {
		name, family, file string
		row, col           int
		value              float32
		dtype              data.DType
		hps                map[string]string
		csv                bool
		reason             string
	}{
		{"label", "multiclass", "labels.npy", 37, 0, 4, data.Int64, nil, false, `a label is 4, outside the model's 4 classes \[0, 4\) .*; the label value 4 is first in row 37 \(counting from 0\) of labels\.npy in channel "training"\.`},
		{"label in a split channel", "multiclass", "labels.npy", 37, 0, 4, data.Float32, map[string]string{"validation_split": "0.25"}, false, `; the label value 4 is first in row 37 \(counting from 0\) of labels\.npy in channel "training"\.`},
		{"label in CSV files", "multiclass", "labels.npy", 37, 0, 4, data.Float32, nil, true, `; the label value 4 is first in row 6 of b\.csv in channel "training"\.`},
		{"id", "embedding", "train.npy", 21, 3, 60, data.Int32, nil, false, `an input id is 60, outside the 50 rows of a lookup .*; the input value 60 is first in row 21 \(counting from 0\) of train\.npy in channel "training"\.`},
	} {
		t.Run(c.name, func(t *testing.T) {
			fx := fixture.Make(t, c.family, "--epochs", "1", "--rows", "64", "--no-fit")
			own := t.TempDir()
			fixture.CopyTree(t, fx, own)
			read := func(file string) ([]float32, []int) {
				a, err := data.Open(filepath.Join(own, "train", file))
				if err != nil {
					t.Fatal(err)
				}
				defer a.Close()
				vals, err := a.Float32s()
				if err != nil {
					t.Fatal(err)
				}
				return vals, a.Shape()
			}
			vals, shape := read(c.file)
			per := len(vals) / shape[0]
			vals[c.row*per+c.col] = c.value
			if c.csv { // label first, the features after it; rows 0-31 in a.csv, 32-63 in b.csv
				x, xs := read("train.npy")
				var a, b strings.Builder
				for r := range shape[0] {
					w := &a
					if r >= 32 {
						w = &b
					}
					fmt.Fprint(w, vals[r])
					for _, f := range x[r*xs[1] : (r+1)*xs[1]] {
						fmt.Fprint(w, ",", f)
					}
					fmt.Fprintln(w)
				}
				os.Remove(filepath.Join(own, "train", "train.npy"))
				os.Remove(filepath.Join(own, "train", "labels.npy"))
				os.WriteFile(filepath.Join(own, "train", "a.csv"), []byte(a.String()), 0o644)
				os.WriteFile(filepath.Join(own, "train", "b.csv"), []byte(b.String()), 0o644)
			} else {
				raw := make([]byte, len(vals)*c.dtype.Size())
				for i, v := range vals {
					switch c.dtype {
					case data.Int32:
						binary.LittleEndian.PutUint32(raw[4*i:], uint32(int32(v)))
					case data.Int64:
						binary.LittleEndian.PutUint64(raw[8*i:], uint64(int64(v)))
					default:
						binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
					}
				}
				if err := data.WriteNPY(filepath.Join(own, "train", c.file), c.dtype, shape, raw); err != nil {
					t.Fatal(err)
				}
			}
			hps := map[string]string{"epochs": "1", "batch_size": "16"}
			maps.Copy(hps, c.hps)
			channels := map[string]string{"model": filepath.Join(own, "model"), "training": filepath.Join(own, "train")}
			if c.hps == nil {
				channels["validation"] = filepath.Join(own, "validation")
			}
			base := localJob(t, own, hps, channels)
			failsWith(t, runtime.Options{Base: base}, c.reason, sagemaker.FailureLimit)
		})
	}
}

// manyHosts is the host count of the many-host tests: from about 120 on,
// a sentence that named every host would fill SageMaker's 1024 characters.
const manyHosts = 500

// manyHostJob lays out a job of manyHosts hosts (algo-1 … algo-500, this
// one algo-1) on the fixture copy fx.
func manyHostJob(t *testing.T, fx string, hps map[string]string) string {
	t.Helper()
	hosts := make([]string, manyHosts)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("algo-%d", i+1)
	}
	base := t.TempDir()
	channels := map[string]string{
		"model":      filepath.Join(fx, "model"),
		"training":   filepath.Join(fx, "train"),
		"validation": filepath.Join(fx, "validation"),
	}
	if err := sagemaker.WriteLocal(base, sagemaker.LocalSpec{Hosts: hosts, CurrentHost: "algo-1", Channels: channels, Hyperparameters: hps}); err != nil {
		t.Fatal(err)
	}
	return base
}

// TestBadInputsManyHosts (issue 16): every case of the bad-inputs table,
// in a job of 500 hosts, says its cause inside the 1024 characters
// SageMaker shows, and the whole reason fits them.
func TestBadInputsManyHosts(t *testing.T) {
	fx := fixture.Make(t, "seed", "--epochs", "1", "--rows", "64", "--no-fit")
	for _, c := range badInputs() {
		if foundAfterJoin[c.name] {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			own := t.TempDir()
			fixture.CopyTree(t, fx, own)
			// A case that got as far as joining would wait for the other
			// 499 hosts: not for long.
			base := manyHostJob(t, own, map[string]string{"epochs": "1", "sagefit_connect_timeout": "2s"})
			c.breakJob(t, base, own)
			failsWith(t, runtime.Options{Base: base}, c.reason, sagemaker.FailureLimit)
		})
	}
}

// A loss reduced by a sum over the batch is refused on several processes
// (each step moved the weights 1/N as far as one process's); alone it trains.
func TestSumReducedLossRefusedOnSeveralHosts(t *testing.T) {
	fx := fixture.Make(t, "seed", "--epochs", "1", "--rows", "64", "--no-fit")
	own := t.TempDir()
	fixture.CopyTree(t, fx, own)
	os.RemoveAll(filepath.Join(own, "model"))
	fixture.EditedExport(t, filepath.Join(fx, "model"), filepath.Join(own, "model"), func(meta map[string]any) {
		meta["loss_reductions"] = map[string]string{"dense_1": "sum"} // as the exporter writes compile(loss=BinaryCrossentropy(reduction="sum"))
	})
	base := manyHostJob(t, own, map[string]string{"epochs": "1", "sagefit_connect_timeout": "2s"})
	failsWith(t, runtime.Options{Base: base}, `^The loss of output dense_1 is a sum over the batch \(reduction "sum" or None\): on 500 training processes`, sagemaker.FailureLimit)
	trainJob(t, localJob(t, own, map[string]string{"epochs": "1"}, nil))
}

// TestJoinFailureManyHosts (issue 16): a host of a 500-host job whose
// neighbours never come fails with the cause in the first 200 characters
// of a sentence shorter than 1024, not with the host list.
func TestJoinFailureManyHosts(t *testing.T) {
	fx := fixture.Make(t, "seed", "--epochs", "1", "--rows", "64", "--no-fit")
	base := manyHostJob(t, fx, map[string]string{"epochs": "1", "sagefit_connect_timeout": "1s"})
	// This host listens on a socket of its own, bound for it as a launcher
	// does; its neighbours' addresses are sockets bound and held where
	// nobody listens (so no other test can listen there meanwhile).
	socks, port, err := launch.HostSockets(3)
	if err != nil {
		t.Skipf("loopback unusable here: %v", err)
	}
	defer func() {
		for _, f := range socks {
			f.Close()
		}
	}()
	own, err := syscall.Dup(int(socks[0].Fd())) // the job's to listen on and close
	if err != nil {
		t.Fatal(err)
	}
	addrs := fmt.Sprintf("algo-1=127.0.0.1:%d,algo-2=127.0.0.2:%d,algo-%d=127.0.0.3:%d", port, port, manyHosts, port)
	o := runtime.Options{Base: base, Environ: []string{launch.EnvHostAddrs + "=" + addrs, launch.EnvListenFD + "=" + strconv.Itoa(own)}}
	reason := failsWith(t, o, `(?i)rank 1 \(algo-2 at [0-9.:]+\): no handshake within the connect timeout`, 200)
	if len(reason) >= sagemaker.FailureLimit {
		t.Errorf("failure reason is %d bytes, not under %d", len(reason), sagemaker.FailureLimit)
	}
	if strings.Contains(reason, "algo-250") {
		t.Errorf("failure reason lists the hosts: %q", reason)
	}
}

// failsWith runs the job o describes, checks it fails with one sentence
// in the failure file that matches cause within its first causeWithin
// characters and fits SageMaker's FailureLimit, without a Go trace, and
// returns the sentence.
func failsWith(t *testing.T, o runtime.Options, cause string, causeWithin int) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	o.Stdout, o.Stderr = &stdout, &stderr
	code := runtime.Main(context.Background(), o)
	if code == 0 {
		t.Fatalf("exit code 0 for a broken job; output:\n%s", stderr.String())
	}
	raw, err := os.ReadFile(filepath.Join(o.Base, "output", "failure"))
	if err != nil {
		t.Fatalf("no failure file: %v", err)
	}
	reason := string(raw)
	t.Logf("failure: %s", reason)
	if loc := regexp.MustCompile(cause).FindStringIndex(reason); loc == nil {
		t.Errorf("failure file says %q, want a match for %q", reason, cause)
	} else if loc[1] > causeWithin {
		t.Errorf("the cause %q ends at character %d of the failure reason, past %d: %q", cause, loc[1], causeWithin, reason)
	}
	if strings.Count(strings.TrimSpace(reason), "\n") > 0 {
		t.Errorf("failure reason is more than one line: %q", reason)
	}
	if len(reason) > sagemaker.FailureLimit {
		t.Errorf("failure reason is %d bytes, over SageMaker's %d", len(reason), sagemaker.FailureLimit)
	}
	for _, trace := range []string{"goroutine ", "panic:", ".go:"} {
		if strings.Contains(stderr.String(), trace) || strings.Contains(reason, trace) {
			t.Errorf("output carries a Go trace (%q):\n%s", trace, stderr.String())
		}
	}
	return reason
}

// TestEarlierRunsFailureFileIsReplaced: a failure file there when the job
// starts is an earlier run's (a reused /opt/ml). Kept, it stood beside a job
// that succeeded and hid the reason of one that failed (the first failure
// of one run still counts: TestWriteFailureKeepsTheFirst).
func TestEarlierRunsFailureFileIsReplaced(t *testing.T) {
	base := t.TempDir()
	if err := sagemaker.WriteLocal(base, sagemaker.LocalSpec{}); err != nil {
		t.Fatal(err)
	}
	failure := filepath.Join(base, "output", "failure")
	if err := os.WriteFile(failure, []byte("the earlier run's reason"), 0o644); err != nil {
		t.Fatal(err)
	}
	reason := failsWith(t, runtime.Options{Base: base}, "channel", 200)
	if strings.Contains(reason, "earlier run") {
		t.Errorf("the earlier run's reason is still there: %q", reason)
	}
}

// Metadata this sagefit does not read (an export by a newer Python
// package) trains, with a warning that names it, not in silence.
func TestUnknownMetadataIsNamed(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "64", "--no-fit", "--no-validation")
	dir := filepath.Join(t.TempDir(), "model")
	fixture.EditedExport(t, filepath.Join(fx, "model"), dir, func(meta map[string]any) {
		meta["mixed_precision_policy"] = "mixed_float16"
		meta["signatures"].(map[string]any)["swap_ema_weights"] = "sagefit_swap_ema_weights"
	})
	base := localJob(t, fx, map[string]string{"epochs": "1"}, map[string]string{"model": dir, "training": filepath.Join(fx, "train")})
	_, _, stderr := trainJob(t, base)
	want := "sagefit: warning: " + filepath.Join(base, "input", "data", "model", "assets.extra", "sagefit.json") +
		" has metadata this sagefit does not read (mixed_precision_policy, signatures.swap_ema_weights): the model was exported by a newer sagefit Python package than this image's"
	if !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr lacks %q:\n%s", want, stderr)
	}
	// What this exporter writes, this runtime reads: no warning.
	_, _, stderr = trainJob(t, localJob(t, fx, map[string]string{"epochs": "1"}, map[string]string{"model": filepath.Join(fx, "model"), "training": filepath.Join(fx, "train")}))
	if strings.Contains(stderr.String(), "does not read") {
		t.Errorf("the exporter's own metadata is named as unread:\n%s", stderr)
	}
}

// stopAtLine is a job's stdout that asks it to stop (a SIGTERM) once it
// prints a line holding at.
type stopAtLine struct {
	bytes.Buffer
	at   string
	stop context.CancelCauseFunc
}

func (w *stopAtLine) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte(w.at)) {
		w.stop(&sagemaker.StopSignal{Signal: syscall.SIGTERM})
	}
	return w.Buffer.Write(p)
}

// TestStopAfterTrainingIsNamed: a stop that comes once the last epoch is
// trained has no step left to end: the job writes its model and ends as
// finished, and says it saw the stop (it said nothing, exit 0).
func TestStopAfterTrainingIsNamed(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "200", "--no-fit", "--no-validation")
	base := t.TempDir()
	if err := sagemaker.WriteLocal(base, sagemaker.LocalSpec{
		Channels:        map[string]string{"model": filepath.Join(fx, "model"), "training": filepath.Join(fx, "train")},
		Hyperparameters: map[string]string{"epochs": "2"}}); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancelCause(context.Background())
	stdout := &stopAtLine{at: "Epoch 2/2", stop: stop}
	var stderr bytes.Buffer
	code := runtime.Main(ctx, runtime.Options{Base: base, Stdout: stdout, Stderr: &stderr})
	if code != 0 || !strings.Contains(stderr.String(), "stopped by SIGTERM after training ended: the model is written whole") {
		t.Errorf("exit %d:\n%s", code, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(base, "model", "1", "saved_model.pb")); err != nil {
		t.Errorf("no model written: %v", err)
	}
}

// TestStoppedJobKeepsItsHistory: a job stopped before its last epoch (a
// SageMaker stop, MaxRuntime, a spot interruption) leaves the finished
// epochs' history and their timing in output/data, and its model as trained
// so far, which SageMaker uploads after a stop; a stopped job's output/data
// held the CSVLogger's rows at most, and it wrote no model.
func TestStoppedJobKeepsItsHistory(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "200", "--no-fit", "--no-validation")
	base := t.TempDir()
	if err := sagemaker.WriteLocal(base, sagemaker.LocalSpec{
		Channels:        map[string]string{"model": filepath.Join(fx, "model"), "training": filepath.Join(fx, "train")},
		Hyperparameters: map[string]string{"epochs": "3", "checkpoint": "true"}}); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancelCause(context.Background())
	stdout := &stopAtLine{at: "Epoch 2/3", stop: stop}
	var stderr bytes.Buffer
	if code := runtime.Main(ctx, runtime.Options{Base: base, Stdout: stdout, Stderr: &stderr}); code == 0 {
		t.Fatalf("exit 0 after a stop:\n%s", stderr.String())
	}
	data := filepath.Join(base, "output", "data")
	hist, err := report.ReadHistoryJSON(filepath.Join(data, "history.json"))
	if err != nil {
		t.Fatalf("no history.json after a stop: %v\n%s", err, stderr.String())
	}
	finished := len(hist.Values("loss"))
	if finished < 1 || finished > 2 {
		t.Errorf("history.json after a stop at epoch 2 holds %d epochs, want those finished\n%s", finished, stderr.String())
	}
	raw, err := os.ReadFile(filepath.Join(data, "timing.json"))
	var timing fit.Timing
	if err == nil {
		err = json.Unmarshal(raw, &timing)
	}
	if err != nil || timing.Version != fit.TimingVersion || len(timing.Epochs) != finished {
		t.Errorf("timing.json after a stop: %v; want version %d and the %d finished epochs' timing:\n%s", err, fit.TimingVersion, finished, raw)
	}
	if !strings.Contains(stderr.String(), "the history of the epochs finished before the stop written to") {
		t.Errorf("the stop's log does not name the history written:\n%s", stderr.String())
	}
	if _, err := os.Stat(filepath.Join(base, "model", "1", "saved_model.pb")); err != nil || !strings.Contains(stderr.String(), "the model at the stop (the weights a job ending there writes) written to") {
		t.Errorf("no model written at the stop (%v):\n%s", err, stderr.String())
	}
}
