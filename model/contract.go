package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
)

// The training contract, version 2. These names mirror python/sagefit/contract.py;
// change both together and bump ContractVersion when a role changes.
// Version 2 added weights of a loss per element (their shape per row) and
// models without targets (compiled without a loss); this sagefit reads
// version 1 exports as well (MinContractVersion).
const (
	Format             = "sagefit-training-savedmodel"
	ContractVersion    = 2
	MinContractVersion = 1
	ExtraDir           = "assets.extra"
	MetadataFile       = "sagefit.json"

	keyGradients    = "gradients"
	keyIterations   = "iterations"
	keyState        = "state"
	keyOK           = "ok"
	keyLearningRate = "learning_rate"
	keyLossShare    = "loss_share"
	keySparseIdx    = "sparse_indices"
	keySparseValues = "sparse_values"
	keySparseCounts = "sparse_counts"
)

// Roles of the contract: the key in the metadata's "signatures" map.
const (
	RoleServing           = "serving"
	RoleTrainStep         = "train_step"
	RoleComputeGradients  = "compute_gradients"
	RoleApplyGradients    = "apply_gradients"
	RoleTestStep          = "test_step"
	RoleResetMetrics      = "reset_metrics"
	RoleMetricResults     = "metric_results"
	RoleMetricState       = "metric_state"
	RoleAssignMetricState = "assign_metric_state"
	RoleReadVariables     = "read_variables"
	RoleAssignVariables   = "assign_variables"
	RoleGetLearningRate   = "get_learning_rate"
	RoleSetLearningRate   = "set_learning_rate"
	// The step roles with a per-row sample weight after the targets; a
	// model exported before they existed has none, and trains unweighted.
	RoleTrainStepWeighted        = "train_step_weighted"
	RoleComputeGradientsWeighted = "compute_gradients_weighted"
	RoleTestStepWeighted         = "test_step_weighted"
)

// SampleWeight is the name of the per-row weight tensor in a Batch (and of
// its file in a channel, sample_weight.npy), which weighs every output; a
// model with several outputs also takes sample_weight_<output> per output
// (Metadata.PerOutputWeights).
const SampleWeight = "sample_weight"

// IsSampleWeight says whether a tensor name is a weight's: sample_weight
// or sample_weight_<output>.
func IsSampleWeight(name string) bool {
	return name == SampleWeight || strings.HasPrefix(name, SampleWeight+"_")
}

// Weighted is the role of step role with a sample weight.
func Weighted(role string) string {
	switch role {
	case RoleTrainStep:
		return RoleTrainStepWeighted
	case RoleComputeGradients:
		return RoleComputeGradientsWeighted
	case RoleTestStep:
		return RoleTestStepWeighted
	}
	return ""
}

// HasSampleWeights reports whether the model's steps take sample weights.
func (m *Metadata) HasSampleWeights() bool {
	return m.Signatures[RoleTrainStepWeighted] != "" && m.Signatures[RoleComputeGradientsWeighted] != "" &&
		(m.Signatures[RoleTestStepWeighted] != "" || m.TestStepRefused != "")
}

var requiredRoles = []string{
	RoleServing, RoleApplyGradients, RoleResetMetrics, RoleMetricResults,
	RoleMetricState, RoleAssignMetricState, RoleReadVariables,
	RoleAssignVariables, RoleGetLearningRate,
}

// stepRoles are required in one form at least: unweighted, or weighted
// (which a batch without weights runs with weights of one: Keras's numbers
// are the same to the bit, as sample_weight=ones gives in fit).
var stepRoles = []string{RoleTrainStep, RoleComputeGradients, RoleTestStep}

// RoleTrainSteps runs several train steps in one call: every step tensor
// stacked, [steps, rows, ...], the steps run in order in an in-graph loop;
// the metrics are the last step's. It takes the weighted step's feeds when
// the model has them (Metadata.TrainStepsWeighted).
const RoleTrainSteps = "train_steps"

