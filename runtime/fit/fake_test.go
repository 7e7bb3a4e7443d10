package fit_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/sagefit/sagefit/model"
)

// linear is a pure-Go stand-in for a loaded training SavedModel: a linear
// regression y = x·w + b with a mean squared error, plain SGD, and one
// metric, "loss", kept as Keras keeps it (a sum of per-batch losses weighted
// by rows, and a row count). Its gradients are deterministic, so the loop's
// arithmetic across ranks can be checked against one process.
type linear struct {
	meta *model.Metadata
	lr   float64

	mu         sync.Mutex
	w          []float32 // features weights, then the bias
	moving     []float32 // moving mean of x, as BatchNormalization keeps one (averaged over hosts)
	iterations int64
	lossSum    float64 // metric state
	rows       float64

	// alsoLogs names a second metric the model logs, always 7 (a metric
	// of an output named "val": "val_loss").
	alsoLogs string

	// Counters and hooks for the tests.
	steps      int               // train steps that saw rows (TrainStep or ComputeGradients)
	onStep     func(step int)    // called after each such step, with steps
	failStep   int               // the step that fails (0: none)
	testRows   int               // rows seen by TestStep
	onTest     func(rows int)    // called after each TestStep, with testRows
	nanAt      int               // the train step (steps, 1-based) whose logs say the loss is NaN (0: none)
	firstX     []float32         // x[0] of the first row of each train step's batch
	applied    func(g []float32) // sees every applied gradient
	blocks     int               // TrainSteps calls of more than one step
	blockSizes map[int]int       // TrainSteps calls by their steps
	fused      bool              // apply and compute in one call (FusedApplier)
	fusedCalls int               // ApplyThenComputeGradients calls
	// What a train call costs, slept: callCost per TrainStep or TrainSteps
	// call, blockStepCost more per step of a TrainSteps call of several.
	callCost, blockStepCost time.Duration
	// slowRead is slept by the slowReadAt-th ReadVariables (1-based): on
	// rank 0, the 3rd is the first checkpoint's, after the weights'
	// broadcast and the state's average; a checkpoint slow to write.
	slowRead   time.Duration
	slowReadAt int
	reads      int
}

const features = 3

func spec(name, key string, shape ...int64) model.TensorSpec {
	dims := []*int64{nil}
	for i := range shape {
		dims = append(dims, &shape[i])
	}
	return model.TensorSpec{Name: name, Key: key, DType: "float32", Shape: dims}
}

func newLinear() *linear {
	meta := &model.Metadata{
		Inputs:          []model.TensorSpec{spec("x", "x", features)},
		Targets:         []model.TensorSpec{spec("y", "target_y", 1)},
		Metrics:         []string{"loss"},
		GradientSize:    features + 1,
		MetricStateSize: 2,
		Fingerprint:     "linear-fake",
		Variables: []model.VariableSpec{
			{Name: "w", Shape: []int64{features + 1}, DType: "float32", Trainable: true},
			{Name: "moving_mean", Shape: []int64{features}, DType: "float32", Aggregation: model.AggregationMean},
			{Name: "iterations", DType: "int64"},
			{Name: "learning_rate", DType: "float32", Kind: "optimizer"},
		},
	}
	m := &linear{meta: meta, lr: float64(float32(0.05)), w: make([]float32, features+1), moving: make([]float32, features)}
	for i := range m.w {
		m.w[i] = 0.1 * float32(i+1) // the same start on every rank
	}
	return m
}

func (m *linear) Meta() *model.Metadata { return m.meta }

