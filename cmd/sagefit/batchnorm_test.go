package main_test

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sagefit/sagefit/data"
	"github.com/sagefit/sagefit/internal/fixture"
)

// movingStats reads BatchNormalization's moving mean and variance from the
// model a job saved.
func movingStats(t *testing.T, base string) (mean, variance []float32) {
	t.Helper()
	for _, v := range savedVariables(t, base) {
		f, _ := v.Float32s()
		switch {
		case strings.HasSuffix(v.Spec.Name, "moving_mean"):
			mean = f
		case strings.HasSuffix(v.Spec.Name, "moving_variance"):
			variance = f
		}
	}
	if mean == nil || variance == nil {
		t.Fatal("the saved model has no moving statistics")
	}
	return mean, variance
}

// perHostVariance is the mean over hosts of the moving variance each host
// would keep from its own share of every global batch alone (shuffle off,
// momentum 0.99, biased batch variance, as Keras computes it), in float64.
func perHostVariance(t *testing.T, fx string, hosts, batch, epochs int) []float64 {
	t.Helper()
	a, err := data.Open(filepath.Join(fx, "train", "train.npy"))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	x, err := a.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	const f = 4
	rows := len(x) / f
	out := make([]float64, f)
	for h := range hosts {
		v := []float64{1, 1, 1, 1}
		for range epochs {
			for start := 0; start+hosts*batch <= rows; start += hosts * batch {
				lo := start + h*batch
				for k := range f {
					var s, s2 float64
					for r := lo; r < lo+batch; r++ {
						s += float64(x[r*f+k])
					}
					mean := s / float64(batch)
					for r := lo; r < lo+batch; r++ {
						d := float64(x[r*f+k]) - mean
						s2 += d * d
					}
					v[k] = 0.99*v[k] + 0.01*s2/float64(batch)
				}
			}
		}
		for k := range f {
			out[k] += v[k] / float64(hosts)
		}
	}
	return out
}

// TestBatchNormStatisticsCoverAllHosts: with each host seeing its own
// distribution (host 0 rows around 0, host 1 around 10), the saved moving
// mean is that of one host training on the whole batches, and the moving
// variance the mean of the hosts' own, as MirroredStrategy reads tf-keras's
// statistics; not host 0's alone. Through a checkpoint too.
func TestBatchNormStatisticsCoverAllHosts(t *testing.T) {
	const batch, epochs = 16, 2
	fx := fixture.Make(t, "batch_norm", "--rows", "480", "--no-fit", "--no-validation")
	for _, hosts := range []int{2, 3} {
		t.Run(fmt.Sprintf("%d hosts", hosts), func(t *testing.T) {
			one := runLocal(t, fx, 1, fmt.Sprint("epochs=", epochs), "shuffle=false", fmt.Sprint("batch_size=", hosts*batch))
			many := runLocal(t, fx, hosts, fmt.Sprint("epochs=", epochs), "shuffle=false", fmt.Sprint("batch_size=", batch))
			m1, _ := movingStats(t, one)
			mn, vn := movingStats(t, many)
			want := perHostVariance(t, fx, hosts, batch, epochs)
			for k := range m1 {
				if !near(float64(mn[k]), float64(m1[k])) {
					t.Errorf("moving_mean[%d] = %v on %d hosts, %v on one host with batch %d", k, mn[k], hosts, m1[k], hosts*batch)
				}
				if !near(float64(vn[k]), want[k]) {
					t.Errorf("moving_variance[%d] = %v on %d hosts, want the hosts' mean %v", k, vn[k], hosts, want[k])
				}
			}
			if mn[0] < m1[0]/2 {
				t.Errorf("moving_mean %v: host 0's share alone (rows around 0), not all hosts'", mn)
			}
		})
	}

	// A job stopped at an epoch's end and resumed from its checkpoint ends
	// with the statistics of one that ran through.
	whole := runLocal(t, fx, 2, "epochs=3", "shuffle=false", "batch_size=16")
	out := t.TempDir()
	local := func(epochs int) {
		args := []string{"local", "--hosts", "2", "--model", filepath.Join(fx, "model"), "--channel", "training=" + filepath.Join(fx, "train"),
			"--output", out, "--hp", fmt.Sprint("epochs=", epochs), "--hp", "shuffle=false", "--hp", "batch_size=16", "--hp", "checkpoint=true"}
		if b, err := exec.Command(binary, args...).CombinedOutput(); err != nil {
			t.Fatalf("sagefit %s: %v\n%s", strings.Join(args, " "), err, b)
		}
	}
	local(2) // leaves the checkpoint written after epoch 1
	local(3) // resumes at epoch 2
	mw, vw := movingStats(t, whole)
	mr, vr := movingStats(t, filepath.Join(out, "algo-1"))
	for k := range mw {
		if !near(float64(mr[k]), float64(mw[k])) || !near(float64(vr[k]), float64(vw[k])) {
			t.Errorf("after resume moving stats [%d] = %v, %v; uninterrupted %v, %v", k, mr[k], vr[k], mw[k], vw[k])
		}
	}
}

