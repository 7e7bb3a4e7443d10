package runtime_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sagefit/sagefit/internal/fixture"
	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/runtime"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// TestPipeModeTrainsLikeFileMode: a Pipe mode channel, fed epoch by epoch
// through real FIFOs by separate writer processes, trains exactly like the
// same data in File mode; with sample weights too (sagefit_pipe_tensors
// naming the stream's sample_weight), one for every output or one per output.
func TestPipeModeTrainsLikeFileMode(t *testing.T) {
	for _, c := range []struct {
		name, family string
		flags, files []string
		hps          map[string]string
	}{
		// Inputs, then targets: the default order of a Pipe mode stream.
		{"default order", "seed", nil, []string{"train.npy", "labels.npy"}, nil},
		{"sample weights", "seed_weighted", []string{"--sample-weight"}, []string{"sample_weight.npy", "train.npy", "labels.npy"},
			map[string]string{"sagefit_pipe_tensors": `["sample_weight", "%s", "%s"]`}}, // the model's input and target
		{"sample weights per output", "two_heads_weighted", []string{"--sample-weight", "per-output"},
			[]string{"x.npy", "kind.npy", "price.npy", "sample_weight_kind.npy", "sample_weight_price.npy"},
			map[string]string{"sagefit_pipe_tensors": `["x", "kind", "price", "sample_weight_kind", "sample_weight_price"]`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			fx := fixture.Make(t, c.family, append([]string{"--rows", "300", "--no-fit", "--no-validation"}, c.flags...)...)
			hps := map[string]string{"epochs": "3", "shuffle": "true", "seed": "4"}
			channels := map[string]string{"model": filepath.Join(fx, "model"), "training": filepath.Join(fx, "train")}

			fileBase := t.TempDir()
			if err := sagemaker.WriteLocal(fileBase, sagemaker.LocalSpec{Channels: channels, Hyperparameters: hps}); err != nil {
				t.Fatal(err)
			}
			fileRes, err := runtime.Train(context.Background(), runtime.Options{Base: fileBase, Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}})
			if err != nil {
				t.Fatal(err)
			}

			pipeHPs := maps.Clone(hps)
			maps.Copy(pipeHPs, c.hps)
			if names, ok := pipeHPs["sagefit_pipe_tensors"]; ok && strings.Contains(names, "%s") {
				meta, err := model.ReadMetadata(filepath.Join(fx, "model"))
				if err != nil {
					t.Fatal(err)
				}
				pipeHPs["sagefit_pipe_tensors"] = fmt.Sprintf(names, meta.Inputs[0].Name, meta.Targets[0].Name)
			}
			pipeBase := t.TempDir()
			err = sagemaker.WriteLocal(pipeBase, sagemaker.LocalSpec{Channels: channels, Hyperparameters: pipeHPs,
				InputModes: map[string]string{"training": "Pipe"}})
			if err != nil {
				t.Fatal(err)
			}
			var writers []*exec.Cmd
			for epoch := 0; epoch < 3; epoch++ {
				fifo := filepath.Join(pipeBase, "input", "data", fmt.Sprintf("training_%d", epoch))
				if err := syscall.Mkfifo(fifo, 0o644); err != nil {
					t.Fatal(err)
				}
				args := []string{"-c", `f="$1"; shift; cat "$@" > "$f"`, "sh", fifo}
				for _, f := range c.files {
					args = append(args, filepath.Join(fx, "train", f))
				}
				w := exec.Command("/bin/sh", args...)
				if err := w.Start(); err != nil {
					t.Fatal(err)
				}
				writers = append(writers, w)
			}
			var stderr bytes.Buffer
			pipeRes, err := runtime.Train(context.Background(), runtime.Options{Base: pipeBase, Stdout: &bytes.Buffer{}, Stderr: &stderr})
			if err != nil {
				t.Fatalf("pipe mode: %v\n%s", err, stderr.String())
			}
			for _, w := range writers {
				if err := w.Wait(); err != nil {
					t.Errorf("writer: %v", err)
				}
			}
			for _, name := range fileRes.History.Names() {
				if got, want := pipeRes.History.Values(name), fileRes.History.Values(name); !reflect.DeepEqual(got, want) {
					t.Errorf("%s: pipe mode %v, file mode %v", name, got, want)
				}
			}
			if entries, _ := os.ReadDir(filepath.Join(pipeBase, "input", "sagefit-spool")); len(entries) != 0 {
				t.Errorf("spool files left behind: %v", entries)
			}
		})
	}
}

// TestPipeWriterStoppingEarlyFails: a stream cut short ends the job with a
// clear reason, not a hang.
func TestPipeWriterStoppingEarlyFails(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "300", "--no-fit", "--no-validation")
	base := t.TempDir()
	err := sagemaker.WriteLocal(base, sagemaker.LocalSpec{
		Channels:        map[string]string{"model": filepath.Join(fx, "model"), "training": filepath.Join(fx, "train")},
		Hyperparameters: map[string]string{"epochs": "1", "sagefit_pipe_timeout": "20s"},
		InputModes:      map[string]string{"training": "Pipe"}})
	if err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(base, "input", "data", "training_0")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	w := exec.Command("/bin/sh", "-c", `head -c 5000 "$1" > "$2"`, "sh", filepath.Join(fx, "train", "train.npy"), fifo)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Wait()
	code := runtime.Main(context.Background(), runtime.Options{Base: base, Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}})
	reason, _ := os.ReadFile(filepath.Join(base, "output", "failure"))
	if code == 0 || !bytes.Contains(reason, []byte("training_0")) || !bytes.Contains(reason, []byte("stopped after")) {
		t.Errorf("exit %d, failure %q", code, reason)
	}
	t.Logf("failure: %s", reason)
}

