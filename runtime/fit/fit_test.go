package fit_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sagefit/sagefit/data"
	"github.com/sagefit/sagefit/distributed"
	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/runtime/callbacks"
	"github.com/sagefit/sagefit/runtime/checkpoint"
	"github.com/sagefit/sagefit/runtime/fit"
	"github.com/sagefit/sagefit/runtime/input"
	"github.com/sagefit/sagefit/runtime/job"
	"github.com/sagefit/sagefit/runtime/report"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// These tests run the fit loop as a unit: a pure-Go model with
// deterministic gradients (fake_test.go), real .npy channels read by the
// data package, and the in-memory network of the ring core, so each runs in
// well under a second. The multi-process tests in cmd/sagefit are the
// end-to-end layer above them.

// writeChannel writes x.npy (rows x 3) and y.npy (rows x 1) into dir: rows
// of a noisy linear function, from offset so that shards differ.
func writeChannel(t *testing.T, dir string, rows, offset int) {
	t.Helper()
	x := make([]byte, 0, rows*features*4)
	y := make([]byte, 0, rows*4)
	for r := offset; r < offset+rows; r++ {
		var target float64 = 0.3
		for k := range features {
			v := math.Sin(float64(r*features+k) * 0.7)
			target += v * []float64{1, -2, 0.5}[k]
			x = binary.LittleEndian.AppendUint32(x, math.Float32bits(float32(v)))
		}
		target += 0.05 * math.Cos(float64(r))
		y = binary.LittleEndian.AppendUint32(y, math.Float32bits(float32(target)))
	}
	if err := data.WriteNPY(filepath.Join(dir, "x.npy"), data.Float32, []int{rows, features}, x); err != nil {
		t.Fatal(err)
	}
	if err := data.WriteNPY(filepath.Join(dir, "y.npy"), data.Float32, []int{rows, 1}, y); err != nil {
		t.Fatal(err)
	}
}

func openChannel(t *testing.T, dir string, sharded bool) *input.Channel {
	t.Helper()
	c := sagemaker.Channel{Name: "training", Dir: dir, InputMode: sagemaker.File, Distribution: sagemaker.FullyReplicated}
	if sharded {
		c.Distribution = sagemaker.ShardedByS3Key
	}
	ch, err := input.Open(c, sagemaker.Paths{Base: t.TempDir()}, newLinear().Meta(), input.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ch.Close)
	return ch
}

func newJob(epochs, batch int, ckptDir string) *job.Job {
	return &job.Job{
		Env:    &sagemaker.Env{LocalWorkers: 1},
		Epochs: epochs, BatchSize: batch, Shuffle: true, Seed: 7, Prefetch: 2,
		CheckpointDir: ckptDir, CheckpointKeep: 3,
	}
}

// rank is one training process of a test job.
type rank struct {
	job   *job.Job
	model *linear
	train *input.Channel
	val   *input.Channel
	ctx   context.Context // cancelled: a stop request (SIGTERM) for this rank
	ck    *checkpoint.Loaded
	cbs   *callbacks.Set
	// multi runs the model as a MultiStepper (steps_per_execution).
	multi bool
	// inliner, when set, wraps model as an Inliner (where calls run);
	// mover, when set too, wraps that as a SingleThreader.
	inliner *inlineLinear
	mover   *movingLinear

	hist   *report.History
	err    error
	timing fit.Timing
	out    bytes.Buffer
}

// runResumed runs one rank resumed from its checkpoint r.ck, as
// runtime.train does, and fails the test if it fails.
func runResumed(t *testing.T, r *rank) {
	t.Helper()
	if err := fit.Resume(r.model, r.ck, r.job, 1); err != nil {
		t.Fatal(err)
	}
	runRanks(t, []*rank{r})
	if r.err != nil {
		t.Fatal(r.err)
	}
}

// resumeLatest resumes r from the latest checkpoint in dir and runs it.
func resumeLatest(t *testing.T, r *rank, dir string) {
	t.Helper()
	ck, err := checkpoint.Latest(dir, "linear-fake", &bytes.Buffer{})
	if err != nil || ck == nil {
		t.Fatalf("latest checkpoint %+v, %v", ck, err)
	}
	r.ck = ck
	runResumed(t, r)
}

// sigtermAt gives r a context of its own and returns a hook (onStep,
// onTest) that stops it, as SIGTERM does, when the hook is called with n.
func sigtermAt(r *rank, n int) func(int) {
	ctx, stop := context.WithCancelCause(context.Background())
	r.ctx = ctx
	return func(got int) {
		if got == n {
			stop(&sagemaker.StopSignal{Signal: syscall.SIGTERM})
		}
	}
}

// runRanks runs every rank's loop as runtime.train wires it (broadcast of
// rank 0's weights, the agreed resume point, the loop, then the group
// closed) over the in-memory network, and waits for all of them.
func runRanks(t *testing.T, ranks []*rank) {
	t.Helper()
	world := len(ranks)
	nw := distributed.NewMemNetwork(world, distributed.Faults{})
	var wg sync.WaitGroup
	for i, r := range ranks {
		if r.ctx == nil {
			r.ctx = context.Background()
		}
		wg.Go(func() {
			var g fit.Group
			if world > 1 {
				dg, err := distributed.NewGroup(nw.Transport(i), i, world, distributed.WithOpTimeout(5*time.Second))
				if err != nil {
					r.err = err
					return
				}
				defer dg.Close()
				g = dg
				if r.err = fit.BroadcastVariables(context.Background(), r.model, g); r.err != nil {
					return
				}
			}
			from, err := fit.AgreeResumePoint(context.Background(), r.ck, g, r.model.Meta().MetricStateSize)
			if err != nil {
				r.err = err
				return
			}
			var m fit.Model = r.model
			if r.multi {
				m = &multiLinear{r.model}
			}
			if r.inliner != nil {
				r.inliner.linear = r.model
				m = r.inliner
			}
			if r.mover != nil {
				r.mover.inlineLinear = r.inliner
				m = r.mover
			}
			loop := &fit.Loop{Job: r.job, Model: m, Group: g, Train: r.train, Val: r.val, Out: &r.out, Log: &r.out, Callbacks: r.cbs}
			r.hist, r.err = loop.Run(r.ctx, from)
			r.timing = loop.Timing()
		})
	}
	wg.Wait()
}

func closeTo(a, b, tol float64) bool { return math.Abs(a-b) <= tol*max(1, math.Abs(a), math.Abs(b)) }

func sameWeights(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	for i := range want {
		if !closeTo(float64(got[i]), float64(want[i]), tol) {
			t.Fatalf("%s: weight %d = %v, want %v (all: %v vs %v)", what, i, got[i], want[i], got, want)
		}
	}
}

// N ranks with batch B train as one rank with batch N·B: the row-weighted
// gradient sum, and the epoch metrics summed over ranks (training and
// validation), cover the global batch.
func TestRanksTrainLikeOneBigBatch(t *testing.T) {
	trainDir, valDir := t.TempDir(), t.TempDir()
	writeChannel(t, trainDir, 100, 0) // 100 rows: the last global batch is short and uneven
	writeChannel(t, valDir, 30, 1000)

	one := &rank{job: newJob(3, 24, ""), model: newLinear(), train: openChannel(t, trainDir, false), val: openChannel(t, valDir, false)}
	runRanks(t, []*rank{one})
	if one.err != nil {
		t.Fatal(one.err)
	}
	for _, world := range []int{2, 3} {
		ranks := make([]*rank, world)
		for i := range ranks {
			ranks[i] = &rank{job: newJob(3, 24/world, ""), model: newLinear(), train: openChannel(t, trainDir, false), val: openChannel(t, valDir, false)}
		}
		ranks[1].model.w[0] = 42 // overwritten by rank 0's weights before training
		runRanks(t, ranks)
		for i, r := range ranks {
			if r.err != nil {
				t.Fatalf("world %d rank %d: %v", world, i, r.err)
			}
			sameWeights(t, "world "+string(rune('0'+world)), r.model.weights(), one.model.weights(), 1e-5)
			for _, key := range []string{"loss", "val_loss"} {
				got, want := r.hist.Values(key), one.hist.Values(key)
				if len(got) != 3 || len(want) != 3 {
					t.Fatalf("world %d rank %d: %s has %d epochs, want 3", world, i, key, len(got))
				}
				for e := range want {
					if !closeTo(got[e], want[e], 1e-5) {
						t.Errorf("world %d rank %d epoch %d: %s = %v, want %v", world, i, e+1, key, got[e], want[e])
					}
				}
			}
			if want := 3 * 30 / world; r.model.testRows != want { // 30 rows split evenly, 3 epochs
				t.Errorf("world %d rank %d validated %d rows, want its share %d", world, i, r.model.testRows, want)
			}
			if r.timing.StepsPerEpoch != 5 || r.timing.Examples != 100 || r.timing.Hosts != world {
				t.Errorf("world %d rank %d timing %+v", world, i, r.timing)
			}
		}
		if !strings.Contains(ranks[0].out.String(), "Epoch 3/3") {
			t.Errorf("no epoch line on rank 0: %q", ranks[0].out.String())
		}
	}
}

