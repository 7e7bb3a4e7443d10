package tf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"

	corepb "github.com/galeone/tensorflow/tensorflow/go/core/protobuf/for_core_protos_go_proto"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/sagefit/sagefit/internal/hostlist"
	"github.com/sagefit/sagefit/model"
)

// Config is the TensorFlow session configuration (model.SessionConfig:
// plain Go, so a job's settings carry it without linking libtensorflow).
type Config = model.SessionConfig

// singleThreadedExecutor is TensorFlow's executor that runs a graph's ops
// one after another in the calling thread, in an order fixed when the
// graph is prepared (ConfigProto.experimental.executor_type), with less
// bookkeeping per op than the default executor. It does not run the
// low-level control flow that in-graph loops are lowered to, nor graphs
// split over devices.
const singleThreadedExecutor = "SINGLE_THREADED_EXECUTOR"

// configProto serializes c; executor is TensorFlow's executor type ("" for
// the default).
func configProto(c Config, executor string) ([]byte, error) {
	cp := &corepb.ConfigProto{
		IntraOpParallelismThreads: int32(c.IntraOpThreads),
		InterOpParallelismThreads: int32(c.InterOpThreads),
		AllowSoftPlacement:        c.SoftPlacement,
		LogDevicePlacement:        c.LogPlacement,
		GpuOptions: &corepb.GPUOptions{
			AllowGrowth:       c.GPUMemoryGrowth,
			VisibleDeviceList: c.VisibleGPUs,
		},
		GraphOptions: &corepb.GraphOptions{RewriteOptions: &corepb.RewriterConfig{}},
	}
	if executor != "" {
		cp.Experimental = &corepb.ConfigProto_Experimental{ExecutorType: executor}
	}
	if c.NoGPUs {
		cp.DeviceCount = map[string]int32{"GPU": 0}
	}
	// Grappler's MLIR hook (TFG) runs, in this TensorFlow, a pipeline that
	// only sorts the graph and prepares its attributes for export: no
	// rewrite, yet it converts the whole graph to MLIR and back each time
	// the session prepares a new set of feeds and fetches (the restore at
	// load, each signature's first run): a sixth of MobileNetV2's load.
	// Off, as RewriterConfig.disable_tfg_optimizer (field 32, newer than
	// the Go protos we build with).
	cp.GraphOptions.RewriteOptions.ProtoReflect().SetUnknown(
		protowire.AppendVarint(protowire.AppendTag(nil, disableTFGOptimizerField, protowire.VarintType), 1))
	return proto.Marshal(cp)
}

// initOpSignature is the SignatureDef (and its output) that names a TF2
// SavedModel's init op.
const initOpSignature = "__saved_model_init_op"

// disableTFGOptimizerField is RewriterConfig.disable_tfg_optimizer's field
// number in tensorflow/core/protobuf/rewriter_config.proto.
const disableTFGOptimizerField = 32

// call is one signature resolved against the graph: what to feed, in order,
// and what to fetch, in order.
type call struct {
	name       string
	feeds      []endpoint
	feedPlans  []feedPlan
	fetches    []endpoint
	fetchNames []string
	// constVals are the captured constants fed at every run
	// (capturedConsts); withConsts is feeds, then their endpoints.
	constVals  []hostTensor
	withConsts []endpoint
}

// inputs is what a run of c feeds, and where: the batch's tensors, then
// the captured constants.
func (c *call) inputs(feeds []hostTensor) ([]endpoint, []hostTensor) {
	if len(c.constVals) == 0 {
		return c.feeds, feeds
	}
	return c.withConsts, append(feeds, c.constVals...)
}

// maxCapturedFeed is the largest captured constant a call feeds at every
// run; larger ones stay constants (a copy per step would cost more than
// the last bit is worth).
const maxCapturedFeed = 1 << 20

// Model is a loaded training SavedModel.
type Model struct {
	dir   string
	meta  *model.Metadata
	sess  *session
	calls map[string]*call
	saver *corepb.SaverDef
	// initOp and assets are what loading ran after the saver's restore:
	// the SavedModel's init op (may be empty) and its asset files, by the
	// tensor fed each file's path.
	initOp string
	assets map[string]string
	// cfg is the session configuration the model was loaded with.
	cfg Config
	// xla: some of the graph's functions are XLA-compiled (Keras's
	// jit_compile).
	xla bool
	// singleThreaded is set once the model runs on TensorFlow's
	// single-threaded executor (MoveSingleThreaded).
	singleThreaded bool
	// lossShare is what SetLossShare set (0: never set, the export's 1),
	// set again in a session the model moves to.
	lossShare float32
	// outputWeights are the per-output sample weights' names
	// (Metadata.PerOutputWeights), read once.
	outputWeights []string
	// sparseRowSizes are the elements of a row of each sparse gradient
	// (Metadata.SparseRowSizes), read once.
	sparseRowSizes []int
	// onesBuf holds the weights fed to a weighted-only step for a batch
	// without weights.
	onesBuf []byte
}