// RoleApplyComputeGradients applies a fused gradient and then computes the
// next batch's (apply_gradients then compute_gradients, in its weighted
// form when the model has one) in one call: the gradient first, then the
// step's tensors.
const RoleApplyComputeGradients = "apply_compute_gradients"

// RoleFinalizeVariables is the optimizer's last word on the weights once
// fit's epochs end (finalize_variable_values: use_ema copies the moving
// averages into them); exported only for an optimizer that has one.
const RoleFinalizeVariables = "finalize_variables"

// RoleSetLossShare sets the share of the global batch's loss this process's
// backward pass runs on (1/processes; 1 in one process, the default), as
// MultiWorkerMirroredStrategy divides each replica's loss; exported only
// for an optimizer that scales the loss (mixed_float16's
// LossScaleOptimizer), whose float16 backward pass then overflows where one
// process's would.
const RoleSetLossShare = "set_loss_share"

// RoleComputeSparseGradients and RoleApplySparseGradients serve several
// processes where some gradients are sparse (an Embedding's rows,
// Metadata.SparseGradients): the gradient with the sparse ones as the rows
// the step looked up, as they come (SparseRows), the dense ones fused as
// compute_gradients fuses them; and the update with every process's rows,
// gathered in process order. Keras's optimizers apply such rows one by
// one (Adam's second moment adds each lookup's square), so a dense sum of
// them is off one process's numbers. The compute role takes the feeds
// train_steps takes.
const (
	RoleComputeSparseGradients = "compute_sparse_gradients"
	RoleApplySparseGradients   = "apply_sparse_gradients"
)

// SparseRows are the rows of the sparse gradients (Metadata.SparseGradients,
// in their order) a step looked up, as they come: Counts[j] rows of
// variable j, their Indices into its first dimension and their Values
// (each row's elements), variable after variable.
type SparseRows struct {
	Indices []int64
	Values  []float32
	Counts  []int64
}

// TensorSpec describes one input or target: its name in the Keras model, its
// key in the signatures, dtype and shape (nil entries are unknown dims; the
// first is the batch).
type TensorSpec struct {
	Name  string   `json:"name"`
	Key   string   `json:"key"`
	DType string   `json:"dtype"`
	Shape []*int64 `json:"shape"`
}

// ExampleShape is the shape of one example (without the batch dimension);
// ok is false if any of those dims is unknown.
func (t TensorSpec) ExampleShape() (shape []int64, ok bool) {
	if len(t.Shape) == 0 {
		return nil, false
	}
	for _, d := range t.Shape[1:] {
		if d == nil {
			return nil, false
		}
		shape = append(shape, *d)
	}
	return shape, true
}

