package tf

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/sagefit/sagefit/data"
	"github.com/sagefit/sagefit/internal/fixture"
	"github.com/sagefit/sagefit/model"
)

// The graph's own limit against sagefit's step path, one batch made once:
//
//	go test ./model/tf -run '^$' -bench 'StepLimit|TrainStepCall'
//
// BenchmarkStepLimit runs the train_step signature back to back from C
// on input tensors made once (stepLoop); BenchmarkTrainStepCall runs
// Model.TrainStep on a Go batch made once, as the fit loop calls it (input
// tensors made and filled, outputs copied and read as metrics, every
// call). The fit loop's own time per step (timing.json) adds the data
// pipeline and the loop's bookkeeping; make bench (python/sagefit/bench.py)
// runs the three side by side on the same model, batch and threads.
//
// By default they use the seed model at batch 32 on 2 threads; a harness
// points them elsewhere with
//
//	SAGEFIT_STEPLIMIT_MODEL    a training SavedModel (sagefit.export)
//	SAGEFIT_STEPLIMIT_DATA     its channel folder: train.npy (or <input>.npy), labels.npy (or <target>.npy)
//	SAGEFIT_STEPLIMIT_BATCH    rows per step (default 32)
//	SAGEFIT_STEPLIMIT_THREADS  intra- and inter-op threads (default 2)

func BenchmarkStepLimit(b *testing.B) {
	m, batch := stepLimitSetup(b)
	l, err := m.newStepLoop(model.RoleTrainStep, batch)
	if err != nil {
		b.Fatal(err)
	}
	defer l.close()
	if err := l.run(stepLimitWarmup); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	if err := l.run(b.N); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkTrainStepCall(b *testing.B) {
	m, batch := stepLimitSetup(b)
	for range stepLimitWarmup {
		if _, err := m.TrainStep(batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		if _, err := m.TrainStep(batch); err != nil {
			b.Fatal(err)
		}
	}
}

// stepLimitWarmup steps run untimed first: the first run of a signature
// prepares its function (graph optimization, kernels), and a few more let
// the thread pools and allocator settle.
const stepLimitWarmup = 20

func envInt(b *testing.B, key string, def int) int {
	s := os.Getenv(key)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", key, s)
	}
	return n
}

// stepLimitSetup loads the model and reads its first batch of rows.
func stepLimitSetup(b *testing.B) (*Model, model.Batch) {
	b.Helper()
	dir, channel := os.Getenv("SAGEFIT_STEPLIMIT_MODEL"), os.Getenv("SAGEFIT_STEPLIMIT_DATA")
	if dir == "" {
		fx := fixture.Make(b, "seed", "--rows", "256", "--no-fit", "--no-validation")
		dir, channel = filepath.Join(fx, "model"), filepath.Join(fx, "train")
		b.Cleanup(fixture.Cleanup)
	}
	rows := envInt(b, "SAGEFIT_STEPLIMIT_BATCH", 32)
	threads := envInt(b, "SAGEFIT_STEPLIMIT_THREADS", 2)
	// The session options a job gets by default (runtime/job), threads set.
	m, err := Load(dir, Config{IntraOpThreads: threads, InterOpThreads: threads, GPUMemoryGrowth: true, SoftPlacement: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	meta := m.Meta()
	batch := model.Batch{Rows: rows, Tensors: map[string][]byte{}}
	specs := append(append([]model.TensorSpec{}, meta.Inputs...), meta.Targets...)
	for i, spec := range specs {
		file := filepath.Join(channel, spec.Name+".npy")
		if _, err := os.Stat(file); err != nil {
			file = filepath.Join(channel, "labels.npy")
			if i < len(meta.Inputs) {
				file = filepath.Join(channel, "train.npy")
			}
		}
		a, err := data.Open(file)
		if err != nil {
			b.Fatal(err)
		}
		if a.Len() < rows {
			b.Fatalf("%s has %d rows, fewer than a batch of %d", file, a.Len(), rows)
		}
		dt, err := data.ParseDType(spec.DType)
		if err != nil {
			b.Fatal(err)
		}
		idx := make([]int, rows)
		for r := range idx {
			idx[r] = r
		}
		buf := make([]byte, rows*a.RowElems()*dt.Size())
		if err := a.Gather(buf, dt, idx); err != nil {
			b.Fatalf("%s: %v", file, err)
		}
		a.Close()
		batch.Tensors[spec.Name] = buf
	}
	return m, batch
}
