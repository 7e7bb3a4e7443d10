package fit

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/sagefit/sagefit/model"
	"github.com/sagefit/sagefit/runtime/checkpoint"
	"github.com/sagefit/sagefit/runtime/job"
	"github.com/sagefit/sagefit/runtime/report"
)

// Resume checks that a checkpoint fits this job and loads its weights
// and optimizer state into m. processes is the job's count of training
// processes (hosts x processes per host).
func Resume(m Model, ck *checkpoint.Loaded, j *job.Job, processes int) error {
	st := ck.State
	if trained := st.Epoch - 1; trained > j.Epochs || trained == j.Epochs && st.Step > 0 {
		done := count(trained, "epoch")
		if st.Step > 0 {
			done += " and " + count(st.Step, "step") + " of the next"
		}
		return fmt.Errorf("checkpoint %s has trained %s, more than this job's %d epochs (hyperparameter %q): its model would be written as this job's; raise %q, or remove the checkpoint",
			ck.Path, done, j.Epochs, job.HPEpochs, job.HPEpochs)
	}
	// steps_per_epoch and initial_epoch place the epoch's steps in the data:
	// an epoch of as many steps elsewhere would train other batches.
	if st.Step > 0 && st.StepsPerEpoch != nil && st.InitialEpoch != nil && (*st.StepsPerEpoch != j.StepsPerEpoch || *st.InitialEpoch != j.InitialEpoch) {
		return fmt.Errorf("checkpoint %s stopped mid-epoch with %q %d and %q %d, but this job has %d and %d; resuming mid-epoch needs the same settings (or remove the checkpoint)",
			ck.Path, job.HPStepsPerEpoch, *st.StepsPerEpoch, job.HPInitialEpoch, *st.InitialEpoch, j.StepsPerEpoch, j.InitialEpoch)
	}
	if st.Step > 0 && (st.BatchSize != j.BatchSize || st.Hosts != processes || st.Seed != j.Seed || st.Shuffle != j.Shuffle) {
		return fmt.Errorf("checkpoint %s stopped mid-epoch with batch_size %d, %s (hosts x processes per host), seed %d, shuffle %v, but this job has batch_size %d, %s, seed %d, shuffle %v; resuming mid-epoch needs the same settings (or remove the checkpoint)",
			ck.Path, st.BatchSize, count(st.Hosts, "training process"), st.Seed, st.Shuffle, j.BatchSize, count(processes, "training process"), j.Seed, j.Shuffle)
	}
	like, err := m.ReadVariables()
	if err != nil {
		return err
	}
	vars, err := model.SplitVariables(like, ck.Vars)
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", ck.Path, err)
	}
	if err := m.AssignVariables(vars); err != nil {
		return fmt.Errorf("checkpoint %s: %w", ck.Path, err)
	}
	return nil
}

// AgreeResumePoint tells every process where training starts: rank 0
// decided (from its checkpoint ck, if any) and broadcasts it, with every
// process's metric state of a resumed epoch.
func AgreeResumePoint(ctx context.Context, ck *checkpoint.Loaded, g Group, stateSize int) (ResumePoint, error) {
	type header struct {
		Epoch, Step int
		Steps, Rows int
		GlobalStep  int
		State       []float64
		History     *report.History
		Callbacks   json.RawMessage
		HostState   int // bytes, sent after the header
		Sample      string
	}
	h := header{Epoch: 1}
	var best, hosts []byte
	if ck != nil {
		h = header{Epoch: ck.State.Epoch, Step: ck.State.Step, Steps: ck.State.Steps, Rows: ck.State.Rows, GlobalStep: ck.State.GlobalStep, State: ck.State.MetricState, History: ck.History, Callbacks: ck.State.Callbacks, HostState: len(ck.State.HostState), Sample: ck.State.DataSample}
		best, hosts = ck.Best, ck.State.HostState
	}
	if g != nil {
		raw, err := json.Marshal(h)
		if err != nil {
			return ResumePoint{}, err
		}
		size := make([]byte, 8)
		binary.LittleEndian.PutUint64(size, uint64(len(raw)))
		if err := g.Broadcast(ctx, size, 0); err != nil {
			return ResumePoint{}, fmt.Errorf("broadcast resume point: %w", err)
		}
		if g.Rank() != 0 {
			raw = make([]byte, binary.LittleEndian.Uint64(size))
		}
		if err := g.Broadcast(ctx, raw, 0); err != nil {
			return ResumePoint{}, fmt.Errorf("broadcast resume point: %w", err)
		}
		if g.Rank() != 0 {
			h = header{}
			if err := json.Unmarshal(raw, &h); err != nil {
				return ResumePoint{}, fmt.Errorf("resume point from rank 0: %w", err)
			}
			hosts = make([]byte, h.HostState)
		}
		if len(hosts) > 0 {
			if err := g.Broadcast(ctx, hosts, 0); err != nil {
				return ResumePoint{}, fmt.Errorf("broadcast the hosts' own state: %w", err)
			}
		}
	}
	if h.Step > 0 {
		// A checkpoint holds every process's own metric state, one after
		// the other, so each goes on accumulating exactly where it stopped
		// (float32 metric variables round differently if one process took
		// the sum). An older one holds the sum: rank 0 takes it, the others
		// start at zero.
		rank, world := 0, 1
		if g != nil {
			rank, world = g.Rank(), g.World()
		}
		switch len(h.State) {
		case world * stateSize:
			h.State = h.State[rank*stateSize : (rank+1)*stateSize]
		case stateSize:
			if rank != 0 {
				h.State = make([]float64, stateSize)
			}
		default:
			return ResumePoint{}, &Agreed{fmt.Errorf("checkpoint metric state has %d values, the model %d per process for %d processes", len(h.State), stateSize, world)}
		}
	}
	return ResumePoint{Epoch: h.Epoch, Step: h.Step, Steps: h.Steps, Rows: h.Rows, GlobalStep: h.GlobalStep, MetricState: h.State, History: h.History, Callbacks: h.Callbacks, Best: best, HostState: hosts, Sample: h.Sample}, nil
}

// BroadcastVariables makes every process start from rank 0's weights and
// optimizer state.
func BroadcastVariables(ctx context.Context, m Model, g Group) error {
	vars, err := m.ReadVariables()
	if err != nil {
		return err
	}
	var size int
	for _, v := range vars {
		size += len(v.Data)
	}
	// One buffer, one broadcast: the ring pipelines it in chunks.
	buf := make([]byte, 0, size)
	for _, v := range vars {
		buf = append(buf, v.Data...)
	}
	if err := g.Broadcast(ctx, buf, 0); err != nil {
		return fmt.Errorf("broadcast initial weights from host rank 0: %w", err)
	}
	if g.Rank() == 0 {
		return nil
	}
	if vars, err = model.SplitVariables(vars, buf); err != nil {
		return fmt.Errorf("weights from rank 0: %w", err)
	}
	return m.AssignVariables(vars)
}

// count is n and what, plural but for one ("1 epoch", "2 training
// processes").
func count(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	if strings.HasSuffix(what, "s") {
		return fmt.Sprintf("%d %ses", n, what)
	}
	return fmt.Sprintf("%d %ss", n, what)
}