// TestBatchNormStatisticsOfAHostWithoutShard: a host given none of a
// ShardedByS3Key channel's objects trains no rows, so its moving
// statistics never move; the saved ones are those of the host that trained,
// to the bit, as one host alone keeps them. Before, the mean over both
// hosts took the idle host's starting values (mean 0, variance 1) at half
// weight.
func TestBatchNormStatisticsOfAHostWithoutShard(t *testing.T) {
	fx := fixture.Make(t, "batch_norm", "--rows", "200", "--no-fit", "--no-validation")
	hps := map[string]string{"epochs": "2", "batch_size": "16", "seed": "3"}
	alone := runLocal(t, fx, 1, "epochs=2", "batch_size=16", "seed=3")
	hosts := startJobWith(t, seedModels(fx, 2), []string{filepath.Join(fx, "train"), t.TempDir()}, hps, nil, "ShardedByS3Key")
	allSucceed(t, hosts, 90*time.Second, "")
	m1, v1 := movingStats(t, alone)
	m2, v2 := movingStats(t, hosts[0].base)
	if !slices.Equal(m1, m2) || !slices.Equal(v1, v2) {
		t.Errorf("moving statistics on two hosts, one without a shard: mean %v, variance %v; the host alone: %v, %v", m2, v2, m1, v1)
	}
}

// TestSynchronizedBatchNormRefusedOnHosts: BatchNormalization(synchronized=
// True) would need the batch statistics all-reduced inside the step; a
// multi-host job refuses it in one sentence instead of training something
// else, and one host trains it (its batch is the global batch).
func TestSynchronizedBatchNormRefusedOnHosts(t *testing.T) {
	refusedOnTwoHosts(t, "batch_norm_synchronized", "synchronized=True", "batch_normalization")
}

// refusedOnTwoHosts checks that family's model trains on one host and that
// a 2-host job of it fails, its output saying every one of wants.
func refusedOnTwoHosts(t *testing.T, family string, wants ...string) {
	t.Helper()
	fx := fixture.Make(t, family, "--rows", "64", "--no-fit", "--no-validation")
	runLocal(t, fx, 1, "epochs=1")
	cmd := exec.Command(binary, "local", "--hosts", "2", "--model", filepath.Join(fx, "model"), "--channel", "training="+filepath.Join(fx, "train"), "--output", t.TempDir())
	b, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("a 2-host job of %s trained:\n%s", family, b)
	}
	for _, want := range wants {
		if !strings.Contains(string(b), want) {
			t.Errorf("the failure does not say %q:\n%s", want, b)
		}
	}
}

// TestSampleWeightsOnHosts: with a sample_weight.npy, N hosts with batch B
// train as one host with batch N·B (the weighted loss is a mean over each
// batch's rows, so the row-weighted gradient sum stays exact).
func TestSampleWeightsOnHosts(t *testing.T) {
	fx := fixture.Make(t, "seed_weighted", "--rows", "320", "--no-fit", "--no-validation", "--sample-weight")
	one := runLocal(t, fx, 1, "epochs=2", "shuffle=false", "batch_size=32")
	two := runLocal(t, fx, 2, "epochs=2", "shuffle=false", "batch_size=16")
	h1, h2 := history(t, one), history(t, two)
	for k, want := range h1 {
		for e := range want {
			if e >= len(h2[k]) || !near(h2[k][e], want[e]) {
				t.Errorf("%s epoch %d: 2 hosts %v, one host %v", k, e+1, h2[k], want)
				break
			}
		}
	}
	w1, w2 := weights(t, one), weights(t, two)
	for i := range w1 {
		for j := range w1[i] {
			if !near(float64(w2[i][j]), float64(w1[i][j])) {
				t.Fatalf("weight %d[%d]: 2 hosts %v, one host %v", i, j, w2[i][j], w1[i][j])
			}
		}
	}
}

