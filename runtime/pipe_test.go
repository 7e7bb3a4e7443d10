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