// ExampleElems is the number of elements of one example.
func (t TensorSpec) ExampleElems() int64 {
	shape, _ := t.ExampleShape()
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// VariableSpec describes a variable in read/assign order.
type VariableSpec struct {
	Name  string  `json:"name"`
	Key   string  `json:"key,omitempty"`
	Shape []int64 `json:"shape"`
	DType string  `json:"dtype"`
	// Kind is whose state it is: KindModel, KindOptimizer or KindStep.
	Kind      string `json:"kind,omitempty"`
	Trainable bool   `json:"trainable,omitempty"`
	// Aggregation "mean": with several hosts, the variable is averaged over
	// them before it is read (validation, checkpoints, the saved model):
	// BatchNormalization's moving statistics (see python/sagefit/export.py).
	Aggregation string `json:"aggregation,omitempty"`
	// NotWeight marks a model variable that is not one of its weights
	// (Keras's model.variables, not model.weights: a random layer's seed
	// state), which Keras's set_weights leaves alone.
	NotWeight bool `json:"not_weight,omitempty"`
}

// Variable kinds: whose state a variable is (python/sagefit/contract.py
// KIND_*).
const (
	KindModel     = "model"     // the model's own (Keras's model.variables)
	KindOptimizer = "optimizer" // the optimizer's
	KindStep      = "step"      // one a custom step uses that Keras does not track
)

// AggregationMean marks a variable that hosts average.
const AggregationMean = "mean"

// Metadata is the contract file written by the exporter.
type Metadata struct {
	Format                 string            `json:"format"`
	ContractVersion        int               `json:"contract_version"`
	TensorFlowVersion      string            `json:"tensorflow_version"`
	KerasVersion           string            `json:"keras_version"`
	LegacyKeras            bool              `json:"legacy_keras"`
	Inputs                 []TensorSpec      `json:"inputs"`
	Targets                []TensorSpec      `json:"targets"`
	Outputs                []string          `json:"outputs"`
	Signatures             map[string]string `json:"signatures"`
	Gradients              []VariableSpec    `json:"gradients"`
	GradientSize           int               `json:"gradient_size"`
	Variables              []VariableSpec    `json:"variables"`
	Metrics                []string          `json:"metrics"`
	MetricStateSize        int               `json:"metric_state_size"`
	LearningRateAssignable bool              `json:"learning_rate_assignable"`
	Optimizer              string            `json:"optimizer"`
	Fingerprint            string            `json:"fingerprint"`
	// SynchronizedBatchNorm names the BatchNormalization(synchronized=True)
	// layers, whose batch statistics would need an all-reduce inside the
	// step.
	SynchronizedBatchNorm []string `json:"synchronized_batch_norm,omitempty"`
	// WrittenTables names the lookup tables a train or test step writes (a
	// custom step's own MutableHashTable): the saved model holds their
	// contents, the variables read and assigned (checkpoints, a move) do
	// not.
	WrittenTables []string `json:"written_tables,omitempty"`
	// LocalOptimizers names the optimizers besides the compiled one that a
	// custom train step applies itself: with this process's own gradient,
	// which sagefit does not all-reduce.
	LocalOptimizers []string `json:"local_optimizers,omitempty"`
	// OwnMetrics names the compiled metrics whose class is the user's own
	// (not Keras's): several processes sum every metric's state, which is
	// right only where that state is a sum.
	OwnMetrics []string `json:"own_metrics,omitempty"`
	// TrainLogs and TestLogs are the metrics a custom train_step or
	// test_step returns where that is not every metric (a test_step that
	// leaves out a tracker only its train_step updates), in its order: the
	// step signatures output those, and fit's logs hold those (Keras takes
	// the step's logs when their names differ from the metrics'). Nil: all
	// of Metrics.
	TrainLogs []string `json:"train_logs,omitempty"`
	TestLogs  []string `json:"test_logs,omitempty"`
	// LossReductions are the compiled losses not reduced to a mean over the
	// batch (Keras's default), by name: "sum", "mean_with_sample_weight",
	// "None". Several processes weigh each one's gradient by its rows,
	// right for a mean only.
	LossReductions map[string]string `json:"loss_reductions,omitempty"`
	// LabelsAsGiven names the losses and metrics of the user's own that
	// get the labels in the shape fit was given them (Keras 3's Loss and
	// Metric subclasses and metric functions), where Keras's own match the
	// labels' rank to the predictions' first.
	LabelsAsGiven []string `json:"labels_as_given,omitempty"`
	// UntrainedVariables names the trainable variables the loss gives no
	// gradient (a head compiled without a loss): not in Gradients, left as
	// they are, as Keras's optimizer leaves them in fit (with a warning).
	UntrainedVariables []string `json:"untrained_variables,omitempty"`
	// ClippedSparseGradients, written by exports before SparseGradients,
	// names the variables whose gradient is sparse (an Embedding's rows)
	// where the optimizer clips gradients: several processes sum it as a
	// dense tensor before the clipping, where Keras clips its rows before
	// they are summed.
	ClippedSparseGradients []string `json:"clipped_sparse_gradients,omitempty"`
	// SparseGradients names the variables whose gradient is sparse (an
	// Embedding's rows), in the order of Gradients, where the export has
	// RoleComputeSparseGradients and RoleApplySparseGradients (an earlier
	// export has ClippedSparseGradients at most).
	SparseGradients []string `json:"sparse_gradients,omitempty"`
	// SparseGradientIndexes are SparseGradients' places in Gradients,
	// where two variables may share a name (an earlier export has names
	// only).
	SparseGradientIndexes []int `json:"sparse_gradient_indexes,omitempty"`
	// LossScaleFactor is Keras 3's loss_scale_factor, a loss scale the
	// same every step: the gradients come out that many times their size
	// until the update divides it out. 0: none, or a LossScaleOptimizer's,
	// which changes (tf-keras's gradients come out unscaled).
	LossScaleFactor float64 `json:"loss_scale_factor,omitempty"`
	// StatefulRandomOps names the train step's random ops that keep their
	// generator's state in the op itself (tf.nn.dropout, tf-keras's Dropout),
	// not in a variable: another traced copy of the step (train_steps'
	// loop), another session (the single-threaded executor) or a resumed
	// job draws another sequence than fit's one step per call.
	StatefulRandomOps []string `json:"stateful_random_ops,omitempty"`
	// Callbacks are the Keras callbacks given to sagefit.export, in order.
	Callbacks []CallbackSpec `json:"callbacks,omitempty"`
	// SampleWeights are the weighted steps' weight feeds after the
	// targets: one sample_weight, or for a model with several outputs one
	// sample_weight_<output> per output. Empty in exports that predate
	// them (one sample_weight).
	SampleWeights []TensorSpec `json:"sample_weights,omitempty"`
	// SampleWeightsRefused says why the steps of a model compiled with
	// Keras's own step take no sample weights (a loss of one value per
	// pixel or time step, which Keras weighs by weights of that shape, not
	// one per row); empty otherwise.
	SampleWeightsRefused string `json:"sample_weights_refused,omitempty"`
	// TestStepRefused says why the model has no test step: its test step
	// could not be traced (Keras's own, for a model compiled without a
	// loss whose train_step computes its own), so it trains as fit does
	// without validation data and a job that validates is refused; empty
	// otherwise.
	TestStepRefused string `json:"test_step_refused,omitempty"`
	// JITCompile says the step functions were exported XLA-compiled
	// (jit_compile=True); the graph carries it, so nothing reads it but
	// `sagefit inspect`.
	JITCompile bool `json:"jit_compile,omitempty"`

	// Unknown names the top-level keys this sagefit does not read (an
	// export by a newer Python package), for a warning: not dropped in
	// silence.
	Unknown []string `json:"-"`
}

// knownRoles are the signature roles this runtime runs.
var knownRoles = []string{
	RoleServing, RoleTrainStep, RoleComputeGradients, RoleApplyGradients, RoleTestStep,
	RoleResetMetrics, RoleMetricResults, RoleMetricState, RoleAssignMetricState,
	RoleReadVariables, RoleAssignVariables, RoleGetLearningRate, RoleSetLearningRate,
	RoleTrainStepWeighted, RoleComputeGradientsWeighted, RoleTestStepWeighted,
	RoleTrainSteps, RoleApplyComputeGradients, RoleFinalizeVariables, RoleSetLossShare,
	RoleComputeSparseGradients, RoleApplySparseGradients,
}

// metadataKeys are the top-level keys Metadata reads.
var metadataKeys = func() []string {
	var keys []string
	t := reflect.TypeFor[Metadata]()
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			keys = append(keys, name)
		}
	}
	return keys
}()