func f32s(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// gradient is the mean gradient of the batch's squared error, and its
// mean loss, both accumulated in float64 in row order.
func (m *linear) gradient(b model.Batch) (grad []float64, loss float64) {
	x, y := f32s(b.Tensors["x"]), f32s(b.Tensors["y"])
	grad = make([]float64, features+1)
	for r := range b.Rows {
		pred := float64(m.w[features])
		for k := range features {
			pred += float64(x[r*features+k]) * float64(m.w[k])
		}
		d := pred - float64(y[r])
		loss += d * d
		for k := range features {
			grad[k] += 2 * d * float64(x[r*features+k])
		}
		grad[features] += 2 * d
	}
	n := float64(b.Rows)
	for k := range grad {
		grad[k] /= n
	}
	return grad, loss / n
}

func (m *linear) step(b model.Batch) ([]float64, error) {
	m.steps++
	if b.Rows > 0 {
		m.firstX = append(m.firstX, f32s(b.Tensors["x"][:4])[0])
	}
	if m.failStep > 0 && m.steps == m.failStep {
		return nil, errors.New("the fake model failed on purpose")
	}
	grad, loss := m.gradient(b)
	m.lossSum += loss * float64(b.Rows)
	m.rows += float64(b.Rows)
	x := f32s(b.Tensors["x"])
	for k := range features {
		var mean float64
		for r := range b.Rows {
			mean += float64(x[r*features+k])
		}
		m.moving[k] = 0.9*m.moving[k] + 0.1*float32(mean/float64(b.Rows))
	}
	if m.onStep != nil {
		m.onStep(m.steps)
	}
	return grad, nil
}

func (m *linear) results() []model.Metric {
	out := []model.Metric{{Name: "loss", Value: m.lossSum / max(m.rows, 1)}}
	if m.alsoLogs != "" {
		out = append(out, model.Metric{Name: m.alsoLogs, Value: 7})
	}
	return out
}

func (m *linear) TrainStep(b model.Batch) ([]model.Metric, error) {
	time.Sleep(m.callCost)
	return m.trainStep(b)
}

func (m *linear) trainStep(b model.Batch) ([]model.Metric, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	grad, err := m.step(b)
	if err != nil {
		return nil, err
	}
	g := make([]float32, len(grad))
	for i := range grad {
		g[i] = float32(grad[i])
	}
	m.apply(g)
	if m.nanAt > 0 && m.steps == m.nanAt {
		return []model.Metric{{Name: "loss", Value: math.NaN()}}, nil
	}
	return m.results(), nil
}

func (m *linear) ComputeGradients(b model.Batch, grads []float32) ([]model.Metric, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(grads) != m.meta.GradientSize {
		return nil, fmt.Errorf("gradient buffer has %d elements, want %d", len(grads), m.meta.GradientSize)
	}
	grad, err := m.step(b)
	if err != nil {
		return nil, err
	}
	for i := range grad {
		grads[i] = float32(grad[i])
	}
	return m.results(), nil
}

func (m *linear) ApplyGradients(grads []float32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.apply(grads)
	return nil
}

// FusedApply: linear applies and computes in one call when fused is set,
// as an export with apply_compute_gradients does.
func (m *linear) FusedApply() bool { return m.fused }

func (m *linear) ApplyThenComputeGradients(grads []float32, b model.Batch) ([]model.Metric, error) {
	m.fusedCalls++
	if err := m.ApplyGradients(grads); err != nil {
		return nil, err
	}
	return m.ComputeGradients(b, grads)
}

func (m *linear) apply(g []float32) {
	if m.applied != nil {
		m.applied(g)
	}
	for i := range m.w {
		m.w[i] -= float32(m.lr) * g[i]
	}
	m.iterations++
}

func (m *linear) TestStep(b model.Batch) ([]model.Metric, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, loss := m.gradient(b)
	m.lossSum += loss * float64(b.Rows)
	m.rows += float64(b.Rows)
	m.testRows += b.Rows
	if m.onTest != nil {
		m.onTest(m.testRows)
	}
	return m.results(), nil
}

func (m *linear) ResetMetrics() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lossSum, m.rows = 0, 0
	return nil
}

func (m *linear) MetricResults() ([]model.Metric, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.results(), nil
}

func (m *linear) MetricState() ([]float64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return []float64{m.lossSum, m.rows}, nil
}

func (m *linear) AssignMetricState(state []float64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(state) != 2 {
		return fmt.Errorf("metric state has %d values, want 2", len(state))
	}
	m.lossSum, m.rows = state[0], state[1]
	return nil
}

func (m *linear) ReadVariablesInto([]model.Variable) ([]model.Variable, error) {
	return m.ReadVariables()
}

func (m *linear) ReadVariables() ([]model.Variable, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.reads++; m.reads == m.slowReadAt {
		time.Sleep(m.slowRead)
	}
	w := make([]byte, 4*len(m.w))
	for i, v := range m.w {
		binary.LittleEndian.PutUint32(w[4*i:], math.Float32bits(v))
	}
	it := binary.LittleEndian.AppendUint64(nil, uint64(m.iterations))
	mv := append([]byte(nil), model.Float32Bytes(m.moving)...)
	lr := append([]byte(nil), model.Float32Bytes([]float32{float32(m.lr)})...)
	return []model.Variable{
		{Spec: m.meta.Variables[0], Tensor: model.Tensor{DType: model.Float32, Shape: []int64{int64(len(m.w))}, Data: w}},
		{Spec: m.meta.Variables[1], Tensor: model.Tensor{DType: model.Float32, Shape: []int64{features}, Data: mv}},
		{Spec: m.meta.Variables[2], Tensor: model.Tensor{DType: model.Int64, Data: it}},
		{Spec: m.meta.Variables[3], Tensor: model.Tensor{DType: model.Float32, Data: lr}},
	}, nil
}