// ShardedByS3Key: each rank reads all of its own files, however many rows
// they hold; every rank runs the longest shard's steps (the others join
// the ring with empty batches) and the epoch's metrics cover every row.
// A rank given no files at all (fewer S3 objects than hosts) joins every
// step so; before, its channel was refused for want of a file.
func TestUnevenShardsAgreeOnSteps(t *testing.T) {
	sizes := []int{40, 17, 1, 0}
	ranks := make([]*rank, len(sizes))
	var rows float64
	for i, n := range sizes {
		dir := t.TempDir()
		if n > 0 {
			writeChannel(t, dir, n, 100*i)
		}
		rows += float64(n)
		ranks[i] = &rank{job: newJob(2, 8, ""), model: newLinear(), train: openChannel(t, dir, true)}
	}
	var applies [4]int
	for i, r := range ranks {
		r.model.applied = func([]float32) { applies[i]++ }
	}
	runRanks(t, ranks)
	for i, r := range ranks {
		if r.err != nil {
			t.Fatalf("rank %d: %v", i, r.err)
		}
		if r.timing.StepsPerEpoch != 5 { // ceil(40 / 8)
			t.Errorf("rank %d ran %d steps per epoch, want the longest shard's 5", i, r.timing.StepsPerEpoch)
		}
		if applies[i] != 10 {
			t.Errorf("rank %d applied %d updates in 2 epochs, want 10", i, applies[i])
		}
		if i > 0 {
			sameWeights(t, "rank vs rank 0", r.model.weights(), ranks[0].model.weights(), 0)
		}
	}
	// Rows seen by the metric: the loss metric's count is every shard's rows.
	state, _ := ranks[0].model.MetricState()
	if state[1] != rows {
		t.Errorf("rank 0's epoch metric counts %v rows, want all shards' %v", state[1], rows)
	}
}

// A ShardedByS3Key channel of which no rank got a file is refused, naming
// it, as an empty channel is: training on no rows reported a loss of 0.
func TestShardsAllEmptyRefused(t *testing.T) {
	for _, world := range []int{1, 2} {
		ranks := make([]*rank, world)
		for i := range ranks {
			ranks[i] = &rank{job: newJob(2, 8, ""), model: newLinear(), train: openChannel(t, t.TempDir(), true)}
		}
		runRanks(t, ranks)
		for i, r := range ranks {
			want := `epoch 1: channel "training" is ShardedByS3Key and no host of the job got any of its rows, and model.fit refuses empty data too`
			if r.err == nil || r.err.Error() != want {
				t.Errorf("%d ranks, rank %d: %v, want %q", world, i, r.err, want)
			}
		}
	}
}

// A stop request (SIGTERM) on any one rank stops every rank after the same
// step; rank 0 writes a checkpoint and says where, and a job started from
// it ends exactly like one never stopped.
func TestStopThenResumeMidEpoch(t *testing.T) {
	dir := t.TempDir()
	writeChannel(t, dir, 96, 0)
	for _, world := range []int{1, 2} {
		ckpt := t.TempDir()
		newRanks := func() []*rank {
			rs := make([]*rank, world)
			for i := range rs {
				rs[i] = &rank{job: newJob(3, 16/world, ckpt), model: newLinear(), train: openChannel(t, dir, false)}
			}
			return rs
		}
		whole := newRanks()
		runRanks(t, whole)
		if whole[0].err != nil {
			t.Fatal(whole[0].err)
		}

		stopped := newRanks()
		stopper := stopped[world-1]                  // the last rank gets the SIGTERM
		stopper.model.onStep = sigtermAt(stopper, 8) // during epoch 2 step 2 of 6: seen before the next step
		runRanks(t, stopped)
		for i, r := range stopped {
			var in *fit.Interrupted
			if !errors.As(r.err, &in) {
				t.Fatalf("world %d rank %d: %v, want *fit.Interrupted", world, i, r.err)
			}
			if in.Epoch != 2 || in.Step != 3 {
				t.Errorf("world %d rank %d stopped at epoch %d step %d, want epoch 2 step 3 on every rank", world, i, in.Epoch, in.Step)
			}
			if (i == 0) != (in.Checkpoint != "") {
				t.Errorf("world %d rank %d: checkpoint %q (rank 0 alone writes one)", world, i, in.Checkpoint)
			}
			if i == 0 && !strings.Contains(sagemaker.Reason(r.err), "checkpoint written to "+in.Checkpoint) {
				t.Errorf("reason %q does not name the checkpoint", sagemaker.Reason(r.err))
			}
		}

		resumed := newRanks()
		ck, err := checkpoint.Latest(ckpt, "linear-fake", &bytes.Buffer{})
		if err != nil || ck == nil || ck.State.Epoch != 2 || ck.State.Step != 3 {
			t.Fatalf("world %d: latest checkpoint %+v, %v", world, ck, err)
		}
		if err := fit.Resume(resumed[0].model, ck, resumed[0].job, world); err != nil {
			t.Fatal(err)
		}
		resumed[0].ck = ck
		runRanks(t, resumed)
		for i, r := range resumed {
			if r.err != nil {
				t.Fatalf("world %d rank %d resumed: %v", world, i, r.err)
			}
			sameWeights(t, "resumed", r.model.weights(), whole[0].model.weights(), 0)
			got, want := r.hist.Values("loss"), whole[0].hist.Values("loss")
			if len(got) != len(want) {
				t.Fatalf("world %d rank %d: history %v, want %v", world, i, got, want)
			}
			for e := range want {
				if got[e] != want[e] {
					t.Errorf("world %d rank %d epoch %d: loss %v, want %v (bit for bit)", world, i, e+1, got[e], want[e])
				}
			}
		}
	}
}

// A stop during a validation (one process) ends it at its next batch, not
// its end (a validation longer than SageMaker's grace before its kill lost
// the stop's checkpoint): the checkpoint is the epoch's as trained, and a
// job resumed from it validates again and ends like one never stopped.
func TestStopDuringValidationThenResume(t *testing.T) {
	trainDir, valDir := t.TempDir(), t.TempDir()
	writeChannel(t, trainDir, 96, 0) // 6 steps of 16
	writeChannel(t, valDir, 80, 0)   // 5 validation steps
	ckpt := t.TempDir()
	newRank := func() *rank {
		return &rank{job: newJob(3, 16, ckpt), model: newLinear(), train: openChannel(t, trainDir, false), val: openChannel(t, valDir, false)}
	}
	whole := newRank()
	runRanks(t, []*rank{whole})
	if whole.err != nil {
		t.Fatal(whole.err)
	}
	stopped := newRank()
	stopped.model.onTest = sigtermAt(stopped, 80+32) // epoch 2's validation, its second batch
	runRanks(t, []*rank{stopped})
	var in *fit.Interrupted
	if !errors.As(stopped.err, &in) || in.Epoch != 2 || in.Step != 6 || in.Checkpoint == "" {
		t.Fatalf("stopped with %v, want *fit.Interrupted at epoch 2 step 6 (its last) with a checkpoint", stopped.err)
	}
	if got := stopped.model.testRows; got != 80+32 {
		t.Errorf("validation ran on %d rows after the stop, want none (stopped at its next batch)", got-(80+32))
	}
	resumed := newRank()
	resumeLatest(t, resumed, ckpt)
	sameWeights(t, "resumed", resumed.model.weights(), whole.model.weights(), 0)
	for _, k := range []string{"loss", "val_loss"} {
		if got, want := resumed.hist.Values(k), whole.hist.Values(k); !slices.Equal(got, want) {
			t.Errorf("%s %v, want %v (bit for bit)", k, got, want)
		}
	}
}

// An epoch a callback ended early (TerminateOnNaN at its step 2) is
// validated to its end despite a stop: a checkpoint of it, 2 steps of 6,
// could not be resumed, and training ends after it anyway.
func TestStopDuringValidationOfAnEndedEpoch(t *testing.T) {
	trainDir, valDir := t.TempDir(), t.TempDir()
	writeChannel(t, trainDir, 96, 0)
	writeChannel(t, valDir, 80, 0)
	r := &rank{job: newJob(3, 16, t.TempDir()), model: newLinear(), train: openChannel(t, trainDir, false), val: openChannel(t, valDir, false)}
	r.cbs = callbackSet(t, 0, `[{"class": "TerminateOnNaN", "config": {}}]`)
	r.model.nanAt = 2
	r.model.onTest = sigtermAt(r, 16)
	runRanks(t, []*rank{r})
	if r.err != nil || r.model.testRows != 80 || len(r.hist.Values("loss")) != 1 {
		t.Errorf("ended with %v after %d validation rows and %d epochs; want the epoch validated whole, then the end", r.err, r.model.testRows, len(r.hist.Values("loss")))
	}
}