// SparseRowSizes is, per variable of SparseGradients, the elements of one
// of its rows; DenseGradientSize is the elements of the other gradients,
// which compute_sparse_gradients fuses.
func (m *Metadata) SparseRowSizes() (rows []int, dense int) {
	dense = m.GradientSize
	for i, g := range m.Gradients {
		if m.sparseAt(i) {
			n := elems(g.Shape)
			rows = append(rows, int(n/g.Shape[0]))
			dense -= int(n)
		}
	}
	return rows, dense
}

// AmbiguousSparse names a sparse gradient that an earlier export (names
// only) lists fewer times than gradients share its name: which of them are
// rows it does not say.
func (m *Metadata) AmbiguousSparse() string {
	if m.SparseGradientIndexes != nil {
		return ""
	}
	for _, name := range m.SparseGradients {
		listed, have := 0, 0
		for _, n := range m.SparseGradients {
			if n == name {
				listed++
			}
		}
		for _, g := range m.Gradients {
			if g.Name == name {
				have++
			}
		}
		if listed < have {
			return name
		}
	}
	return ""
}

// sparseAt says whether gradient i is sparse: by its place, or in an
// earlier export by its name.
func (m *Metadata) sparseAt(i int) bool {
	if m.SparseGradientIndexes != nil {
		return slices.Contains(m.SparseGradientIndexes, i)
	}
	return slices.Contains(m.SparseGradients, m.Gradients[i].Name)
}