// damaged says whether TensorFlow's load error reads as a SavedModel
// whose files are cut short or mixed up (its words name the bytes, not
// the file or what to do).
func damaged(err error) bool {
	for _, words := range []string{"Read less bytes", "bad magic number", "not an sstable", "expected dtype", "Data loss", "Can't parse", "Could not parse", "Unable to parse"} {
		if strings.Contains(err.Error(), words) {
			return true
		}
	}
	return false
}

// Load loads the training SavedModel in dir and checks it against the
// contract; the error names whatever is missing.
func Load(dir string, cfg Config) (*Model, error) {
	meta, err := model.ReadMetadata(dir)
	if err != nil {
		return nil, err
	}
	config, err := configProto(cfg, "")
	if err != nil {
		return nil, fmt.Errorf("session config: %w", err)
	}
	sess, metaGraph, err := loadSession(dir, config)
	if err != nil && damaged(err) {
		return nil, fmt.Errorf("load SavedModel %s with libtensorflow %s: %w; its files look cut short or mixed up (an interrupted copy or upload?): copy or export it again", dir, tfVersion(), err)
	}
	if err != nil {
		return nil, fmt.Errorf("load SavedModel %s with libtensorflow %s: %w", dir, tfVersion(), err)
	}
	m := &Model{dir: dir, meta: meta, sess: sess, calls: map[string]*call{}, outputWeights: meta.PerOutputWeights(), cfg: cfg}
	m.sparseRowSizes, _ = meta.SparseRowSizes()
	if err := m.prepare(metaGraph); err != nil {
		sess.close()
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return m, nil
}

func (m *Model) prepare(metaGraph []byte) error {
	var mg corepb.MetaGraphDef
	if err := proto.Unmarshal(metaGraph, &mg); err != nil {
		return fmt.Errorf("read MetaGraphDef: %w", err)
	}
	sigs := map[string]signature{}
	for name, sd := range mg.GetSignatureDef() {
		sigs[name] = newSignature(sd)
	}
	if err := checkSignatures(m.meta, sigs); err != nil {
		return err
	}
	if init, ok := sigs[initOpSignature]; ok {
		m.initOp, _, _ = strings.Cut(init.outputs[initOpSignature], ":")
	}
	m.assets = map[string]string{}
	for _, a := range mg.GetAssetFileDef() {
		m.assets[a.GetTensorInfo().GetName()] = a.GetFilename()
	}
	for _, f := range mg.GetGraphDef().GetLibrary().GetFunction() {
		m.xla = m.xla || f.GetAttr()["_XlaMustCompile"].GetB()
	}
	m.saver = mg.GetSaverDef()
	if m.saver.GetFilenameTensorName() == "" || m.saver.GetSaveTensorName() == "" {
		return errors.New("the MetaGraphDef has no saver_def, so trained variables could not be saved")
	}

	for _, p := range m.meta.Roles() {
		name := m.meta.Signatures[p.Role]
		sig := sigs[name]
		c := &call{name: name, fetchNames: p.Fetches}
		for _, f := range p.Feeds {
			c.feedPlans = append(c.feedPlans, planFeed(f))
		}
		for _, f := range p.Feeds {
			e, err := m.sess.resolve(sig.inputs[f.Key])
			if err != nil {
				return fmt.Errorf("signature %s input %s: %w", name, f.Key, err)
			}
			c.feeds = append(c.feeds, e)
		}
		for _, k := range p.Fetches {
			e, err := m.sess.resolve(sig.outputs[k])
			if err != nil {
				return fmt.Errorf("signature %s output %s: %w", name, k, err)
			}
			c.fetches = append(c.fetches, e)
		}
		if err := m.feedCaptured(c); err != nil {
			return fmt.Errorf("signature %s: %w", name, err)
		}
		m.calls[p.Role] = c
	}
	return nil
}

// feedCaptured makes c feed its function's captured constants at every
// run, as fit's function takes them (capturedConsts), reading their values
// once.
func (m *Model) feedCaptured(c *call) error {
	consts := m.sess.capturedConsts(c.fetches)
	if len(consts) == 0 {
		return nil
	}
	vals, err := m.sess.run(nil, nil, consts, nil)
	if err != nil {
		return fmt.Errorf("read captured constants: %w", err)
	}
	c.withConsts = slices.Clone(c.feeds)
	for i, v := range vals {
		if len(v.data) <= maxCapturedFeed {
			c.withConsts, c.constVals = append(c.withConsts, consts[i]), append(c.constVals, hostTensor(v))
		}
	}
	return nil
}

// Meta is the contract metadata.
func (m *Model) Meta() *model.Metadata { return m.meta }

// Dir is the directory the model was loaded from.
func (m *Model) Dir() string { return m.dir }

// Close releases the session. It is safe to call twice.
func (m *Model) Close() error { return m.sess.close() }

// feedPlan is what feeding one input needs from its spec, worked out once
// when the model loads instead of at every step.
type feedPlan struct {
	name     string
	dtype    model.DType
	dtypeErr error
	example  []int64 // one example's shape (nil when a dim is unknown)
	elems    int64   // elements of one example
	weight   bool    // a sample weight (the shared one or an output's)
	shared   bool    // the shared sample weight itself
}

func planFeed(spec model.TensorSpec) feedPlan {
	dt, err := model.ParseDType(spec.DType)
	ex, _ := spec.ExampleShape()
	return feedPlan{
		name:     spec.Name,
		dtype:    dt,
		dtypeErr: err,
		example:  ex,
		elems:    spec.ExampleElems(),
		weight:   model.IsSampleWeight(spec.Name),
		shared:   spec.Name == model.SampleWeight,
	}
}

// batchFeeds turns a batch into input tensors in the feeds' order. With
// steps > 1 (train_steps) the batch's rows are steps equal batches
// stacked: every tensor is fed as [steps, rows/steps, ...]. A weight the
// batch lacks (a step exported in its weighted form only) is fed as ones.
func (m *Model) batchFeeds(plans []feedPlan, b model.Batch, steps int) ([]hostTensor, error) {
	lead := []int64{int64(b.Rows)}
	if steps > 1 {
		if b.Rows%steps != 0 {
			return nil, fmt.Errorf("%d rows do not stack into %d equal steps", b.Rows, steps)
		}
		lead = []int64{int64(steps), int64(b.Rows / steps)}
	}
	feeds := make([]hostTensor, len(plans))
	rank := 0
	for i := range plans {
		rank += len(lead) + len(plans[i].example)
	}
	shapes := make([]int64, 0, rank) // every feed's shape, one after another
	for i := range plans {
		p := &plans[i]
		data, ok := b.Tensors[p.name]
		if !ok && p.weight && !p.shared {
			data, ok = b.Tensors[model.SampleWeight] // one weight for every output
		}
		if !ok && p.weight {
			data, ok = m.ones(b.Rows*int(p.elems)), true // one per row, or per element of a loss per element
		}
		if !ok {
			return nil, fmt.Errorf("batch has no data for %q", p.name)
		}
		if p.dtypeErr != nil {
			return nil, p.dtypeErr
		}
		start := len(shapes)
		shapes = append(append(shapes, lead...), p.example...)
		shape := shapes[start:len(shapes):len(shapes)]
		if want := int64(b.Rows) * p.elems * int64(p.dtype.Size()); p.dtype != model.String && int64(len(data)) != want {
			return nil, fmt.Errorf("%q: batch of %d rows has %d bytes, want %d (%s, example shape %v)", p.name, b.Rows, len(data), want, p.dtype, p.example)
		}
		feeds[i] = hostTensor{dtype: p.dtype, shape: shape, data: data}
	}
	return feeds, nil
}

// ones is n float32 ones, the weights of a batch that has none.
func (m *Model) ones(n int) []byte {
	if len(m.onesBuf) < 4*n {
		m.onesBuf = model.Float32Bytes(slices.Repeat([]float32{1}, n))
	}
	return m.onesBuf[:4*n]
}

func (m *Model) run(role string, feeds []hostTensor, into [][]byte) ([]result, error) {
	c := m.calls[role]
	if c == nil {
		return nil, fmt.Errorf("the model has no %s signature", role)
	}
	ends, feeds := c.inputs(feeds)
	res, err := m.sess.run(ends, feeds, c.fetches, into)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	return res, nil
}

func scalar(r result) (float64, error) {
	switch {
	case r.dtype == model.Float32 && len(r.data) == 4:
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(r.data))), nil
	case r.dtype == model.Float64 && len(r.data) == 8:
		return math.Float64frombits(binary.LittleEndian.Uint64(r.data)), nil
	case r.dtype == model.Int64 && len(r.data) == 8:
		return float64(int64(binary.LittleEndian.Uint64(r.data))), nil
	}
	return 0, fmt.Errorf("expected a scalar, got %s %v", r.dtype, r.shape)
}