// pipeJob lays out a Pipe mode job on the seed fixture with hps, and feeds
// training_<n> for each n of feeds from a writer process (cut to the rows
// given, or whole for -1); the writers are waited for when the test ends.
func pipeJob(t *testing.T, hps map[string]string, feeds map[int]int) string {
	t.Helper()
	fx := fixture.Make(t, "seed", "--rows", "300", "--no-fit", "--no-validation")
	base := t.TempDir()
	err := sagemaker.WriteLocal(base, sagemaker.LocalSpec{
		Channels:        map[string]string{"model": filepath.Join(fx, "model"), "training": filepath.Join(fx, "train")},
		Hyperparameters: hps, InputModes: map[string]string{"training": "Pipe"}})
	if err != nil {
		t.Fatal(err)
	}
	py := fixture.Python(t)
	for n, rows := range feeds {
		fifo := filepath.Join(base, "input", "data", fmt.Sprintf("training_%d", n))
		if err := syscall.Mkfifo(fifo, 0o644); err != nil {
			t.Fatal(err)
		}
		// Saved to memory first: numpy writes an array's data to a real
		// file with tofile, which asks a FIFO for its position and fails.
		w := exec.Command(py, "-c", `import io, sys, numpy as np
n = int(sys.argv[3]); x, y = np.load(sys.argv[1]), np.load(sys.argv[2])
b = io.BytesIO(); np.save(b, x if n < 0 else x[:n]); np.save(b, y if n < 0 else y[:n])
open(sys.argv[4], "wb").write(b.getvalue())`,
			filepath.Join(fx, "train", "train.npy"), filepath.Join(fx, "train", "labels.npy"), fmt.Sprint(rows), fifo)
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Process.Kill(); w.Wait() })
	}
	return base
}

// TestPipeFIFOsCountReads: the n-th read of a Pipe channel opens <ch>_n,
// whatever the epoch: SageMaker makes each FIFO once the one before it has
// been read. Training from initial_epoch 1 waited for training_1 and never
// read training_0.
func TestPipeFIFOsCountReads(t *testing.T) {
	base := pipeJob(t, map[string]string{"epochs": "3", "initial_epoch": "1", "sagefit_pipe_timeout": "20s"}, map[int]int{0: -1, 1: -1})
	var stderr bytes.Buffer
	res, err := runtime.Train(context.Background(), runtime.Options{Base: base, Stdout: &bytes.Buffer{}, Stderr: &stderr})
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	if n := len(res.History.Values("loss")); n != 2 {
		t.Errorf("%d epochs trained, want 2", n)
	}
}

// TestPipeEmptyStreamRefused: a stream of 0-row arrays is refused, as a
// File mode channel of empty arrays is; it trained nothing and exited 0.
func TestPipeEmptyStreamRefused(t *testing.T) {
	base := pipeJob(t, map[string]string{"epochs": "1", "sagefit_pipe_timeout": "20s"}, map[int]int{0: 0})
	code := runtime.Main(context.Background(), runtime.Options{Base: base, Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}})
	reason, _ := os.ReadFile(filepath.Join(base, "output", "failure"))
	if code == 0 || !strings.Contains(string(reason), "the stream of training_0 holds no rows") {
		t.Errorf("exit %d, failure %q", code, reason)
	}
}

// TestPipeWaitEndsOnStop: SIGTERM while the job waits for its next Pipe
// stream ends the wait at once; it went on to sagefit_pipe_timeout (10
// minutes by default), past the time SageMaker gives before its SIGKILL.
func TestPipeWaitEndsOnStop(t *testing.T) {
	base := pipeJob(t, map[string]string{"epochs": "1", "sagefit_pipe_timeout": "5m"}, nil)
	ctx, stop := context.WithCancelCause(context.Background())
	go func() {
		time.Sleep(3 * time.Second)
		stop(&sagemaker.StopSignal{Signal: syscall.SIGTERM})
	}()
	start := time.Now()
	code := runtime.Main(ctx, runtime.Options{Base: base, Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}})
	reason, _ := os.ReadFile(filepath.Join(base, "output", "failure"))
	if code == 0 || strings.TrimSpace(string(reason)) != "Training stopped: stopped by SIGTERM." {
		t.Errorf("exit %d, failure %q", code, reason)
	}
	if took := time.Since(start); took > 2*time.Minute {
		t.Errorf("the job ended %v after it started, with a stop at 3 s", took.Round(time.Second))
	}
}

// TestFastFileModeTrainsLikeFileMode: FastFile channels are files fetched on
// read; the memory-mapped reader touches only the rows a batch needs.
func TestFastFileModeTrainsLikeFileMode(t *testing.T) {
	fx := fixture.Make(t, "seed", "--rows", "300", "--no-fit", "--no-validation")
	channels := map[string]string{"model": filepath.Join(fx, "model"), "training": filepath.Join(fx, "train")}
	var results []*runtime.Result
	for _, mode := range []string{"File", "FastFile"} {
		base := t.TempDir()
		err := sagemaker.WriteLocal(base, sagemaker.LocalSpec{Channels: channels,
			Hyperparameters: map[string]string{"epochs": "2"}, InputModes: map[string]string{"training": mode}})
		if err != nil {
			t.Fatal(err)
		}
		res, err := runtime.Train(context.Background(), runtime.Options{Base: base, Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}})
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		results = append(results, res)
	}
	if got, want := results[1].History.Values("loss"), results[0].History.Values("loss"); !reflect.DeepEqual(got, want) {
		t.Errorf("FastFile loss %v, File %v", got, want)
	}
}