// TestOwnMetricNamedOnHosts: several hosts sum every metric's state, so a
// metric class of the model's own is named in a warning there (a state
// that is no sum, a running maximum, came out as the hosts' sum without a
// word); one whose state is a sum gives one host's numbers, and one host
// says nothing of it.
func TestOwnMetricNamedOnHosts(t *testing.T) {
	fx := fixture.Make(t, "seed_own_metric", "--rows", "320", "--no-fit", "--no-validation")
	one, log1 := runLocalLog(t, fx, 1, "epochs=2", "shuffle=false", "batch_size=32")
	two, log2 := runLocalLog(t, fx, 2, "epochs=2", "shuffle=false", "batch_size=16")
	const warning = "warning: metric positives is a class of the model's own: on 2 training processes sagefit sums"
	if strings.Contains(log1, "class of the model's own") || strings.Count(log2, warning) != 1 {
		t.Errorf("want the warning once on 2 hosts and not on one:\none host:\n%s\n2 hosts:\n%s", log1, log2)
	}
	h1, h2 := history(t, one), history(t, two)
	if len(h1["positives"]) != 2 {
		t.Fatalf("one host's history has no positives: %v", h1)
	}
	for k, want := range h1 {
		for e := range want {
			if e >= len(h2[k]) || !near(h2[k][e], want[e]) {
				t.Errorf("%s epoch %d: 2 hosts %v, one host %v", k, e+1, h2[k], want)
				break
			}
		}
	}
}

// TestSparseGradientsGatheredOnHosts: an Embedding's gradient is sparse,
// and Keras's optimizers apply its rows one by one (Adam squares each
// lookup's, clipnorm clips them before they are summed); 3 hosts gather
// every host's rows and train as one host with the whole batch (a partial
// last batch, clipping), where their dense sum ended 3e-2 apart (found
// comparing with MirroredStrategy), and a job says nothing of it.
func TestSparseGradientsGatheredOnHosts(t *testing.T) {
	// embedding_same_names: two gradients of one name, one of them rows
	// (sparse by name, both were, and every step failed on the sizes).
	for _, family := range []string{"embedding", "embedding_clipnorm", "embedding_same_names"} {
		t.Run(family, func(t *testing.T) {
			fx := fixture.Make(t, family, "--rows", "250", "--no-fit", "--no-validation")
			one := runLocal(t, fx, 1, "epochs=2", "shuffle=false", "batch_size=30")
			many, log := runLocalLog(t, fx, 3, "epochs=2", "shuffle=false", "batch_size=10")
			if strings.Contains(log, "sparse") {
				t.Errorf("a job that gathers the rows warns of them:\n%s", log)
			}
			h1, h3 := history(t, one), history(t, many)
			for k, want := range h1 {
				for e := range want {
					if e >= len(h3[k]) || !near(h3[k][e], want[e]) {
						t.Errorf("%s: 3 hosts %v, one host %v", k, h3[k], want)
						break
					}
				}
			}
			w1, w3 := weights(t, one), weights(t, many)
			for i := range w1 {
				for j := range w1[i] {
					if !near(float64(w3[i][j]), float64(w1[i][j])) {
						t.Fatalf("weight %d[%d]: 3 hosts %v, one host %v", i, j, w3[i][j], w1[i][j])
					}
				}
			}
		})
	}
}

// An earlier export names its sparse gradients only: where two gradients
// share the name and it lists one, which is rows is not known, and a job of
// several hosts is refused in a sentence (every step failed on the sizes);
// one host trains it.
func TestAmbiguousSparseExportRefusedOnHosts(t *testing.T) {
	fx := fixture.Make(t, "embedding_same_names", "--rows", "64", "--no-fit", "--no-validation")
	old := t.TempDir()
	fixture.CopyTree(t, filepath.Join(fx, "train"), filepath.Join(old, "train"))
	fixture.EditedExport(t, filepath.Join(fx, "model"), filepath.Join(old, "model"), func(meta map[string]any) {
		delete(meta, "sparse_gradient_indexes")
	})
	runLocal(t, old, 1, "epochs=1")
	cmd := exec.Command(binary, "local", "--hosts", "2", "--model", filepath.Join(old, "model"), "--channel", "training="+filepath.Join(old, "train"), "--output", t.TempDir())
	b, err := cmd.CombinedOutput()
	want := "Several of the model's variables are named emb/embeddings and one of them is an Embedding's rows, which 2 training processes gather, but the model's export (by an earlier sagefit) does not say which"
	if err == nil || !strings.Contains(string(b), want) {
		t.Errorf("a 2-host job of the earlier export: %v\n%s", err, b)
	}
}

// TestSecondOptimizerRefusedOnHosts: a custom train step that applies an
// optimizer of its own besides the compiled one trains on one host (to
// Keras's numbers: TestKerasParity), and a multi-host job refuses it in one
// sentence: its updates would use each host's own gradient, and the hosts'
// variables drift apart (predictions 0.06 off a one-host job, in silence).
func TestSecondOptimizerRefusedOnHosts(t *testing.T) {
	refusedOnTwoHosts(t, "custom_step_two_optimizers", "The model's train_step applies optimizer head_optimizer itself, besides the compiled one")
}