// metrics names the values of res, a role's logs (model.Metadata.StepLogs).
func (m *Model) metrics(role string, res []result) ([]model.Metric, error) {
	names := m.meta.StepLogs(role)
	out := make([]model.Metric, len(names))
	for i, name := range names {
		v, err := scalar(res[i])
		if err != nil {
			return nil, fmt.Errorf("metric %s: %w", name, err)
		}
		out[i] = model.Metric{Name: name, Value: v}
	}
	return out, nil
}

// roleFor is the step role for a batch: the weighted one when the batch
// carries sample weights.
func (m *Model) roleFor(role string, b model.Batch) (string, error) {
	weighted := b.Tensors[model.SampleWeight] != nil
	for _, name := range m.outputWeights {
		weighted = weighted || b.Tensors[name] != nil
	}
	if !weighted {
		if m.calls[role] == nil && m.calls[model.Weighted(role)] != nil {
			return model.Weighted(role), nil // exported weighted only: weights of one
		}
		return role, nil
	}
	if !m.meta.HasSampleWeights() {
		return "", fmt.Errorf("the batch has sample weights but the model was exported without weighted steps; export it again with this sagefit")
	}
	return model.Weighted(role), nil
}

func (m *Model) stepCall(role string, b model.Batch) ([]model.Metric, error) {
	role, err := m.roleFor(role, b)
	if err != nil {
		return nil, err
	}
	if m.calls[role] == nil { // a test step the export could not trace (Metadata.TestStepRefused)
		return nil, fmt.Errorf("the model was exported without a %s signature", role)
	}
	feeds, err := m.batchFeeds(m.calls[role].feedPlans, b, 1)
	if err != nil {
		return nil, err
	}
	res, err := m.run(role, feeds, nil)
	if err != nil {
		return nil, err
	}
	return m.metrics(role, res)
}