// WeightSpecs are the weighted steps' weight feeds (see SampleWeights).
func (m *Metadata) WeightSpecs() []TensorSpec {
	if len(m.SampleWeights) > 0 {
		return m.SampleWeights
	}
	return []TensorSpec{{Name: SampleWeight, Key: SampleWeight, DType: "float32", Shape: []*int64{nil}}}
}

// PerOutputWeights are the names of the per-output weight tensors
// (sample_weight_<output>), or nil for a model that takes one weight.
func (m *Metadata) PerOutputWeights() []string {
	var out []string
	for _, w := range m.WeightSpecs() {
		if w.Name != SampleWeight {
			out = append(out, w.Name)
		}
	}
	return out
}

// CallbackSpec is one Keras callback: its class and the arguments that
// change what it does (runtime/callbacks reads them).
type CallbackSpec struct {
	Class  string          `json:"class"`
	Config json.RawMessage `json:"config"`
}

// Averaged lists the indices (in Variables) of the variables that hosts
// average.
func (m *Metadata) Averaged() []int {
	var out []int
	for i, v := range m.Variables {
		if v.Aggregation == AggregationMean {
			out = append(out, i)
		}
	}
	return out
}

// ErrNotTrainingModel marks a SavedModel without the sagefit contract.
var ErrNotTrainingModel = errors.New("not a sagefit training SavedModel")