// A mid-epoch checkpoint resumes only in an epoch of as many steps over
// the same training rows (their shuffle): a probe resumed one over other
// data, and with a shorter steps_per_epoch, and the job went on without a
// word, its numbers no longer an uninterrupted job's; a later probe, over
// as many rows of other values.
func TestResumeRefusesAnotherEpochMidEpoch(t *testing.T) {
	dir, fewer, sameSteps, otherValues := t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()
	writeChannel(t, dir, 96, 0)
	writeChannel(t, fewer, 80, 0)     // 5 steps of 16
	writeChannel(t, sameSteps, 90, 0) // 6 steps, as 96 rows make
	writeChannel(t, otherValues, 96, 1)
	ckpt := t.TempDir()
	stopped := &rank{job: newJob(3, 16, ckpt), model: newLinear(), train: openChannel(t, dir, false)}
	stopped.model.onStep = sigtermAt(stopped, 8)
	runRanks(t, []*rank{stopped})
	ck, err := checkpoint.Latest(ckpt, "linear-fake", &bytes.Buffer{})
	if err != nil || ck == nil || ck.State.Step == 0 || ck.State.Rows != 96 || ck.State.Steps != 6 {
		t.Fatalf("latest checkpoint %+v, %v; want one mid-epoch over 96 rows", ck, err)
	}
	for _, c := range []struct {
		name          string
		dir           string
		stepsPerEpoch int
		want          string
	}{
		{"fewer rows", fewer, 0, "stopped after step 3 of an epoch of 6 steps over 96 training rows, but this job's epoch has 5 steps over 80 rows"},
		{"other rows, as many steps", sameSteps, 0, "this job's epoch has 6 steps over 90 rows"},
		{"other values, as many rows", otherValues, 0, "but this job's training data differ from the checkpoint's (the same 96 rows; another first or last row of a tensor"},
		{"the same data", dir, 0, ""},
	} {
		r := &rank{job: newJob(3, 16, ckpt), model: newLinear(), train: openChannel(t, c.dir, false), ck: ck}
		r.job.StepsPerEpoch = c.stepsPerEpoch
		if err := fit.Resume(r.model, ck, r.job, 1); err != nil {
			t.Fatal(err)
		}
		runRanks(t, []*rank{r})
		if c.want == "" && r.err != nil || c.want != "" && (r.err == nil || !strings.Contains(r.err.Error(), c.want)) {
			t.Errorf("%s: %v, want %q", c.name, r.err, c.want)
		}
	}
}

// steps_per_epoch and initial_epoch place an epoch's steps in the data:
// a review found an epoch of as many steps elsewhere resumed (96 rows of
// 16: epoch 2 is batches 2-3 at steps_per_epoch 2, batches 4-5 at 4... of
// 2 steps each).
func TestResumeRefusesOtherStepsPerEpochMidEpoch(t *testing.T) {
	two, zero := 2, 0
	ck := &checkpoint.Loaded{Path: "ckpt-000002-000000001", State: checkpoint.State{Epoch: 2, Step: 1, BatchSize: 16, Hosts: 1, Seed: 7, Shuffle: true, StepsPerEpoch: &two, InitialEpoch: &zero}}
	for _, c := range []struct{ stepsPerEpoch, initialEpoch int }{{4, 0}, {2, 1}} {
		j := newJob(3, 16, "")
		j.StepsPerEpoch, j.InitialEpoch = c.stepsPerEpoch, c.initialEpoch
		err := fit.Resume(newLinear(), ck, j, 1)
		if err == nil || !strings.Contains(err.Error(), `stopped mid-epoch with "steps_per_epoch" 2 and "initial_epoch" 0`) {
			t.Errorf("steps_per_epoch %d, initial_epoch %d: %v", c.stepsPerEpoch, c.initialEpoch, err)
		}
	}
	j := newJob(3, 16, "")
	j.StepsPerEpoch = 2
	if err := fit.Resume(newLinear(), ck, j, 1); err != nil && strings.Contains(err.Error(), "mid-epoch") { // it holds no variables: refused for that
		t.Errorf("the same settings: %v", err)
	}
}

// A checkpoint from a mid-epoch stop resumes only with the same batch
// size and process count: the order of rows depends on them.
func TestResumeRefusesOtherSettingsMidEpoch(t *testing.T) {
	ck := &checkpoint.Loaded{Path: "ckpt-000002-000000002", State: checkpoint.State{Epoch: 2, Step: 2, BatchSize: 8, Hosts: 2, Seed: 7, Shuffle: true}}
	err := fit.Resume(newLinear(), ck, newJob(3, 16, ""), 1)
	if err == nil || !strings.Contains(err.Error(), "resuming mid-epoch needs the same settings") {
		t.Fatalf("resume with batch 16 on 1 process: %v", err)
	}
}

// A checkpoint that has trained more epochs than the job asks for is
// refused: before, the job trained nothing and wrote the checkpoint's model
// as its own, with no word. One that has trained exactly as many is not
// refused for it (a finished job started again trains nothing).
func TestResumeRefusesACheckpointPastTheLastEpoch(t *testing.T) {
	ck := &checkpoint.Loaded{Path: "ckpt-000005-000000000", State: checkpoint.State{Epoch: 5, BatchSize: 8, Hosts: 1}}
	err := fit.Resume(newLinear(), ck, newJob(2, 8, ""), 1)
	if err == nil || !strings.Contains(err.Error(), "checkpoint ckpt-000005-000000000 has trained 4 epochs, more than this job's 2 epochs") {
		t.Fatalf("resume 4 trained epochs into a job of 2: %v", err)
	}
	mid := &checkpoint.Loaded{Path: "ckpt-000005-000000100", State: checkpoint.State{Epoch: 5, Step: 100, BatchSize: 8, Hosts: 1}}
	if err := fit.Resume(newLinear(), mid, newJob(4, 8, ""), 1); err == nil || !strings.Contains(err.Error(), "has trained 4 epochs and 100 steps of the next, more than this job's 4 epochs") {
		t.Errorf("resume part of a 5th epoch into a job of 4: %v", err)
	}
	if err := fit.Resume(newLinear(), ck, newJob(4, 8, ""), 1); err != nil && strings.Contains(err.Error(), "epochs") {
		t.Fatalf("resume 4 trained epochs into a job of 4: %v", err) // (this checkpoint holds no variables: that error is not the point)
	}
}

// A checkpoint that rank 0 takes longer to write than the peer timeout
// (5 s here) does not fail the job: the others wait for the write at the
// checkpoint instead of timing out in the next step's all-reduce.
func TestSlowCheckpointWriteIsWaitedFor(t *testing.T) {
	dir := t.TempDir()
	writeChannel(t, dir, 64, 0)
	ckpt := t.TempDir()
	ranks := make([]*rank, 2)
	for i := range ranks {
		j := newJob(2, 4, ckpt)
		j.CheckpointEpochs = true
		ranks[i] = &rank{job: j, model: newLinear(), train: openChannel(t, dir, false)}
	}
	ranks[0].model.slowRead, ranks[0].model.slowReadAt = 7*time.Second, 3
	runRanks(t, ranks)
	for i, r := range ranks {
		if r.err != nil {
			t.Errorf("rank %d: %v", i, r.err)
		}
	}
}

// A rank that fails ends the others: they get a peer error naming it,
// bounded by the collective's timeout, and never hang.
func TestFailedRankEndsTheOthers(t *testing.T) {
	dir := t.TempDir()
	writeChannel(t, dir, 64, 0)
	ranks := make([]*rank, 3)
	for i := range ranks {
		ranks[i] = &rank{job: newJob(2, 4, ""), model: newLinear(), train: openChannel(t, dir, false)}
	}
	ranks[1].model.failStep = 3
	done := make(chan struct{})
	go func() { runRanks(t, ranks); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("the other ranks still run a minute after rank 1 failed")
	}
	if ranks[1].err == nil || !strings.Contains(ranks[1].err.Error(), "failed on purpose") || !strings.Contains(ranks[1].err.Error(), "epoch 1 step 3") {
		t.Errorf("rank 1: %v, want its own failure at epoch 1 step 3", ranks[1].err)
	}
	for _, i := range []int{0, 2} {
		var pe *distributed.PeerError
		if !errors.As(ranks[i].err, &pe) {
			t.Errorf("rank %d: %v, want a *distributed.PeerError", i, ranks[i].err)
		}
	}
}