// TrainStep runs Keras's own train step on one batch (single host): forward,
// loss, optimizer update and metric update, exactly as model.fit does. It
// returns the running metrics of the epoch so far.
func (m *Model) TrainStep(b model.Batch) ([]model.Metric, error) {
	return m.stepCall(model.RoleTrainStep, b)
}

// TrainSteps runs steps train steps in one call (train_steps): b holds
// steps batches of equal rows, stacked. The result is bit for bit that of
// steps TrainStep calls, the metrics those after the last.
func (m *Model) TrainSteps(b model.Batch, steps int) ([]model.Metric, error) {
	if steps == 1 {
		return m.TrainStep(b)
	}
	if m.singleThreaded {
		// Measured: the in-graph loop, run this way, does not give the
		// numbers of single steps.
		return nil, errors.New("train_steps is not run on the single-threaded executor: one step per call")
	}
	c := m.calls[model.RoleTrainSteps]
	if c == nil {
		return nil, errors.New("the model has no train_steps signature; export it again with this sagefit")
	}
	feeds, err := m.batchFeeds(c.feedPlans, b, steps)
	if err != nil {
		return nil, err
	}
	res, err := m.run(model.RoleTrainSteps, feeds, nil)
	if err != nil {
		return nil, err
	}
	return m.metrics(model.RoleTrainSteps, res)
}

// ApplyThenComputeGradients applies grads (a fused, averaged gradient) and
// then computes b's, writing it into grads, in one call
// (apply_compute_gradients): the numbers of ApplyGradients then
// ComputeGradients.
func (m *Model) ApplyThenComputeGradients(grads []float32, b model.Batch) ([]model.Metric, error) {
	if len(grads) != m.meta.GradientSize {
		return nil, fmt.Errorf("gradient buffer has %d elements, want %d", len(grads), m.meta.GradientSize)
	}
	c := m.calls[model.RoleApplyComputeGradients]
	if c == nil {
		return nil, errors.New("the model has no apply_compute_gradients signature; export it again with this sagefit")
	}
	feeds, err := m.batchFeeds(c.feedPlans[1:], b, 1)
	if err != nil {
		return nil, err
	}
	g := hostTensor{dtype: model.Float32, shape: []int64{int64(len(grads))}, data: model.Float32Bytes(grads)}
	res, err := m.run(model.RoleApplyComputeGradients, append([]hostTensor{g}, feeds...), [][]byte{model.Float32Bytes(grads)})
	if err != nil {
		return nil, err
	}
	if len(res[0].data) != 4*len(grads) {
		return nil, fmt.Errorf("%s returned %d gradient bytes, want %d", c.name, len(res[0].data), 4*len(grads))
	}
	return m.metrics(model.RoleApplyComputeGradients, res[1:])
}