// ReadMetadata reads and checks the contract file of the SavedModel in dir.
func ReadMetadata(dir string) (*Metadata, error) {
	if fi, err := os.Stat(filepath.Join(dir, "saved_model.pb")); err != nil {
		return nil, fmt.Errorf("%s has no saved_model.pb: it is not a SavedModel directory", dir)
	} else if !fi.Mode().IsRegular() || fi.Size() == 0 {
		return nil, fmt.Errorf("%s: saved_model.pb is empty or not a file; export the model again", dir)
	}
	path := filepath.Join(dir, ExtraDir, MetadataFile)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s is %w: %s/%s is missing; export the compiled Keras model with sagefit.export(model, dir)", dir, ErrNotTrainingModel, ExtraDir, MetadataFile)
	}
	if err != nil {
		return nil, err
	}
	var m Metadata
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%s is not valid JSON: %v", path, err)
	}
	if err := json.Unmarshal(raw, &top); err == nil {
		for _, key := range slices.Sorted(maps.Keys(top)) {
			if !slices.Contains(metadataKeys, key) {
				m.Unknown = append(m.Unknown, key)
			}
		}
	}
	for _, role := range slices.Sorted(maps.Keys(m.Signatures)) {
		if !slices.Contains(knownRoles, role) {
			// A step a newer exporter adds (as finalize_variables was)
			// that this runtime would not run.
			m.Unknown = append(m.Unknown, "signatures."+role)
		}
	}
	if m.Format != Format {
		return nil, fmt.Errorf("%s is %w: %s has format %q, want %q", dir, ErrNotTrainingModel, MetadataFile, m.Format, Format)
	}
	if m.ContractVersion < MinContractVersion || m.ContractVersion > ContractVersion {
		return nil, fmt.Errorf("%s uses training contract version %d but this sagefit reads versions %d to %d; export it again with the matching sagefit Python package", dir, m.ContractVersion, MinContractVersion, ContractVersion)
	}
	var missing []string
	for _, role := range requiredRoles {
		if m.Signatures[role] == "" {
			missing = append(missing, role)
		}
	}
	for _, role := range stepRoles {
		if role == RoleTestStep && m.TestStepRefused != "" {
			continue
		}
		if m.Signatures[role] == "" && m.Signatures[Weighted(role)] == "" {
			missing = append(missing, role)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s is %w: its metadata names no signature for %s", dir, ErrNotTrainingModel, strings.Join(missing, ", "))
	}
	if len(m.Inputs) == 0 { // a model compiled without a loss has no targets (fit(x))
		return nil, fmt.Errorf("%s: the contract lists no inputs", dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "variables", "variables.index")); err != nil {
		// TensorFlow loads such a model without a word and fails at the
		// first step: "Could not find variable ...".
		return nil, fmt.Errorf("%s has no variables/variables.index: the SavedModel's variables are missing; copy the whole folder sagefit.export wrote", dir)
	}
	if err := m.consistent(); err != nil {
		return nil, fmt.Errorf("%s: %s does not hold together (%v): it was changed after sagefit.export wrote it; export the model again", dir, MetadataFile, err)
	}
	for _, t := range append(append([]TensorSpec{}, m.Inputs...), m.Targets...) {
		if _, ok := t.ExampleShape(); !ok {
			return nil, fmt.Errorf("%s: tensor %q has shape %s with unknown dimensions beyond the batch; sagefit needs a fixed shape per example", dir, t.Name, t.ShapeString())
		}
		if _, err := ParseDType(t.DType); err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %v", dir, t.Name, err)
		}
	}
	return &m, nil
}

// consistent checks what the exporter always writes together: the
// gradient's size is its variables' elements, variables and metrics are
// listed, and each variable has a known dtype, kind and shape.
func (m *Metadata) consistent() error {
	if len(m.Variables) == 0 || len(m.Metrics) == 0 || len(m.Gradients) == 0 {
		return errors.New("it lists no variables, metrics or gradients")
	}
	if m.MetricStateSize < 0 {
		return fmt.Errorf("metric_state_size %d", m.MetricStateSize)
	}
	size := int64(0)
	for _, v := range m.Gradients {
		size += elems(v.Shape)
	}
	if size != int64(m.GradientSize) {
		return fmt.Errorf("gradient_size %d, where its gradients have %d elements", m.GradientSize, size)
	}
	if m.SparseGradientIndexes != nil && len(m.SparseGradientIndexes) != len(m.SparseGradients) {
		return fmt.Errorf("sparse_gradient_indexes has %d places for %d sparse_gradients", len(m.SparseGradientIndexes), len(m.SparseGradients))
	}
	for k, name := range m.SparseGradients {
		i := slices.IndexFunc(m.Gradients, func(g VariableSpec) bool { return g.Name == name })
		if m.SparseGradientIndexes != nil {
			i = m.SparseGradientIndexes[k]
			if k > 0 && i <= m.SparseGradientIndexes[k-1] {
				return fmt.Errorf("sparse_gradient_indexes %v are not in the gradients' order", m.SparseGradientIndexes)
			}
		}
		if i < 0 || i >= len(m.Gradients) || m.Gradients[i].Name != name || len(m.Gradients[i].Shape) == 0 || m.Gradients[i].Shape[0] <= 0 {
			return fmt.Errorf("sparse gradient %q is not a gradient of rows", name)
		}
	}
	if m.LossScaleFactor < 0 || math.IsInf(m.LossScaleFactor, 0) || math.IsNaN(m.LossScaleFactor) {
		return fmt.Errorf("loss_scale_factor %v", m.LossScaleFactor)
	}
	for _, v := range append(append([]VariableSpec{}, m.Variables...), m.Gradients...) {
		if _, err := ParseDType(v.DType); err != nil {
			return fmt.Errorf("variable %q: %v", v.Name, err)
		}
		if !slices.Contains([]string{"", KindModel, KindOptimizer, KindStep}, v.Kind) {
			return fmt.Errorf("variable %q of kind %q", v.Name, v.Kind)
		}
		if elems(v.Shape) < 0 {
			return fmt.Errorf("variable %q of shape %v", v.Name, v.Shape)
		}
	}
	return nil
}

