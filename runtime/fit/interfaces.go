package fit

import (
	"context"

	"github.com/sagefit/sagefit/distributed"
	"github.com/sagefit/sagefit/model"
)

// Model is what the loop needs of a loaded training SavedModel; package
// model/tf's *Model implements it through libtensorflow, and the loop's
// tests use a small pure-Go model.
type Model interface {
	Meta() *model.Metadata
	// TrainStep is Keras's fused train step (one process): update and
	// running metrics.
	TrainStep(b model.Batch) ([]model.Metric, error)
	TestStep(b model.Batch) ([]model.Metric, error)
	// ComputeGradients runs the train step without the update, writing
	// the fused gradient (Meta().GradientSize values) into grads.
	ComputeGradients(b model.Batch, grads []float32) ([]model.Metric, error)
	ApplyGradients(grads []float32) error
	ResetMetrics() error
	MetricResults() ([]model.Metric, error)
	// MetricState is every metric variable flattened, so processes can
	// sum them; AssignMetricState sets them back.
	MetricState() ([]float64, error)
	AssignMetricState(state []float64) error
	ReadVariables() ([]model.Variable, error)
	// ReadVariablesInto is ReadVariables into the data of reuse, a
	// slice an earlier call returned that nothing else holds (a
	// checkpoint's copy of a large state is made once, not at every
	// checkpoint); nil reuse reads into new memory.
	ReadVariablesInto(reuse []model.Variable) ([]model.Variable, error)
	AssignVariables(vars []model.Variable) error
	// LearningRate and SetLearningRate serve ReduceLROnPlateau.
	LearningRate() (float64, error)
	SetLearningRate(lr float64) error
}

// MultiStepper is a Model that runs several train steps in one call
// (steps_per_execution); *tf.Model is one when its export has train_steps.
type MultiStepper interface {
	MultiStep() bool
	// TrainSteps runs steps train steps on b, steps batches of equal rows
	// stacked, with the numbers of as many TrainStep calls; the metrics are
	// those after the last.
	TrainSteps(b model.Batch, steps int) ([]model.Metric, error)
}

// Inliner is a Model whose session calls can run their ops in the calling
// thread instead of TensorFlow's inter-op pool (inline.go); *tf.Model is
// one.
type Inliner interface {
	SetInline(on bool)
}

// SingleThreader is a Model that can move its session to TensorFlow's
// single-threaded executor (single.go); *tf.Model is one.
type SingleThreader interface {
	// CannotRunSingleThreaded says why the model may not move (XLA, where
	// it cannot gain; state a move would not carry), or "".
	CannotRunSingleThreaded() string
	// MoveSingleThreaded moves the model, with its state, to a session of
	// that executor, runs first (a train step or a gradient) there, and
	// keeps that session from then on if first succeeds; stayed says why
	// it did not (first then ran again on the model's session, and err is
	// that run's).
	MoveSingleThreaded(first func() error) (stayed, err error)
}

// FusedApplier is a Model that applies one step's gradient and computes
// the next batch's in one call (several processes: a step is then one call
// and the all-reduce); *tf.Model is one when its export has
// apply_compute_gradients.
type FusedApplier interface {
	FusedApply() bool
	// ApplyThenComputeGradients applies grads, then writes b's gradient
	// into grads: the numbers of ApplyGradients then ComputeGradients.
	ApplyThenComputeGradients(grads []float32, b model.Batch) ([]model.Metric, error)
}

// SparseGatherer is a Model whose sparse gradients (an Embedding's rows)
// several processes gather instead of summing them dense; *tf.Model is one
// when its export has the sparse roles (model.RoleComputeSparseGradients).
type SparseGatherer interface {
	GathersSparse() bool
	// ComputeSparseGradients writes the dense gradients into dense and
	// returns the sparse ones' rows as the step looked them up.
	ComputeSparseGradients(b model.Batch, dense []float32) ([]model.Metric, model.SparseRows, error)
	// ApplySparseGradients applies the dense gradients and every
	// process's rows.
	ApplySparseGradients(dense []float32, rows model.SparseRows) error
}

// LossSharer is a Model whose optimizer scales the loss (mixed_float16's
// LossScaleOptimizer); *tf.Model is one when its export says so. Several
// processes each run their backward pass on their share of the global
// batch's loss, as MultiWorkerMirroredStrategy divides each replica's: a
// float16 backward pass then overflows where one process's would, not at
// a scale N times lower.
type LossSharer interface {
	SharesLoss() bool
	// SetLossShare makes the gradients share times those of this
	// process's mean loss.
	SetLossShare(share float32) error
}

// Finalizer is a Model whose optimizer has a last word on the weights once
// the epochs end (Keras's finalize_variable_values); *tf.Model is one.
type Finalizer interface {
	FinalizeVariables() error
}

// Group is the set of the job's training processes;
// *distributed.Group implements it. A nil Group is one process.
type Group interface {
	Rank() int
	World() int
	// AllReduce combines buf over all processes, in place; every process
	// ends with bit-identical values.
	AllReduce(ctx context.Context, buf []float32, op distributed.ReduceOp) error
	// AllReduceFloat64 sums small float64 vectors (metric state).
	AllReduceFloat64(ctx context.Context, buf []float64) error
	// Broadcast overwrites buf on every process with root's buf.
	Broadcast(ctx context.Context, buf []byte, root int) error
	Close() error
}