// SetInline makes every later session call run its ops in the calling
// thread (on) or hand them to TensorFlow's inter-op pool (off, the
// default). The numbers are the same either way: the same kernels run on
// the same inputs, only on other threads. What is faster depends on the
// graph: a step of many small ops (the seed MLP: 80 against 140 µs) loses
// more to waking the pool's threads than it gains from running ops side by
// side; convolutions and large updates gain from it.
func (m *Model) SetInline(on bool) { m.sess.setInline(on) }

// FusedApply reports whether the model applies and computes in one call:
// not where the step has stateful random ops, whose copy in the fused
// call would draw the masks the gradient call's copy draws too (each
// signature's op keeps its own state, from the same seed).
func (m *Model) FusedApply() bool {
	return m.calls[model.RoleApplyComputeGradients] != nil && len(m.meta.StatefulRandomOps) == 0
}

// MultiStep reports whether the model runs several steps per call.
func (m *Model) MultiStep() bool {
	return m.calls[model.RoleTrainSteps] != nil && m.meta.TrainLogs == nil // a step's own logs are the last step's: one per call
}

// TestStep runs Keras's test step (loss and metrics, no update).
func (m *Model) TestStep(b model.Batch) ([]model.Metric, error) {
	return m.stepCall(model.RoleTestStep, b)
}

// ComputeGradients runs the train step without applying the update: the
// metrics are updated, and the fused gradient of all trainable variables (in
// the contract's order) is written into grads, which must have
// Meta().GradientSize elements.
func (m *Model) ComputeGradients(b model.Batch, grads []float32) ([]model.Metric, error) {
	if len(grads) != m.meta.GradientSize {
		return nil, fmt.Errorf("gradient buffer has %d elements, want %d", len(grads), m.meta.GradientSize)
	}
	role, err := m.roleFor(model.RoleComputeGradients, b)
	if err != nil {
		return nil, err
	}
	c := m.calls[role]
	feeds, err := m.batchFeeds(c.feedPlans, b, 1)
	if err != nil {
		return nil, err
	}
	res, err := m.run(role, feeds, [][]byte{model.Float32Bytes(grads)})
	if err != nil {
		return nil, err
	}
	if len(res[0].data) != 4*len(grads) {
		return nil, fmt.Errorf("%s returned %d gradient bytes, want %d", c.name, len(res[0].data), 4*len(grads))
	}
	return m.metrics(role, res[1:])
}

// ApplyGradients applies a fused gradient with the model's optimizer.
func (m *Model) ApplyGradients(grads []float32) error {
	if len(grads) != m.meta.GradientSize {
		return fmt.Errorf("gradient buffer has %d elements, want %d", len(grads), m.meta.GradientSize)
	}
	_, err := m.run(model.RoleApplyGradients, []hostTensor{{dtype: model.Float32, shape: []int64{int64(len(grads))}, data: model.Float32Bytes(grads)}}, nil)
	return err
}

// ResetMetrics resets every metric, as model.fit does at each epoch start.
func (m *Model) ResetMetrics() error {
	_, err := m.run(model.RoleResetMetrics, nil, nil)
	return err
}

// FinalizeVariables runs the optimizer's finalize_variable_values, as fit
// does once its epochs end (use_ema: the moving averages become the
// weights); nothing for a model exported without it.
func (m *Model) FinalizeVariables() error {
	if m.calls[model.RoleFinalizeVariables] == nil {
		return nil
	}
	_, err := m.run(model.RoleFinalizeVariables, nil, nil)
	return err
}

// MetricResults returns the metrics accumulated since the last reset.
func (m *Model) MetricResults() ([]model.Metric, error) {
	res, err := m.run(model.RoleMetricResults, nil, nil)
	if err != nil {
		return nil, err
	}
	return m.metrics(model.RoleMetricResults, res)
}