// elems is the element count of a shape, or -1 for a negative dimension.
func elems(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return -1
		}
		n *= d
	}
	return n
}

// RoleTensors is what one role's signature is fed and returns, in the
// order a session feeds and fetches them.
type RoleTensors struct {
	Role    string
	Feeds   []TensorSpec
	Fetches []string // output keys
}

// Roles lists every role of the contract with its tensors; a session checks
// the graph's signatures against it and builds its calls from it.
func (m *Metadata) Roles() []RoleTensors {
	step := append(append([]TensorSpec{}, m.Inputs...), m.Targets...)
	var varKeys []string
	var varFeeds []TensorSpec
	for _, v := range m.Variables {
		varKeys = append(varKeys, v.Key)
		varFeeds = append(varFeeds, TensorSpec{Name: v.Name, Key: v.Key, DType: v.DType})
	}
	scalar := func(key, dtype string) []TensorSpec { return []TensorSpec{{Name: key, Key: key, DType: dtype}} }
	roles := []RoleTensors{
		{RoleServing, m.Inputs, m.Outputs},
		{RoleApplyGradients, scalar(keyGradients, "float32"), []string{keyIterations}},
		{RoleResetMetrics, nil, []string{keyOK}},
		{RoleMetricResults, nil, m.Metrics},
		{RoleMetricState, nil, []string{keyState}},
		{RoleAssignMetricState, scalar(keyState, "float64"), []string{keyOK}},
		{RoleReadVariables, nil, varKeys},
		{RoleAssignVariables, varFeeds, []string{keyOK}},
		{RoleGetLearningRate, nil, []string{keyLearningRate}},
	}
	train, test := m.StepLogs(RoleTrainStep), m.StepLogs(RoleTestStep)
	for _, r := range []RoleTensors{
		{RoleTrainStep, step, train},
		{RoleComputeGradients, step, append([]string{keyGradients}, train...)},
		{RoleTestStep, step, test},
	} {
		if m.Signatures[r.Role] != "" {
			roles = append(roles, r)
		}
	}
	weightedStep := step
	if m.HasSampleWeights() {
		weightedStep = append(append([]TensorSpec{}, step...), m.WeightSpecs()...)
	}
	if m.Signatures[RoleTrainSteps] != "" {
		roles = append(roles, RoleTensors{RoleTrainSteps, weightedStep, m.Metrics})
	}
	if m.Signatures[RoleApplyComputeGradients] != "" {
		feeds := append(scalar(keyGradients, "float32"), weightedStep...)
		roles = append(roles, RoleTensors{RoleApplyComputeGradients, feeds, append([]string{keyGradients}, train...)})
	}
	if m.Signatures[RoleFinalizeVariables] != "" {
		roles = append(roles, RoleTensors{RoleFinalizeVariables, nil, []string{keyOK}})
	}
	if m.LearningRateAssignable {
		roles = append(roles, RoleTensors{RoleSetLearningRate, scalar(keyLearningRate, "float32"), []string{keyLearningRate}})
	}
	if m.Signatures[RoleComputeSparseGradients] != "" {
		fetches := append([]string{keyGradients, keySparseIdx, keySparseValues, keySparseCounts}, train...)
		roles = append(roles,
			RoleTensors{RoleComputeSparseGradients, weightedStep, fetches},
			RoleTensors{RoleApplySparseGradients, []TensorSpec{
				{Name: keyGradients, Key: keyGradients, DType: "float32"},
				{Name: keySparseIdx, Key: keySparseIdx, DType: "int64"},
				{Name: keySparseValues, Key: keySparseValues, DType: "float32"},
				{Name: keySparseCounts, Key: keySparseCounts, DType: "int64"},
			}, []string{keyIterations}})
	}
	if m.Signatures[RoleSetLossShare] != "" {
		roles = append(roles, RoleTensors{RoleSetLossShare, scalar(keyLossShare, "float32"), []string{keyLossShare}})
	}
	if m.HasSampleWeights() {
		weighted := append(append([]TensorSpec{}, step...), m.WeightSpecs()...)
		roles = append(roles,
			RoleTensors{RoleTrainStepWeighted, weighted, train},
			RoleTensors{RoleComputeGradientsWeighted, weighted, append([]string{keyGradients}, train...)})
		if m.Signatures[RoleTestStepWeighted] != "" { // none where TestStepRefused
			roles = append(roles, RoleTensors{RoleTestStepWeighted, weighted, test})
		}
	}
	return roles
}