// firstX is x[0] of row r as writeChannel writes it.
func firstX(r int) float32 { return float32(math.Sin(float64(r*features) * 0.7)) }

// steps_per_epoch: an epoch takes at most that many batches and the next
// one goes on where it stopped; when a pass over the data runs out, the
// epoch ends early and the next starts a new pass (Keras's epoch iterator).
func TestStepsPerEpochGoesOn(t *testing.T) {
	dir := t.TempDir()
	writeChannel(t, dir, 50, 0) // 5 batches of 10
	r := &rank{job: newJob(4, 10, ""), model: newLinear(), train: openChannel(t, dir, false)}
	r.job.Shuffle = false
	r.job.StepsPerEpoch = 3
	runRanks(t, []*rank{r})
	if r.err != nil {
		t.Fatal(r.err)
	}
	var want []float32
	for _, row := range []int{0, 10, 20, 30, 40, 0, 10, 20, 30, 40} { // epochs of 3, 2, 3, 2 steps
		want = append(want, firstX(row))
	}
	if !slices.Equal(r.model.firstX, want) {
		t.Errorf("batches start at x %v, want %v", r.model.firstX, want)
	}
	if !strings.Contains(r.out.String(), "Epoch 2/4 - 2/2") || !strings.Contains(r.out.String(), "Epoch 3/4 - 3/3") {
		t.Errorf("epoch lines do not show 3 then 2 steps:\n%s", r.out.String())
	}

	// A stop mid-epoch resumes at the same place in the pass.
	ckpt := t.TempDir()
	whole := &rank{job: newJob(4, 10, ckpt), model: newLinear(), train: openChannel(t, dir, false)}
	whole.job.StepsPerEpoch = 3
	runRanks(t, []*rank{whole})
	stopped := &rank{job: newJob(4, 10, ckpt), model: newLinear(), train: openChannel(t, dir, false)}
	stopped.job.StepsPerEpoch = 3
	ctx, stop := context.WithCancelCause(context.Background())
	stopped.ctx = ctx
	stopped.model.onStep = func(step int) {
		if step == 6 { // epoch 3 step 1
			stop(errors.New("test stop"))
		}
	}
	runRanks(t, []*rank{stopped})
	ck, err := checkpoint.Latest(ckpt, "linear-fake", &bytes.Buffer{})
	if err != nil || ck == nil {
		t.Fatalf("no checkpoint after the stop: %v (%v)", err, stopped.err)
	}
	resumed := &rank{job: newJob(4, 10, ckpt), model: newLinear(), train: openChannel(t, dir, false), ck: ck}
	resumed.job.StepsPerEpoch = 3
	runResumed(t, resumed)
	sameWeights(t, "resumed with steps_per_epoch", resumed.model.weights(), whole.model.weights(), 0)
}

// Every train step of a run is called from one OS thread, however often
// the loop waits (for a batch, or here in each step's sleep): TensorFlow
// runs a step's ops in the calling thread.
func TestStepsKeepOneThread(t *testing.T) {
	dir := t.TempDir()
	writeChannel(t, dir, 50, 0) // 5 batches of 10
	r := &rank{job: newJob(4, 10, ""), model: newLinear(), train: openChannel(t, dir, false)}
	r.model.callCost = 200 * time.Microsecond
	var threads []int
	r.model.onStep = func(int) { threads = append(threads, syscall.Gettid()) }
	runRanks(t, []*rank{r})
	if r.err != nil {
		t.Fatal(r.err)
	}
	if len(threads) != 20 {
		t.Fatalf("%d steps, want 20", len(threads))
	}
	for i, tid := range threads {
		if tid != threads[0] {
			t.Fatalf("step %d ran on thread %d, step 0 on %d", i, tid, threads[0])
		}
	}
}

// initial_epoch: the epochs already trained are skipped (numbered on from
// there, not in the history); validation_freq and validation_steps choose
// when and how much to validate, each evaluation from the first batch.
func TestInitialEpochAndValidationChoices(t *testing.T) {
	trainDir, valDir := t.TempDir(), t.TempDir()
	writeChannel(t, trainDir, 40, 0)
	writeChannel(t, valDir, 40, 500) // 4 batches of 10
	r := &rank{job: newJob(6, 10, ""), model: newLinear(), train: openChannel(t, trainDir, false), val: openChannel(t, valDir, false)}
	r.job.InitialEpoch = 2
	r.job.ValidationEpochs = []int{3, 6}
	r.job.ValidationSteps = 3
	runRanks(t, []*rank{r})
	if r.err != nil {
		t.Fatal(r.err)
	}
	if n := len(r.hist.Values("loss")); n != 4 {
		t.Errorf("history has %d epochs, want 4 (epochs 3 to 6)", n)
	}
	if n := len(r.hist.Values("val_loss")); n != 2 {
		t.Errorf("history has %d validations, want 2 (after epochs 3 and 6)", n)
	}
	if r.model.testRows != 2*30 {
		t.Errorf("validated %d rows, want 2 x 3 batches of 10", r.model.testRows)
	}
	if strings.Contains(r.out.String(), "Epoch 2/6") || !strings.Contains(r.out.String(), "Epoch 3/6") {
		t.Errorf("epoch lines do not start at epoch 3:\n%s", r.out.String())
	}

	every := &rank{job: newJob(4, 10, ""), model: newLinear(), train: openChannel(t, trainDir, false), val: openChannel(t, valDir, false)}
	every.job.ValidationFreq = 2
	runRanks(t, []*rank{every})
	if n := len(every.hist.Values("val_loss")); every.err != nil || n != 2 {
		t.Errorf("validation_freq 2 over 4 epochs: %d validations (%v), want 2", n, every.err)
	}
}

// TestValidationLogReplacesTrainingLogOfItsName: a model whose output is
// named "val" logs a training val_loss; Keras's logs dict then holds the
// validation's val_loss in its place, one value per epoch. The history had
// both, two values an epoch. Said in a warning, once.
func TestValidationLogReplacesTrainingLogOfItsName(t *testing.T) {
	trainDir, valDir := t.TempDir(), t.TempDir()
	writeChannel(t, trainDir, 40, 0)
	writeChannel(t, valDir, 20, 500)
	m := newLinear()
	m.alsoLogs = "val_loss"
	r := &rank{job: newJob(3, 10, ""), model: m, train: openChannel(t, trainDir, false), val: openChannel(t, valDir, false)}
	runRanks(t, []*rank{r})
	if r.err != nil {
		t.Fatal(r.err)
	}
	got := r.hist.Values("val_loss")
	if len(got) != 3 || slices.Contains(got, 7) {
		t.Errorf("val_loss %v, want the 3 validation losses", got)
	}
	if n := len(r.hist.Values("val_val_loss")); n != 3 {
		t.Errorf("val_val_loss has %d values, want 3", n)
	}
	if n := strings.Count(r.out.String(), "share a name; as in Keras, the validation value replaces the training one"); n != 1 {
		t.Errorf("the warning is said %d times, want once:\n%s", n, r.out.String())
	}
}

// Non-trainable state marked for averaging (BatchNormalization's moving
// statistics) describes all ranks' data: with equal shares, the mean of the
// ranks' moving averages is the moving average one process with the whole
// batches keeps. Ranks see different rows here (each its part of every
// global batch), so without the averaging each rank would keep its own.
func TestMovingStatisticsAveragedOverRanks(t *testing.T) {
	dir := t.TempDir()
	writeChannel(t, dir, 96, 0) // 96 rows: every global batch is whole, shares are equal
	one := &rank{job: newJob(2, 24, ""), model: newLinear(), train: openChannel(t, dir, false)}
	runRanks(t, []*rank{one})
	if one.err != nil {
		t.Fatal(one.err)
	}
	for _, world := range []int{2, 3} {
		ranks := make([]*rank, world)
		for i := range ranks {
			ranks[i] = &rank{job: newJob(2, 24/world, ""), model: newLinear(), train: openChannel(t, dir, false)}
		}
		runRanks(t, ranks)
		for i, r := range ranks {
			if r.err != nil {
				t.Fatalf("world %d rank %d: %v", world, i, r.err)
			}
			sameWeights(t, "moving mean", r.model.movingMean(), one.model.movingMean(), 1e-5)
			if len(r.timing.AverageSeconds) == 0 {
				t.Errorf("world %d rank %d: no time spent averaging", world, i)
			}
		}
	}
}

// callbackSet builds Keras callbacks from the contract's JSON, as the
// exporter writes them.
func callbackSet(t *testing.T, rankOf int, specs string) *callbacks.Set {
	t.Helper()
	return callbackSetIn(t, rankOf, specs, t.TempDir())
}