// MetricState returns every metric variable, flattened to float64, so hosts
// can sum them.
func (m *Model) MetricState() ([]float64, error) {
	res, err := m.run(model.RoleMetricState, nil, nil)
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(res[0].data)/8)
	for i := range out {
		out[i] = math.Float64frombits(binary.LittleEndian.Uint64(res[0].data[8*i:]))
	}
	return out, nil
}

// AssignMetricState sets every metric variable from a MetricState vector.
func (m *Model) AssignMetricState(state []float64) error {
	if len(state) != m.meta.MetricStateSize {
		return fmt.Errorf("metric state has %d values, want %d", len(state), m.meta.MetricStateSize)
	}
	data := make([]byte, 8*len(state))
	for i, v := range state {
		binary.LittleEndian.PutUint64(data[8*i:], math.Float64bits(v))
	}
	_, err := m.run(model.RoleAssignMetricState, []hostTensor{{dtype: model.Float64, shape: []int64{int64(len(state))}, data: data}}, nil)
	return err
}

// ReadVariables returns every variable of the contract (the model's, the
// optimizer's, the train step's own), in contract order.
func (m *Model) ReadVariables() ([]model.Variable, error) {
	return m.ReadVariablesInto(nil)
}

// ReadVariablesInto is ReadVariables into the data of reuse, a slice an
// earlier call returned that the caller no longer needs (each variable's
// bytes written over where they fit).
func (m *Model) ReadVariablesInto(reuse []model.Variable) ([]model.Variable, error) {
	into := make([][]byte, len(reuse))
	for i, v := range reuse {
		into[i] = v.Data
	}
	res, err := m.run(model.RoleReadVariables, nil, into)
	if err != nil {
		return nil, err
	}
	out := make([]model.Variable, len(res))
	for i, r := range res {
		out[i] = model.Variable{Spec: m.meta.Variables[i], Tensor: model.Tensor{DType: r.dtype, Shape: r.shape, Data: r.data}}
	}
	return out, nil
}

// AssignVariables sets every variable of the contract.
func (m *Model) AssignVariables(vars []model.Variable) error {
	if len(vars) != len(m.meta.Variables) {
		return fmt.Errorf("got %d variables, the model has %d", len(vars), len(m.meta.Variables))
	}
	feeds := make([]hostTensor, len(vars))
	for i, v := range vars {
		spec := m.meta.Variables[i]
		dt, err := model.ParseDType(spec.DType)
		if err != nil {
			return err
		}
		if v.DType != dt {
			return fmt.Errorf("variable %s is %s, got %s", spec.Name, dt, v.DType)
		}
		feeds[i] = hostTensor{dtype: dt, shape: spec.Shape, data: v.Data}
	}
	_, err := m.run(model.RoleAssignVariables, feeds, nil)
	return err
}

// LearningRate is the optimizer's current learning rate.
func (m *Model) LearningRate() (float64, error) {
	res, err := m.run(model.RoleGetLearningRate, nil, nil)
	if err != nil {
		return 0, err
	}
	return scalar(res[0])
}

// SetLearningRate assigns the optimizer's learning rate; it fails for
// optimizers driven by a schedule.
func (m *Model) SetLearningRate(lr float64) error {
	if !m.meta.LearningRateAssignable {
		return errors.New("the optimizer's learning rate is a schedule and cannot be assigned")
	}
	data := make([]byte, 4)
	binary.LittleEndian.PutUint32(data, math.Float32bits(float32(lr)))
	_, err := m.run(model.RoleSetLearningRate, []hostTensor{{dtype: model.Float32, data: data}}, nil)
	return err
}

// GathersSparse says whether several processes gather the rows of the
// model's sparse gradients (model.RoleComputeSparseGradients) instead of
// summing them dense.
func (m *Model) GathersSparse() bool {
	return m.calls[model.RoleComputeSparseGradients] != nil && m.calls[model.RoleApplySparseGradients] != nil
}