// DescribedTensor is a signature's tensor whose dtype and shape the
// metadata fixes.
type DescribedTensor struct {
	Role, Key string
	Input     bool   // a feed of the signature, else a fetch
	What      string // how a person names it
	DType     DType
	Shape     []int64
}

// Described lists the signatures' tensors whose dtype and shape the
// metadata fixes (the variables, the metric state, the gradient), for a
// loader to check against the graph: a hand-edited file lying about them
// loaded, then failed at a checkpoint or a resume, or only on several hosts.
func (m *Metadata) Described() []DescribedTensor {
	var out []DescribedTensor
	for _, v := range m.Variables {
		d, _ := ParseDType(v.DType) // consistent checked it
		out = append(out, DescribedTensor{Role: RoleReadVariables, Key: v.Key, What: fmt.Sprintf("variable %q", v.Name), DType: d, Shape: v.Shape})
	}
	return append(out,
		DescribedTensor{Role: RoleMetricState, Key: keyState, What: "the metric state (metric_state_size)", DType: Float64, Shape: []int64{int64(m.MetricStateSize)}},
		DescribedTensor{Role: RoleApplyGradients, Key: keyGradients, Input: true, What: "the gradient (gradient_size)", DType: Float32, Shape: []int64{int64(m.GradientSize)}})
}

// StepLogs are the logs a signature of role returns: TestLogs for the test
// steps, TrainLogs for the steps of one train step, Metrics where those are
// not set and for every other role.
func (m *Metadata) StepLogs(role string) []string {
	var logs []string
	switch role {
	case RoleTrainStep, RoleTrainStepWeighted, RoleComputeGradients, RoleComputeGradientsWeighted, RoleApplyComputeGradients, RoleComputeSparseGradients:
		logs = m.TrainLogs
	case RoleTestStep, RoleTestStepWeighted:
		logs = m.TestLogs
	}
	if logs == nil { // also every other role's: metric_results, train_steps (only where the logs are the metrics)
		return m.Metrics
	}
	return logs
}

// ShapeString writes the shape as Python does, "(None, 10)".
func (t TensorSpec) ShapeString() string {
	parts := make([]string, len(t.Shape))
	for i, d := range t.Shape {
		if d == nil {
			parts[i] = "None"
		} else {
			parts[i] = fmt.Sprint(*d)
		}
	}
	return "(" + strings.Join(parts, ", ") + ")"
}
