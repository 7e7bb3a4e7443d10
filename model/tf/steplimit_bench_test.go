package tf

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sagefit/sagefit/data"
	"github.com/sagefit/sagefit/internal/fixture"
	"github.com/sagefit/sagefit/model"
)

// BenchmarkStepLimit measures the graph's own limit against sagefit's step
// call, on one batch made once:
//
//	go test ./model/tf -run '^$' -bench StepLimit -benchtime 2000x
//
// Six ways of running the train_step signature take turns, 25 steps each,
// so a busy machine slows them alike; b.N steps each:
//
//	limit  back to back in one call into C on input tensors made once,
//	       fetching only the signature's outputs: the graph's own cost
//	cgo    one call from Go into C per step, the same tensors
//	fresh  as cgo, the input tensors made and filled anew each step
//	call   Model.TrainStep, as the fit loop calls it (tensors made and
//	       filled, outputs copied and read as metrics)
//
// and two more with every op of a run in the calling thread instead of
// TensorFlow's inter-op pool (Model.SetInline, which the fit loop chooses
// when its first steps find it faster): inline-limit as limit,
// inline-call as call; and two on a second session of the model on
// TensorFlow's single-threaded executor (Model.MoveSingleThreaded,
// where the fit loop may move next): single-limit as limit, single-call
// as call.
//
// Each reports its mean (<arm>-ns/step) and median (<arm>-p50-ns) step.
// The fit loop's own time per step (timing.json) adds the data pipeline and
// the loop's bookkeeping; make bench (python/sagefit/bench.py) runs both on
// the same model, batch and threads.
//
// By default it uses the seed model at batch 32 on 2 threads; a harness
// points it elsewhere with
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
	single := loaded.single
	sl, err := single.newStepLoop(model.RoleTrainStep, batch)
	if err != nil {
		b.Fatal(err)
	}
	defer sl.close()
	const chunk = 25
	ns := make([]int64, chunk)
	limit := func(n int, times []int64) error { return l.run(n, times) }
	call := func(n int, times []int64) error {
		return timeEach(n, times, func() error { _, err := m.TrainStep(batch); return err })
	}
	arms := []struct {
		name   string
		run    func(n int, times []int64) error
		inline bool
	}{
		{"limit", limit, false},
		{"cgo", func(n int, times []int64) error {
			return timeEach(n, times, func() error { return l.run(1, nil) })
		}, false},
		{"fresh", func(n int, times []int64) error {
			return timeEach(n, times, func() error {
				if err := l.refill(); err != nil {
					return err
				}
				return l.run(1, nil)
			})
		}, false},
		{"call", call, false},
		{"inline-limit", limit, true},
		{"inline-call", call, true},
		{"single-limit", func(n int, times []int64) error { return sl.run(n, times) }, true},
		{"single-call", func(n int, times []int64) error {
			return timeEach(n, times, func() error { _, err := single.TrainStep(batch); return err })
		}, true},
	}
	// The first run of a signature prepares its function (graph
	// optimization, kernels); a few more let the pools settle. (testing
	// runs a benchmark with b.N = 1 first: once is enough.)
	if !loaded.warm {
		for _, a := range arms {
			m.SetInline(a.inline)
			if err := a.run(chunk, ns); err != nil {
				b.Fatal(err)
			}
		}
		loaded.warm = true
	}
	times := make([][]int64, len(arms))
	b.ResetTimer()
	for done := 0; done < b.N; done += chunk {
		n := min(chunk, b.N-done)
		for i, a := range arms {
			m.SetInline(a.inline)
			if err := a.run(n, ns); err != nil {
				b.Fatal(err)
			}
			times[i] = append(times[i], ns[:n]...)
		}
	}
	b.StopTimer()
	for i, a := range arms {
		var sum int64
		for _, t := range times[i] {
			sum += t
		}
		slices.Sort(times[i])
		b.ReportMetric(float64(sum)/float64(len(times[i])), a.name+"-ns/step")
		b.ReportMetric(float64(times[i][(len(times[i])-1)/2]), a.name+"-p50-ns")
	}
}

// timeEach runs step n times, writing each run's nanoseconds into times.
func timeEach(n int, times []int64, step func() error) error {
	for i := range n {
		t := time.Now()
		if err := step(); err != nil {
			return err
		}
		times[i] = int64(time.Since(t))
	}
	return nil
}

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

// loaded keeps the model and batch across the benchmark's runs (testing
// runs it once with b.N = 1 first).
var loaded struct {
	sync.Mutex
	m      *Model
	single *Model // the same, moved to the single-threaded executor
	batch  model.Batch
	warm   bool
}

// stepLimitSetup loads the model and reads its first batch of rows.
func stepLimitSetup(b *testing.B) (*Model, model.Batch) {
	b.Helper()
	loaded.Lock()
	defer loaded.Unlock()
	if loaded.m != nil {
		return loaded.m, loaded.batch
	}
	dir, channel := os.Getenv("SAGEFIT_STEPLIMIT_MODEL"), os.Getenv("SAGEFIT_STEPLIMIT_DATA")
	if dir == "" {
		fx := fixture.Make(b, "seed", "--rows", "256", "--no-fit", "--no-validation")
		dir, channel = filepath.Join(fx, "model"), filepath.Join(fx, "train")
	}
	rows := envInt(b, "SAGEFIT_STEPLIMIT_BATCH", 32)
	threads := envInt(b, "SAGEFIT_STEPLIMIT_THREADS", 2)
	// The session options a job gets by default (runtime/job), threads set.
	m, err := Load(dir, Config{IntraOpThreads: threads, InterOpThreads: threads, GPUMemoryGrowth: true, SoftPlacement: true})
	if err != nil {
		b.Fatal(err)
	}
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
	single, err := Load(dir, Config{IntraOpThreads: threads, InterOpThreads: threads, GPUMemoryGrowth: true, SoftPlacement: true})
	if err != nil {
		b.Fatal(err)
	}
	if stayed, err := single.MoveSingleThreaded(func() error { _, err := single.TrainStep(batch); return err }); err != nil || stayed != nil {
		b.Fatalf("move to the single-threaded executor: %v %v", stayed, err)
	}
	loaded.m, loaded.single, loaded.batch = m, single, batch
	return m, batch
}