// ComputeSparseGradients runs the train step without the update, writing
// the dense gradients (Metadata.SparseRowSizes' dense elements) into dense
// and returning the sparse ones' rows as the step looked them up.
func (m *Model) ComputeSparseGradients(b model.Batch, dense []float32) ([]model.Metric, model.SparseRows, error) {
	role := model.RoleComputeSparseGradients
	c := m.calls[role]
	if c == nil {
		return nil, model.SparseRows{}, errors.New("the model has no compute_sparse_gradients signature")
	}
	feeds, err := m.batchFeeds(c.feedPlans, b, 1)
	if err != nil {
		return nil, model.SparseRows{}, err
	}
	res, err := m.run(role, feeds, [][]byte{model.Float32Bytes(dense)})
	if err != nil {
		return nil, model.SparseRows{}, err
	}
	if len(res[0].data) != 4*len(dense) {
		return nil, model.SparseRows{}, fmt.Errorf("%s returned %d dense gradient bytes, want %d", c.name, len(res[0].data), 4*len(dense))
	}
	rows := model.SparseRows{Indices: int64s(res[1].data), Values: model.Tensor{DType: model.Float32, Data: res[2].data}.Float32View(), Counts: int64s(res[3].data)}
	sizes := m.sparseRowSizes
	n, values := 0, 0
	for j, k := range rows.Counts {
		if j < len(sizes) {
			n, values = n+int(k), values+int(k)*sizes[j]
		}
	}
	if len(rows.Counts) != len(sizes) || len(rows.Indices) != n || len(rows.Values) != values {
		return nil, model.SparseRows{}, fmt.Errorf("%s returned %d indices and %d values for rows %v of %d sparse gradients of row sizes %v", c.name, len(rows.Indices), len(rows.Values), rows.Counts, len(sizes), sizes)
	}
	logs, err := m.metrics(role, res[4:])
	return logs, rows, err
}

// ApplySparseGradients applies the dense gradients and the sparse ones'
// rows (every process's, gathered) with the model's optimizer.
func (m *Model) ApplySparseGradients(dense []float32, rows model.SparseRows) error {
	_, err := m.run(model.RoleApplySparseGradients, []hostTensor{
		{dtype: model.Float32, shape: []int64{int64(len(dense))}, data: model.Float32Bytes(dense)},
		{dtype: model.Int64, shape: []int64{int64(len(rows.Indices))}, data: int64Bytes(rows.Indices)},
		{dtype: model.Float32, shape: []int64{int64(len(rows.Values))}, data: model.Float32Bytes(rows.Values)},
		{dtype: model.Int64, shape: []int64{int64(len(rows.Counts))}, data: int64Bytes(rows.Counts)},
	}, nil)
	return err
}

func int64s(b []byte) []int64 {
	out := make([]int64, len(b)/8)
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return out
}

func int64Bytes(v []int64) []byte {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
	}
	return b
}

// SharesLoss says whether the model's optimizer scales the loss, so that
// several processes set each one's share of it (SetLossShare).
func (m *Model) SharesLoss() bool { return m.meta.Signatures[model.RoleSetLossShare] != "" }

// SetLossShare sets the share of the global batch's loss this process's
// backward pass runs on (model.RoleSetLossShare): its gradients come out
// that many times the gradient of its own mean loss.
func (m *Model) SetLossShare(share float32) error {
	if !m.SharesLoss() {
		return errors.New("the model's optimizer does not scale the loss: its export has no loss share")
	}
	data := binary.LittleEndian.AppendUint32(nil, math.Float32bits(share))
	if _, err := m.run(model.RoleSetLossShare, []hostTensor{{dtype: model.Float32, data: data}}, nil); err != nil {
		return err
	}
	m.lossShare = share
	return nil
}

// Predict runs serving_default on a batch of inputs and returns the outputs
// by name.
func (m *Model) Predict(b model.Batch) (map[string]model.Tensor, error) {
	c := m.calls[model.RoleServing]
	feeds, err := m.batchFeeds(c.feedPlans, b, 1)
	if err != nil {
		return nil, err
	}
	res, err := m.run(model.RoleServing, feeds, nil)
	if err != nil {
		return nil, err
	}
	out := map[string]model.Tensor{}
	for i, name := range c.fetchNames {
		out[name] = model.Tensor{DType: res[i].dtype, Shape: res[i].shape, Data: res[i].data}
	}
	return out, nil
}

// CannotRunSingleThreaded says why MoveSingleThreaded may not move the
// model, or "": not where its steps are XLA-compiled (an XLA program
// already runs as one op; steps_per_execution's in-graph loop is where it
// gains), nor where a train or test step writes a lookup table (the new
// session would start it from the saved contents: only variables are
// copied).
func (m *Model) CannotRunSingleThreaded() string {
	switch {
	case m.xla:
		return "the model's steps are XLA-compiled"
	case len(m.meta.WrittenTables) > 0:
		return fmt.Sprintf("the train or test step writes lookup table %s, which a move to another session would not carry", strings.Join(m.meta.WrittenTables, ", "))
	case len(m.meta.StatefulRandomOps) > 0:
		return fmt.Sprintf("the train step draws random numbers with TensorFlow's stateful random ops (%s), which would draw another sequence in another session", hostlist.Abbrev(m.meta.StatefulRandomOps, "ops"))
	}
	return ""
}