// callbackSetIn is callbackSet with CSVLogger's files in outputData.
func callbackSetIn(t *testing.T, rankOf int, specs, outputData string) *callbacks.Set {
	t.Helper()
	var list []model.CallbackSpec
	if err := json.Unmarshal([]byte(specs), &list); err != nil {
		t.Fatal(err)
	}
	s, err := callbacks.New(list, callbacks.Options{Writer: rankOf == 0, OutputDataDir: outputData, TensorBoardDir: t.TempDir(), Log: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const plateauCallbacks = `[
 {"class": "ReduceLROnPlateau", "config": {"monitor": "loss", "mode": "min", "factor": 0.5, "patience": 1, "min_delta": 0.05, "cooldown": 1, "min_lr": 0}},
 {"class": "EarlyStopping", "config": {"monitor": "loss", "mode": "min", "min_delta": 0.02, "patience": 2, "restore_best_weights": true, "start_from_epoch": 0}}]`

// Callbacks decide on the epoch logs, which cover every rank's data, so
// every rank lowers the rate and stops at the same epoch; a job stopped
// mid-epoch and resumed from its checkpoint ends exactly like one that ran
// through (wait and cooldown counters, the best value and the kept weights
// travel in the checkpoint; CSVLogger's file, written in a fresh output
// folder after the resume as in a new container, holds every epoch).
func TestCallbacksAgreeAcrossRanksAndResume(t *testing.T) {
	dir := t.TempDir()
	writeChannel(t, dir, 96, 0)
	var stoppedAt []int
	for _, world := range []int{1, 2} {
		ranks := make([]*rank, world)
		for i := range ranks {
			ranks[i] = &rank{job: newJob(30, 16/world, ""), model: newLinear(), train: openChannel(t, dir, false)}
			ranks[i].cbs = callbackSet(t, i, plateauCallbacks)
		}
		runRanks(t, ranks)
		for i, r := range ranks {
			if r.err != nil {
				t.Fatalf("world %d rank %d: %v (rank %d: %v)", world, i, r.err, world-1, ranks[world-1].err)
			}
			stoppedAt = append(stoppedAt, len(r.hist.Values("loss")))
			if lr := r.hist.Values("learning_rate"); len(lr) == 0 || lr[len(lr)-1] >= lr[0] {
				t.Errorf("world %d rank %d: learning_rate %v never lowered", world, i, lr)
			}
		}
	}
	for _, n := range stoppedAt {
		if n != stoppedAt[0] || n >= 30 {
			t.Fatalf("epochs run per rank %v: every rank and world must stop early at the same epoch", stoppedAt)
		}
	}

	withCSV := strings.TrimSuffix(plateauCallbacks, "]") + `, {"class": "CSVLogger", "config": {"filename": "log.csv", "separator": ",", "append": false}}]`
	wholeOut, stoppedOut, resumedOut := t.TempDir(), t.TempDir(), t.TempDir()
	ckpt := t.TempDir()
	whole := &rank{job: newJob(30, 16, ckpt), model: newLinear(), train: openChannel(t, dir, false), cbs: callbackSetIn(t, 0, withCSV, wholeOut)}
	runRanks(t, []*rank{whole})
	stopped := &rank{job: newJob(30, 16, ckpt), model: newLinear(), train: openChannel(t, dir, false), cbs: callbackSetIn(t, 0, withCSV, stoppedOut)}
	ctx, stop := context.WithCancelCause(context.Background())
	stopped.ctx = ctx
	stopped.model.onStep = func(step int) {
		if step == 15 { // epoch 3 of 6-step epochs
			stop(errors.New("test stop"))
		}
	}
	runRanks(t, []*rank{stopped})
	ck, err := checkpoint.Latest(ckpt, "linear-fake", &bytes.Buffer{})
	if err != nil || ck == nil || len(ck.State.Callbacks) == 0 {
		t.Fatalf("checkpoint %+v, %v: no callback state", ck, err)
	}
	resumed := &rank{job: newJob(30, 16, ckpt), model: newLinear(), train: openChannel(t, dir, false), ck: ck, cbs: callbackSetIn(t, 0, withCSV, resumedOut)}
	runResumed(t, resumed)
	if a, b := resumed.hist.Values("learning_rate"), whole.hist.Values("learning_rate"); !slices.Equal(a, b) {
		t.Errorf("learning_rate after resume %v, uninterrupted %v", a, b)
	}
	sameWeights(t, "restored best weights after resume", resumed.model.weights(), whole.model.weights(), 0)
	csvA, errA := os.ReadFile(filepath.Join(wholeOut, "log.csv"))
	csvB, errB := os.ReadFile(filepath.Join(resumedOut, "log.csv"))
	if errA != nil || errB != nil || !bytes.Equal(csvA, csvB) || bytes.Count(csvA, []byte("\n")) != len(whole.hist.Values("loss"))+1 {
		t.Errorf("CSVLogger after resume (%v, %v):\n%s\nuninterrupted:\n%s", errB, errA, csvB, csvA)
	}
}

// A stopped job's weights become those a job ending at the stop writes
// (SageMaker gives it two minutes to write its model): the checkpoint keeps
// them as trained, for the resume, and EarlyStopping(restore_best_weights)
// then puts the best finished epoch's back, as at the end of training.
// Without callbacks the model keeps the checkpoint's weights.
func TestStopLeavesTheWeightsAJobEndingThereWrites(t *testing.T) {
	dir := t.TempDir()
	writeChannel(t, dir, 96, 0)
	const keepBest = `[{"class": "EarlyStopping", "config": {"monitor": "loss", "mode": "min", "min_delta": 0, "patience": 100, "restore_best_weights": true, "start_from_epoch": 0}}]`
	for _, specs := range []string{"", keepBest} {
		ckpt := t.TempDir()
		r := &rank{job: newJob(30, 16, ckpt), model: newLinear(), train: openChannel(t, dir, false)}
		if specs != "" {
			r.cbs = callbackSet(t, 0, specs)
		}
		r.model.onStep = sigtermAt(r, 15) // epoch 3 of 6-step epochs
		runRanks(t, []*rank{r})
		var in *fit.Interrupted
		if !errors.As(r.err, &in) || in.Unfinished != nil {
			t.Fatalf("callbacks %q: %v (%+v): want a stop whose weights are finished", specs, r.err, in)
		}
		ck, err := checkpoint.Latest(ckpt, "linear-fake", &bytes.Buffer{})
		if err != nil || ck == nil {
			t.Fatalf("checkpoint %+v, %v", ck, err)
		}
		trained := f32s(ck.Vars[:4*(features+1)]) // w is the first variable
		if specs == "" {
			sameWeights(t, "weights after a stop without callbacks", r.model.weights(), trained, 0)
			continue
		}
		best := f32s(ck.Best[:4*(features+1)]) // kept in the variables' order too
		if slices.Equal(best, trained) {
			t.Fatalf("kept weights %v against trained %v: the best epoch's must differ from the stop's for this test to tell", best, trained)
		}
		sameWeights(t, "weights after a stop with restore_best_weights", r.model.weights(), best, 0)
	}

	// On two ranks the weights kept, and so those restored at the stop,
	// hold both ranks' statistics (moving_mean, averaged over ranks): each
	// rank's own were kept, and the stop wrote rank 0's.
	ranks := make([]*rank, 2)
	for i := range ranks {
		ranks[i] = &rank{job: newJob(30, 8, t.TempDir()), model: newLinear(), train: openChannel(t, dir, false), cbs: callbackSet(t, i, keepBest)}
	}
	ranks[1].model.onStep = sigtermAt(ranks[1], 15)
	runRanks(t, ranks)
	for i, r := range ranks {
		if in := (*fit.Interrupted)(nil); !errors.As(r.err, &in) || in.Unfinished != nil {
			t.Fatalf("rank %d: %v, want a stop whose weights are finished", i, r.err)
		}
	}
	a, b := ranks[0].model.moving, ranks[1].model.moving
	if !slices.Equal(a, b) || slices.Equal(a, make([]float32, len(a))) {
		t.Errorf("moving_mean after a stop with restore_best_weights: rank 0 %v, rank 1 %v; want the same average on both", a, b)
	}
}

// K train steps per call (steps_per_execution) train exactly as one step
// per call, stopping and resuming at block ends: blocks of 3 over epochs of
// 7 steps whose last batch is short, a SIGTERM during a block, a
// checkpoint_steps boundary that cuts blocks, and "auto".
func TestStepsPerCallTrainLikeOneStepPerCall(t *testing.T) {
	dir := t.TempDir()
	writeChannel(t, dir, 100, 0) // 7 steps of 16: the last has 4 rows
	run := func(k int, ckpt string, tune func(*rank)) *rank {
		r := &rank{job: newJob(3, 16, ckpt), model: newLinear(), train: openChannel(t, dir, false), multi: true}
		r.job.StepsPerExecution = k
		if tune != nil {
			tune(r)
		}
		runRanks(t, []*rank{r})
		return r
	}
	one := run(1, t.TempDir(), nil)
	if one.err != nil {
		t.Fatal(one.err)
	}
	same := func(what string, r *rank) {
		t.Helper()
		sameWeights(t, what, r.model.weights(), one.model.weights(), 0)
		if got, want := r.hist.Values("loss"), one.hist.Values("loss"); !slices.Equal(got, want) {
			t.Errorf("%s: losses %v, want %v (bit for bit)", what, got, want)
		}
	}
	for _, k := range []int{3, 0} {
		// A call costs 2 ms, so K steps per call are plainly faster per step
		// and "auto" keeps the K it picks.
		r := run(k, t.TempDir(), func(r *rank) { r.job.CheckpointSteps = 5; r.model.callCost = 2 * time.Millisecond })
		if r.err != nil {
			t.Fatal(r.err)
		}
		same(fmt.Sprintf("steps_per_execution %d", k), r)
		if r.model.blocks == 0 {
			t.Errorf("steps_per_execution %d: no call ran several steps", k)
		}
		// timing.json names the K taken: the one asked for, or auto's
		// power of two (the fake's steps take microseconds: well over 1).
		if got := r.timing.StepsPerCall; (k > 0 && got != k) || (k == 0 && (got < 2 || got > 64 || got&(got-1) != 0)) {
			t.Errorf("steps_per_execution %d: timing says %d steps per call", k, got)
		}
		// The start-up ends with the first call, whole: its 2 ms were
		// split among its steps (a third of the call, for a compile the
		// first call pays).
		if st := r.timing.Startup; k == 3 && (st.FirstCallSteps != 3 || st.FirstStepSeconds < r.model.callCost.Seconds()) {
			t.Errorf("steps_per_execution 3: startup %+v, want a first call of 3 steps of at least %v", st, r.model.callCost)
		}
	}

	ckpt := t.TempDir()
	stopped := run(3, ckpt, func(r *rank) {
		r.model.onStep = sigtermAt(r, 8) // epoch 2's first block, steps 1-3
	})
	var in *fit.Interrupted
	if !errors.As(stopped.err, &in) || in.Epoch != 2 || in.Step != 3 {
		t.Fatalf("stopped with %v, want *fit.Interrupted at epoch 2 step 3 (the block's end)", stopped.err)
	}
	// resume runs the job again from ckpt's newest checkpoint, to the end.
	resume := func(what, ckpt string) {
		t.Helper()
		ck, err := checkpoint.Latest(ckpt, "linear-fake", &bytes.Buffer{})
		if err != nil || ck == nil {
			t.Fatalf("%s: latest checkpoint %+v, %v", what, ck, err)
		}
		resumed := run(3, ckpt, func(r *rank) {
			if err := fit.Resume(r.model, ck, r.job, 1); err != nil {
				t.Fatal(err)
			}
			r.ck = ck
		})
		if resumed.err != nil {
			t.Fatal(resumed.err)
		}
		same(what, resumed)
	}
	resume("resumed", ckpt)

	// A stop asked before a block (during the model's load, say) ends
	// training after one step, as without blocks, not after a block of K
	// (whose first call compiles the K-step loop).
	early, cancel := context.WithCancelCause(context.Background())
	cancel(&sagemaker.StopSignal{Signal: syscall.SIGTERM})
	ckpt = t.TempDir()
	stopped = run(3, ckpt, func(r *rank) { r.ctx = early })
	if !errors.As(stopped.err, &in) || in.Epoch != 1 || in.Step != 1 {
		t.Fatalf("stopped before the first block with %v, want *fit.Interrupted at epoch 1 step 1", stopped.err)
	}
	resume("resumed after one step", ckpt)
}

// Blocks cut short where checkpoint_steps or TensorBoard's records fall
// run in powers of two: those cuts drift against the epochs, and each new
// size compiles train_steps again under XLA (cut where they fell, these
// blocks took 10 sizes over 3 epochs). Cut by the epoch's end alone, the
// last block of each epoch is one size: 23 steps at K=16 run 16 and 7.
func TestCutBlocksRunInPowersOfTwo(t *testing.T) {
	dir := t.TempDir()
	writeChannel(t, dir, 23*8, 0) // 23 steps of 8
	run := func(k int) *rank {
		r := &rank{job: newJob(3, 8, t.TempDir()), model: newLinear(), train: openChannel(t, dir, false), multi: true}
		r.job.StepsPerExecution, r.job.CheckpointSteps = k, 10
		r.cbs = callbackSet(t, 0, `[{"class": "TensorBoard", "config": {"update_freq": 9}}]`)
		runRanks(t, []*rank{r})
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r
	}
	one, blocks := run(1), run(16)
	sameWeights(t, "blocks", blocks.model.weights(), one.model.weights(), 0)
	for size := range blocks.model.blockSizes {
		if size != 16 && size&(size-1) != 0 {
			t.Errorf("a block of %d steps: sizes %v", size, blocks.model.blockSizes)
		}
	}
	if blocks.model.blocks == 0 {
		t.Error("no call ran several steps")
	}
	plain := &rank{job: newJob(3, 8, ""), model: newLinear(), train: openChannel(t, dir, false), multi: true}
	plain.job.StepsPerExecution = 16
	runRanks(t, []*rank{plain})
	if want := map[int]int{16: 3, 7: 3}; plain.err != nil || !maps.Equal(plain.model.blockSizes, want) {
		t.Errorf("uncut blocks: %v, sizes %v, want %v", plain.err, plain.model.blockSizes, want)
	}

	// "auto" under records every 2 batches keeps one step per call: its
	// blocks would all be cut to 2 or 1, its trial never done.
	auto := &rank{job: newJob(2, 8, ""), model: newLinear(), train: openChannel(t, dir, false), multi: true}
	auto.model.callCost = 2 * time.Millisecond // K steps per call plainly pay, as in TestStepsPerCallTrainLikeOneStepPerCall
	auto.cbs = callbackSet(t, 0, `[{"class": "TensorBoard", "config": {"update_freq": 2}}]`)
	runRanks(t, []*rank{auto})
	if auto.err != nil || auto.model.blocks != 0 || auto.timing.StepsPerCall != 1 {
		t.Errorf("auto under update_freq 2: %v, %d blocks, %d steps per call", auto.err, auto.model.blocks, auto.timing.StepsPerCall)
	}
}

// "auto" times blocks of the K it picked and goes back to one step per
// call when they are slower per step (some graphs run worse in the
// in-graph loop, such as convolutions compiled with XLA), with the numbers
// unchanged.
func TestAutoGoesBackToOneStepPerCallWhenBlocksAreSlower(t *testing.T) {
	dir := t.TempDir()
	writeChannel(t, dir, 100, 0) // 7 steps of 16: the last has 4 rows
	run := func(k int, slowBlocks bool) *rank {
		r := &rank{job: newJob(8, 16, ""), model: newLinear(), train: openChannel(t, dir, false), multi: true}
		r.job.StepsPerExecution = k
		r.model.callCost = time.Millisecond
		if slowBlocks {
			r.model.blockStepCost = 3 * time.Millisecond // a step in a block: 3 ms, against 1 ms alone
		}
		runRanks(t, []*rank{r})
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r
	}
	one, auto := run(1, false), run(0, true)
	if got := auto.timing.StepsPerCall; got != 1 {
		t.Errorf("auto with slower blocks: %d steps per call at the end, want 1", got)
	}
	if auto.model.blocks == 0 {
		t.Error("auto never tried a block of several steps")
	}
	sameWeights(t, "auto", auto.model.weights(), one.model.weights(), 0)
	if got, want := auto.hist.Values("loss"), one.hist.Values("loss"); !slices.Equal(got, want) {
		t.Errorf("losses %v, want %v (bit for bit)", got, want)
	}
}

// After a few calls, train calls run in TensorFlow's pool and in the
// calling thread in turns, and the rest where they were faster (here the
// fake's calls cost 2 ms one way and 0.2 ms the other), with the numbers
// unchanged; a job that set inter_op_threads times nothing.
func TestCallsRunWhereTheyWereFaster(t *testing.T) {
	dir := t.TempDir()
	writeChannel(t, dir, 100, 0) // 7 steps of 16 per epoch
	run := func(in *inlineLinear, probe bool) *rank {
		r := &rank{job: newJob(5, 16, ""), model: newLinear(), train: openChannel(t, dir, false), inliner: in}
		r.job.ProbeInline = probe
		runRanks(t, []*rank{r})
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r
	}
	plain := run(nil, true)
	fast, slow := 200*time.Microsecond, 2*time.Millisecond
	for _, c := range []struct {
		pool, inline time.Duration
		want         bool
	}{{slow, fast, true}, {fast, slow, false}} {
		in := &inlineLinear{poolCost: c.pool, inlineCost: c.inline}
		r := run(in, true)
		what := fmt.Sprintf("pool %v, calling thread %v", c.pool, c.inline)
		if r.timing.Inline == nil || r.timing.Inline.CallingThread != c.want || in.inline != c.want {
			t.Errorf("%s: timing says %+v, the model ends inline=%v; want %v", what, r.timing.Inline, in.inline, c.want)
		}
		if in.sets != 25 { // 24 timed calls after 3, then the choice
			t.Errorf("%s: SetInline called %d times, want 25", what, in.sets)
		}
		if c.want != strings.Contains(r.out.String(), "in the calling thread") {
			t.Errorf("%s: the log says %q", what, r.out.String())
		}
		sameWeights(t, what, r.model.weights(), plain.model.weights(), 0)
		if got, want := r.hist.Values("loss"), plain.hist.Values("loss"); !slices.Equal(got, want) {
			t.Errorf("%s: losses %v, want %v (bit for bit)", what, got, want)
		}
	}
	in := &inlineLinear{poolCost: slow, inlineCost: fast}
	if r := run(in, false); in.sets != 0 || r.timing.Inline != nil {
		t.Errorf("inter_op_threads set: SetInline called %d times, timing says %+v; want no probe", in.sets, r.timing.Inline)
	}
}

// The probe times both ways again after a while and follows a change:
// here the calling thread is the faster way until the fake's 60th call,
// the pool after it, and the job ends in the pool, with the numbers of a
// job that never switched. Two processes time again at the same step (40
// steps after their first choice), each on its own.
func TestCallsFollowTheFasterWay(t *testing.T) {
	defer fit.SetInlineReprobe(30*time.Millisecond, 0, 40)()
	dir := t.TempDir()
	writeChannel(t, dir, 100, 0) // 7 global batches of 16 per epoch
	run := func(hosts int, probe bool) []*rank {
		ranks := make([]*rank, hosts)
		for i := range ranks {
			ranks[i] = &rank{job: newJob(30, 16/hosts, ""), model: newLinear(), train: openChannel(t, dir, false)}
			if probe {
				ranks[i].inliner = &inlineLinear{poolCost: 2 * time.Millisecond, inlineCost: 200 * time.Microsecond, swapAt: 60}
			}
			ranks[i].job.ProbeInline = probe
		}
		runRanks(t, ranks)
		for _, r := range ranks {
			if r.err != nil {
				t.Fatal(r.err)
			}
		}
		return ranks
	}
	for _, hosts := range []int{1, 2} {
		plain := run(hosts, false)
		for i, r := range run(hosts, true) {
			what := fmt.Sprintf("%d process(es), process %d", hosts, i)
			// The job may end in a probe, so the timing says where steps
			// ran, not the fake's last call.
			if got := r.timing.Inline; got == nil || got.CallingThread || got.Probes < 2 || got.Switches < 1 {
				t.Fatalf("%s: timing says %+v; want the pool, after at least 2 probes and a switch", what, got)
			}
			for _, want := range []string{"in the calling thread, not TensorFlow's inter-op pool", "in TensorFlow's inter-op pool again"} {
				if !strings.Contains(r.out.String(), want) {
					t.Errorf("%s: the log %q does not say %q", what, r.out.String(), want)
				}
			}
			sameWeights(t, what, r.model.weights(), plain[i].model.weights(), 0)
			if got, want := r.hist.Values("loss"), plain[i].hist.Values("loss"); !slices.Equal(got, want) {
				t.Errorf("%s: losses %v, want %v (bit for bit)", what, got, want)
			}
		}
	}
}

// A job whose first probe found the pool faster, and a later one the
// calling thread, weighs the move then and moves (one process), with the
// numbers of a job that never moved.
func TestMoveWeighedAgainAfterASwitch(t *testing.T) {
	defer fit.SetInlineReprobe(30*time.Millisecond, 0, 40)()
	dir := t.TempDir()
	writeChannel(t, dir, 100, 0) // 7 steps of 16 per epoch: 100 epochs, 700 steps
	plain := &rank{job: newJob(100, 16, ""), model: newLinear(), train: openChannel(t, dir, false)}
	in := &inlineLinear{poolCost: 200 * time.Microsecond, inlineCost: 2 * time.Millisecond, swapAt: 60}
	mover := &movingLinear{}
	r := &rank{job: newJob(100, 16, ""), model: newLinear(), train: openChannel(t, dir, false), inliner: in, mover: mover}
	r.job.ProbeInline, r.job.Executor = true, job.ExecutorAuto
	runRanks(t, []*rank{plain})
	runRanks(t, []*rank{r})
	if plain.err != nil || r.err != nil {
		t.Fatal(plain.err, r.err)
	}
	w := r.timing.ExecutorWeighed
	if mover.moves != 1 || r.timing.Executor != job.ExecutorSingleThreaded || w == nil || !w.Move || r.timing.Inline == nil || r.timing.Inline.Switches < 1 {
		t.Fatalf("moves %d, executor %q, weighed %+v, inline %+v; want one move after a switch to the calling thread", mover.moves, r.timing.Executor, w, r.timing.Inline)
	}
	sameWeights(t, "moved after a switch", r.model.weights(), plain.model.weights(), 0)
	if got, want := r.hist.Values("loss"), plain.hist.Values("loss"); !slices.Equal(got, want) {
		t.Errorf("losses %v, want %v (bit for bit)", got, want)
	}
}

// Train steps move to the single-threaded executor: "auto" once the probe
// chose the calling thread and the steps left outlast twenty first steps,
// "single_threaded" at the first step (no probe), "default" never; a model
// that cannot move, or whose move fails, stays, named in a warning. The
// processes of a job of two (applying each step's gradient with the next
// one's computation) move too, their first call there a gradient after the
// pending apply, under "auto" both or neither; where the job fixed the
// calling thread (inter_op_threads -1, no probe) "auto" times the steps
// itself. timing.json says what "auto" weighed. The numbers are the same
// wherever steps run.
func TestStepsMoveToTheSingleThreadedExecutor(t *testing.T) {
	dir := t.TempDir()
	writeChannel(t, dir, 100, 0) // 7 steps of 16 per epoch: 100 epochs leave about 670 steps after the probe, 5 about 8
	fast, slow := 200*time.Microsecond, 2*time.Millisecond
	// run runs a job of one process per mover; a nil mover is a model that
	// cannot move. fixed: inter_op_threads -1.
	run := func(epochs int, executor string, fixed bool, movers ...*movingLinear) []*rank {
		ranks := make([]*rank, len(movers))
		for i := range ranks {
			in := &inlineLinear{poolCost: slow, inlineCost: fast}
			r := &rank{job: newJob(epochs, 16/len(movers), ""), model: newLinear(), train: openChannel(t, dir, false), inliner: in, mover: movers[i]}
			r.model.fused = len(movers) > 1
			r.job.ProbeInline, r.job.Executor = !fixed, executor
			if fixed {
				r.job.Session.InterOpThreads = -1
			}
			ranks[i] = r
		}
		runRanks(t, ranks)
		for _, r := range ranks {
			if r.err != nil {
				t.Fatal(r.err)
			}
		}
		return ranks
	}
	plain := map[int]*rank{1: run(100, job.ExecutorDefault, false, nil)[0], 2: run(100, job.ExecutorDefault, false, nil, nil)[0]}
	for _, c := range []struct {
		name     string
		epochs   int
		executor string
		fixed    bool // inter_op_threads -1
		movers   []*movingLinear
		moves    int    // MoveSingleThreaded calls, each process that can move
		moved    bool   // timing says single_threaded
		log      string // in the first process's log
		// weighed is timing's executor_weighed where the process can
		// move: "" none, else "worth W, move M".
		weighed string
	}{
		{"auto, many steps left", 100, job.ExecutorAuto, false, []*movingLinear{{}}, 1, true, "single-threaded executor (moved in", "worth true, move true"},
		{"auto, few steps left", 5, job.ExecutorAuto, false, []*movingLinear{{}}, 0, false, "", "worth false, move false"},
		{"single_threaded, few steps", 5, job.ExecutorSingleThreaded, false, []*movingLinear{{}}, 1, true, "single-threaded executor (moved in", ""},
		{"default", 100, job.ExecutorDefault, false, []*movingLinear{{}}, 0, false, "", ""},
		{"XLA", 100, job.ExecutorSingleThreaded, false, []*movingLinear{{xla: true}}, 0, false, "stay on TensorFlow's default executor: the model's steps are XLA-compiled", ""},
		{"the move fails", 100, job.ExecutorAuto, false, []*movingLinear{{stay: errors.New("its first call failed: boom")}}, 1, false, "stay on TensorFlow's default executor: its first call failed: boom", "worth true, move true"},
		{"single_threaded, two processes", 100, job.ExecutorSingleThreaded, false, []*movingLinear{{}, {}}, 1, true, "single-threaded executor (moved in", ""},
		{"auto, two processes", 100, job.ExecutorAuto, false, []*movingLinear{{}, {}}, 1, true, "single-threaded executor (moved in", "worth true, move true"},
		{"auto, two processes, one cannot move", 100, job.ExecutorAuto, false, []*movingLinear{{}, nil}, 0, false, "", "worth true, move false"},
		{"auto, calling thread fixed", 100, job.ExecutorAuto, true, []*movingLinear{{}}, 1, true, "single-threaded executor (moved in", "worth true, move true"},
		{"auto, calling thread fixed, few steps left", 5, job.ExecutorAuto, true, []*movingLinear{{}}, 0, false, "", "worth false, move false"},
	} {
		ranks := run(c.epochs, c.executor, c.fixed, c.movers...)
		for i, r := range ranks {
			m := c.movers[i]
			weighed := ""
			if w := r.timing.ExecutorWeighed; w != nil {
				weighed = fmt.Sprintf("worth %v, move %v", w.Worth, w.Move)
				offProbe := r.timing.Inline != nil && w.StepSeconds != r.timing.Inline.CallingThreadStepSeconds
				if w.StepSeconds <= 0 || w.StepsLeft <= 0 || offProbe {
					t.Errorf("%s, process %d: executor_weighed %+v, inline %+v: want a step time (the probe's calling-thread step where it ran) and steps left", c.name, i, *w, r.timing.Inline)
				}
			}
			want := c.weighed
			if m == nil {
				want = "" // a process that cannot move weighs nothing
			}
			if weighed != want {
				t.Errorf("%s, process %d: executor_weighed says %q, want %q", c.name, i, weighed, want)
			}
			if m == nil {
				continue
			}
			if m.moves != c.moves || (r.timing.Executor == job.ExecutorSingleThreaded) != c.moved {
				t.Errorf("%s, process %d: %d moves, timing's executor %q; want %d moves, moved %v", c.name, i, m.moves, r.timing.Executor, c.moves, c.moved)
			}
			if c.moved && r.timing.ExecutorMoveSeconds <= 0 {
				t.Errorf("%s, process %d: timing's executor_move_seconds is %v", c.name, i, r.timing.ExecutorMoveSeconds)
			}
		}
		r := ranks[0]
		if log := r.out.String(); (c.log == "") == strings.Contains(log, "executor") || !strings.Contains(log, c.log) {
			t.Errorf("%s: the log says %q, want %q", c.name, log, c.log)
		}
		if c.executor == job.ExecutorSingleThreaded && r.inliner.sets != 0 && !c.movers[0].xla {
			t.Errorf("%s: the probe ran (%d SetInline calls)", c.name, r.inliner.sets)
		}
		if c.epochs == 100 {
			want := plain[len(ranks)]
			if got, want := r.hist.Values("loss"), want.hist.Values("loss"); !slices.Equal(got, want) {
				t.Errorf("%s: loss per epoch %v, on the default executor %v", c.name, got, want)
			}
			sameWeights(t, c.name, r.model.weights(), want.model.weights(), 0)
		}
	}
}

// "auto" stacks no more than its byte bound: K is halved until K batches
// fit (here 1 KiB: 4 batches of 16 rows of 16 bytes), whatever the step
// time asks for.
func TestAutoBlocksStayWithinTheirByteBound(t *testing.T) {
	defer fit.SetBlockBytes(1 << 10)()
	dir := t.TempDir()
	writeChannel(t, dir, 100, 0)
	r := &rank{job: newJob(3, 16, ""), model: newLinear(), train: openChannel(t, dir, false), multi: true}
	r.model.callCost = 2 * time.Millisecond // alone, auto would take 16 or 32
	runRanks(t, []*rank{r})
	if r.err != nil {
		t.Fatal(r.err)
	}
	if got := r.timing.StepsPerCall; got != 4 {
		t.Errorf("auto took %d steps per call, want 4 (1 KiB of 256-byte batches)", got)
	}
}

// Several ranks apply step t's averaged gradient with step t+1's
// computation in one call, and train as they do with a call each: the
// same weights and losses to the bit, through a stop and resume and the
// uneven shards' empty steps.
func TestFusedApplyTrainsAsSeparateCalls(t *testing.T) {
	dir := t.TempDir()
	writeChannel(t, dir, 100, 0)
	run := func(fused bool) []*rank {
		rs := make([]*rank, 2)
		for i := range rs {
			rs[i] = &rank{job: newJob(3, 8, t.TempDir()), model: newLinear(), train: openChannel(t, dir, false)}
			rs[i].model.fused = fused
			rs[i].job.CheckpointSteps = 4
		}
		runRanks(t, rs)
		for i, r := range rs {
			if r.err != nil {
				t.Fatalf("fused %v rank %d: %v", fused, i, r.err)
			}
		}
		return rs
	}
	separate, fused := run(false), run(true)
	for i := range fused {
		if fused[i].model.fusedCalls == 0 {
			t.Errorf("rank %d never applied and computed in one call", i)
		}
		sameWeights(t, fmt.Sprintf("rank %d", i), fused[i].model.weights(), separate[i].model.weights(), 0)
		if got, want := fused[i].hist.Values("loss"), separate[i].hist.Values("loss"); !slices.Equal(got, want) {
			t.Errorf("rank %d: losses %v, want %v", i, got, want)
		}
	}
}

// A resumed job goes on counting steps where the stopped one was, so
// checkpoint_steps keeps its cadence over the whole job.
func TestResumeKeepsStepCadence(t *testing.T) {
	dir := t.TempDir()
	writeChannel(t, dir, 100, 0) // 7 steps of 16 per epoch, 21 in all
	ckpt := t.TempDir()
	r := &rank{job: newJob(3, 16, ckpt), model: newLinear(), train: openChannel(t, dir, false)}
	r.job.CheckpointSteps = 5
	r.model.onStep = sigtermAt(r, 8)
	runRanks(t, []*rank{r})
	ck, err := checkpoint.Latest(ckpt, "linear-fake", &bytes.Buffer{})
	if err != nil || ck == nil || ck.State.GlobalStep != 9 {
		t.Fatalf("stopped: latest checkpoint %+v, %v; want one after step 9 (the stop is seen before it)", ck, err)
	}
	resumed := &rank{job: newJob(3, 16, ckpt), model: newLinear(), train: openChannel(t, dir, false), ck: ck}
	resumed.job.CheckpointSteps = 5
	runResumed(t, resumed)
	last, err := checkpoint.Latest(ckpt, "linear-fake", &bytes.Buffer{})
	if err != nil || last == nil || last.State.GlobalStep != 20 {
		t.Fatalf("resumed: latest checkpoint %+v, %v; want the one at step 20 (every 5 steps of the job)", last, err)
	}
}

// A custom step's own logs (TrainLogs) are the epoch's last step's; a job
// resumed at its epoch's last step (stopped during validation) runs no step
// of that epoch: the metrics restored from the checkpoint stand in for the
// logs of their names (they were NaN in the history and to the callbacks).
func TestStepLogsResumedAtAnEpochsEnd(t *testing.T) {
	trainDir, valDir := t.TempDir(), t.TempDir()
	writeChannel(t, trainDir, 96, 0)
	writeChannel(t, valDir, 80, 0)
	ckpt := t.TempDir()
	newRank := func() *rank {
		r := &rank{job: newJob(3, 16, ckpt), model: newLinear(), train: openChannel(t, trainDir, false), val: openChannel(t, valDir, false)}
		r.model.meta.TrainLogs = []string{"loss"}
		return r
	}
	whole := newRank()
	runRanks(t, []*rank{whole})
	if whole.err != nil {
		t.Fatal(whole.err)
	}
	stopped := newRank()
	stopped.model.onTest = sigtermAt(stopped, 80+32)
	runRanks(t, []*rank{stopped})
	var in *fit.Interrupted
	if !errors.As(stopped.err, &in) {
		t.Fatal(stopped.err)
	}
	resumed := newRank()
	resumeLatest(t, resumed, ckpt)
	got, want := resumed.hist.Values("loss"), whole.hist.Values("loss")
	if !slices.Equal(got, want) {
		t.Errorf("loss %v, want %v", got, want)
	}
}