func (m *linear) AssignVariables(vars []model.Variable) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(vars) != 4 || len(vars[0].Data) != 4*len(m.w) || len(vars[1].Data) != 4*features || len(vars[2].Data) != 8 || len(vars[3].Data) != 4 {
		return errors.New("variables do not fit the fake model")
	}
	m.lr = float64(f32s(vars[3].Data)[0])
	copy(m.w, f32s(vars[0].Data))
	copy(m.moving, f32s(vars[1].Data))
	m.iterations = int64(binary.LittleEndian.Uint64(vars[2].Data))
	return nil
}

func (m *linear) movingMean() []float32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]float32(nil), m.moving...)
}

func (m *linear) LearningRate() (float64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return float64(float32(m.lr)), nil
}

func (m *linear) SetLearningRate(lr float64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lr = float64(float32(lr))
	return nil
}

func (m *linear) weights() []float32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]float32(nil), m.w...)
}

// multiLinear runs linear's steps several per call (fit.MultiStepper), as
// the train_steps signature does: the stacked batch split into its steps.
type multiLinear struct{ *linear }

func (m *multiLinear) MultiStep() bool { return true }

func (m *multiLinear) TrainSteps(b model.Batch, steps int) ([]model.Metric, error) {
	if m.blockSizes == nil {
		m.blockSizes = map[int]int{}
	}
	m.blockSizes[steps]++
	if steps > 1 {
		m.blocks++
		time.Sleep(m.blockStepCost * time.Duration(steps))
	}
	time.Sleep(m.callCost)
	rows := b.Rows / steps
	var logs []model.Metric
	for s := range steps {
		one := model.Batch{Rows: rows, Tensors: map[string][]byte{}}
		for name, t := range b.Tensors {
			per := len(t) / steps
			one.Tensors[name] = t[s*per : (s+1)*per]
		}
		var err error
		if logs, err = m.trainStep(one); err != nil {
			return nil, err
		}
	}
	return logs, nil
}

// inlineLinear is linear with a choice of where its calls run
// (fit.Inliner): a train step sleeps poolCost in the pool, inlineCost in
// the calling thread.
type inlineLinear struct {
	*linear
	poolCost, inlineCost time.Duration
	inline               bool
	sets                 int // SetInline calls
	// swapAt, when set, swaps the two costs from that call on (calls
	// counts the calls that slept).
	swapAt, calls int
}

func (m *inlineLinear) SetInline(on bool) { m.inline, m.sets = on, m.sets+1 }

func (m *inlineLinear) TrainStep(b model.Batch) ([]model.Metric, error) {
	m.sleep()
	return m.trainStep(b)
}

// ComputeGradients is linear's, after the same sleep (several processes).
func (m *inlineLinear) ComputeGradients(b model.Batch, grads []float32) ([]model.Metric, error) {
	m.sleep()
	return m.linear.ComputeGradients(b, grads)
}

// ApplyThenComputeGradients is linear's, after the same sleep.
func (m *inlineLinear) ApplyThenComputeGradients(grads []float32, b model.Batch) ([]model.Metric, error) {
	m.sleep()
	return m.linear.ApplyThenComputeGradients(grads, b)
}

func (m *inlineLinear) sleep() {
	if m.calls++; m.swapAt > 0 && m.calls == m.swapAt {
		m.poolCost, m.inlineCost = m.inlineCost, m.poolCost
	}
	cost := m.poolCost
	if m.inline {
		cost = m.inlineCost
	}
	time.Sleep(cost)
}

// movingLinear is inlineLinear that can move to TensorFlow's
// single-threaded executor (fit.SingleThreader); once moved, its calls do
// not sleep.
type movingLinear struct {
	*inlineLinear
	xla   bool  // CannotRunSingleThreaded says so
	stay  error // the move fails with this
	moves int   // MoveSingleThreaded calls
}

func (m *movingLinear) CannotRunSingleThreaded() string {
	if m.xla {
		return "the model's steps are XLA-compiled"
	}
	return ""
}

func (m *movingLinear) MoveSingleThreaded(first func() error) (error, error) {
	m.moves++
	if m.stay != nil {
		return m.stay, first()
	}
	m.poolCost, m.inlineCost = 0, 0
	return nil, first()
}