// MoveSingleThreaded moves the model to a new session of the same graph
// whose executor is TensorFlow's single-threaded one, with this session's
// variables and metric state, runs first (a call of the model's: a train
// step, or a gradient) there, and, when it succeeds, keeps that session for
// every later call and closes this one. Where the graph's steps are many
// small ops, their ops already run in the calling thread (SetInline), and
// the job runs one step per call, the single-threaded executor runs the
// same kernels on the same inputs in less time: measured on 2 cores, the
// seed MLP's train step 71 against 86 µs, the LSTM's 354 against 546 µs.
// Its numbers are those of the default executor, bit for bit, for a step
// or a gradient per call; not for train_steps' in-graph loop, which
// TrainSteps then refuses.
//
// stayed says why the model stayed on its session: making the new session
// failed, or first failed on it (an op that executor does not run). first
// then runs again on the model's session, untouched by the failed try, so
// it must not depend on what its failed run wrote; err is that run's.
func (m *Model) MoveSingleThreaded(first func() error) (stayed, err error) {
	if m.singleThreaded {
		return nil, first()
	}
	prev := m.sess
	if stayed = m.moveToSingleThreaded(); stayed == nil {
		if err = first(); err == nil {
			m.singleThreaded = true
			prev.close()
			return nil, nil
		}
		stayed = fmt.Errorf("its first call failed: %w", err)
		m.returnTo(prev)
	}
	return stayed, first()
}

// returnTo closes the model's session and makes prev its session again.
func (m *Model) returnTo(prev *session) {
	m.sess.close()
	m.sess = prev
}

// moveToSingleThreaded makes the model's session a new one of its graph on
// the single-threaded executor, set up as loading set up the old one (the
// saver's restore, the init op), then given the old one's variables and
// metric state. On an error the model keeps its old session, which it has
// not touched.
func (m *Model) moveToSingleThreaded() error {
	vars, err := m.ReadVariables()
	if err != nil {
		return err
	}
	state, err := m.MetricState()
	if err != nil {
		return err
	}
	config, err := configProto(m.cfg, singleThreadedExecutor)
	if err != nil {
		return err
	}
	next, err := m.sess.sibling(config)
	if err != nil {
		return fmt.Errorf("new session: %w", err)
	}
	prev := m.sess
	m.sess = next // the methods below run on it
	back := func(err error) error {
		m.returnTo(prev)
		return err
	}
	if err := m.restoreAndInit(next); err != nil {
		return back(err)
	}
	if err := m.AssignVariables(vars); err != nil {
		return back(err)
	}
	if err := m.AssignMetricState(state); err != nil {
		return back(err)
	}
	if m.lossShare != 0 { // not a variable of the contract: set again
		if err := m.SetLossShare(m.lossShare); err != nil {
			return back(err)
		}
	}
	return nil
}

// restoreAndInit runs on s what loading the SavedModel ran: the saver's
// restore from the model's variables, then its init op, each fed the
// asset files' paths.
func (m *Model) restoreAndInit(s *session) error {
	var feeds []endpoint
	var values []string
	for tensor, file := range m.assets {
		e, err := s.resolve(tensor)
		if err != nil {
			return fmt.Errorf("asset %s: %w", file, err)
		}
		feeds = append(feeds, e)
		values = append(values, filepath.Join(m.dir, "assets", file))
	}
	filename, err := s.resolve(m.saver.GetFilenameTensorName())
	if err != nil {
		return fmt.Errorf("saver filename tensor: %w", err)
	}
	restore, err := s.operation(m.saver.GetRestoreOpName())
	if err != nil {
		return fmt.Errorf("saver restore: %w", err)
	}
	prefix := filepath.Join(m.dir, "variables", "variables")
	if err := s.runStrings(append([]endpoint{filename}, feeds...), append([]string{prefix}, values...), nil, restore); err != nil {
		return fmt.Errorf("restore variables: %w", err)
	}
	if m.initOp == "" {
		return nil
	}
	init, err := s.operation(m.initOp)
	if err != nil {
		return fmt.Errorf("init op: %w", err)
	}
	if err := s.runStrings(feeds, values, nil, init); err != nil {
		return fmt.Errorf("init op: %w", err)
	}
	return nil
}
