package callbacks

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/sagefit/sagefit/model"
)

// Model is what the callbacks need of the model: its weights (to keep and
// restore the best ones) and its learning rate.
type Model interface {
	ReadVariables() ([]model.Variable, error)
	AssignVariables(vars []model.Variable) error
	LearningRate() (float64, error)
	SetLearningRate(lr float64) error
}

// Options say where callbacks write and who writes.
type Options struct {
	OutputDataDir  string    // CSVLogger's files
	TensorBoardDir string    // TensorBoard's event files (train/, validation/)
	Writer         bool      // this process writes files (rank 0 of the job)
	Host           string    // names the event files, as TensorFlow does
	Log            io.Writer // notes and warnings
	// Taken are the files sagefit itself writes in OutputDataDir, which a
	// CSVLogger must not overwrite.
	Taken []string
	// TFKeras: the model is tf-keras's (Keras 2), whose callbacks differ
	// here and there from Keras 3's (ModelCheckpoint skips an epoch
	// without its monitor, where Keras 3 saves it).
	TFKeras bool
	// JobTensorBoard: the job asks for TensorBoard's event files
	// (SageMaker's TensorBoardOutputConfig). Where the export has no
	// TensorBoard callback, one is added that writes each epoch's metrics,
	// as TensorBoard(update_freq="epoch") does; it keeps no state in
	// checkpoints, so a checkpoint resumes with the config given or not.
	JobTensorBoard bool
	// Schedule: the optimizer's learning rate is a schedule's (or a
	// function's), which tf-keras's TensorBoard writes and Keras 3's too.
	Schedule bool
}

// Logs are an epoch's (or a batch's) metrics in Keras's order; callbacks
// may add to them (ReduceLROnPlateau adds "learning_rate", as Keras does).
type Logs []model.Metric

// Get returns the value of name.
func (l Logs) Get(name string) (float64, bool) {
	i := slices.IndexFunc(l, func(m model.Metric) bool { return m.Name == name })
	if i < 0 {
		return 0, false
	}
	return l[i].Value, true
}

func (l *Logs) set(name string, v float64) {
	if i := slices.IndexFunc(*l, func(m model.Metric) bool { return m.Name == name }); i >= 0 {
		(*l)[i].Value = v
		return
	}
	*l = append(*l, model.Metric{Name: name, Value: v})
}

func (l Logs) names() []string {
	out := make([]string, len(l))
	for i, m := range l {
		out[i] = m.Name
	}
	return out
}

// callback is one Keras callback. Epochs are 0-based, as Keras counts them.
type callback interface {
	trainBegin() error
	// epochEnd may add to logs and asks training to stop by returning true.
	epochEnd(epoch int, logs *Logs, m Model) (stop bool, err error)
	trainEnd(m Model) error
	// state and restore carry the callback's counters through a checkpoint.
	state() any
	restore(raw json.RawMessage) error
}

// batchWatcher is a callback that looks at every train batch.
type batchWatcher interface {
	// batchEnd sees this process's running metrics after global batch
	// step (1-based); true ends training after this batch.
	batchEnd(step int, logs Logs) (stop bool, err error)
}

// batchRecorder is a batch watcher that records every n-th global batch
// (TensorBoard's update_freq n; 0: none): a block of steps must end there
// for its record to be that batch's, as with one step per call.
type batchRecorder interface {
	batchEvery() int
}

// testWatcher is a callback that looks at the end of each validation.
type testWatcher interface {
	testEnd(logs Logs, batches, iterations int) error
}

// Set runs the callbacks of a model's contract in the order they were
// given, as Keras's CallbackList does.
type Set struct {
	list []callback
	// exported is how many of list the export gave, whose state
	// checkpoints carry; the rest are the job's own (JobTensorBoard).
	exported int
	// kept are the weights each callback that keeps some for the end
	// keeps (EarlyStopping's restore_best_weights, ModelCheckpoint's best
	// model), in the callbacks' order: a copy each, as each Keras
	// callback holds its own.
	kept []*bestWeights
	said io.Writer // the job's notes, from the process that writes files; nil on the others
}

// KeepsWeights says whether a callback keeps weights for the end
// (EarlyStopping's restore_best_weights, ModelCheckpoint's best model); the
// same on every process.
func (s *Set) KeepsWeights() bool { return len(s.kept) > 0 }

// keeper gives a callback its own copy of kept weights.
func (s *Set) keeper() *bestWeights {
	b := &bestWeights{}
	s.kept = append(s.kept, b)
	return b
}

// New builds the callbacks of specs. A callback sagefit cannot run, or an
// argument it cannot honour, is an error; an argument that does not apply
// (a file path sagefit chooses) is named in a note on o.Log.
func New(specs []model.CallbackSpec, o Options) (*Set, error) {
	s := &Set{}
	// Keras's verbose lines, once for the job: from the writing process.
	var said io.Writer
	if o.Writer {
		said = o.Log
	}
	s.said = said
	for _, spec := range specs {
		var cb callback
		var err error
		switch spec.Class {
		case "EarlyStopping":
			cb, err = newEarlyStopping(spec.Config, s, said)
		case "ReduceLROnPlateau":
			cb, err = newReduceLR(spec.Config, said, o.TFKeras)
		case "TerminateOnNaN":
			cb, err = newTerminateOnNaN(spec.Config, o.Log)
		case "CSVLogger":
			cb, err = newCSVLogger(spec.Config, o)
			o.Taken = append(o.Taken, csvName(spec.Config)) // two loggers of one file would interleave their rows
		case "ModelCheckpoint":
			cb, err = newModelCheckpoint(spec.Config, o, s, said)
		case "TensorBoard":
			cb, err = newTensorBoard(spec.Config, o)
		default:
			err = errors.New("sagefit does not run it; export the model again with the callbacks sagefit runs (see the README)")
		}
		if err != nil {
			return nil, fmt.Errorf("callback %s: %w", spec.Class, err)
		}
		if m, ok := cb.(interface{ setLog(io.Writer) }); ok && o.Writer {
			m.setLog(o.Log) // named once per job, by the process that writes its files
		}
		s.list = append(s.list, cb)
	}
	s.exported = len(s.list)
	if o.TFKeras {
		reduced := false // a ReduceLROnPlateau before it has put its float32 "lr" in the logs
		for _, cb := range s.list {
			if _, ok := cb.(*reduceLR); ok {
				reduced = true
			} else if c, ok := cb.(*csvLogger); ok {
				c.lr32 = reduced // else a metric of that name: a Python float
			}
		}
	}
	if o.JobTensorBoard && !slices.ContainsFunc(specs, func(s model.CallbackSpec) bool { return s.Class == "TensorBoard" }) {
		cb, err := newTensorBoard(json.RawMessage(`{"update_freq": "epoch"}`), o)
		if err != nil {
			return nil, fmt.Errorf("callback TensorBoard: %w", err)
		}
		s.list = append(s.list, cb)
		if said != nil {
			fmt.Fprintf(said, "sagefit: note: the job has a TensorBoardOutputConfig and the model no TensorBoard callback: each epoch's metrics are written as TensorBoard scalars to %s, for SageMaker to upload\n", o.TensorBoardDir)
		}
	}
	var checkpoints []string
	for _, cb := range s.list {
		if c, ok := cb.(*modelCheckpoint); ok {
			checkpoints = append(checkpoints, c.Name)
		}
	}
	if len(checkpoints) > 1 && said != nil {
		fmt.Fprintf(said, "sagefit: warning: %d ModelCheckpoint(save_best_only=True) callbacks (monitoring %s): the model dir holds one model, the best of the last one's monitor (%s); the others' best models are not written\n",
			len(checkpoints), strings.Join(checkpoints, ", "), checkpoints[len(checkpoints)-1])
	}
	return s, nil
}

// Empty reports whether there are no callbacks.
func (s *Set) Empty() bool { return s == nil || len(s.list) == 0 }

// TrainBegin runs at the start of training (also of a resumed one).
func (s *Set) TrainBegin() error {
	for _, cb := range s.list {
		if err := cb.trainBegin(); err != nil {
			return err
		}
	}
	return nil
}

// WatchesBatches reports whether any callback looks at train batches.
func (s *Set) WatchesBatches() bool {
	for _, cb := range s.list {
		if _, ok := cb.(batchWatcher); ok {
			return true
		}
	}
	return false
}

// WatchesEveryBatch reports whether a callback looks at every batch's end
// wherever a call ends (TerminateOnNaN), not only at batches it records.
func (s *Set) WatchesEveryBatch() bool {
	for _, cb := range s.list {
		if _, ok := cb.(batchWatcher); ok {
			if _, records := cb.(batchRecorder); !records {
				return true
			}
		}
	}
	return false
}

// StepsToRecord is how many train steps after global step done the next
// batch a callback records comes (0: none records batches): a block of
// steps ends there at the latest.
func (s *Set) StepsToRecord(done int) int {
	next := 0
	for _, cb := range s.list {
		if r, ok := cb.(batchRecorder); ok {
			if n := r.batchEvery(); n > 0 {
				d := n - done%n
				if next == 0 || d < next {
					next = d
				}
			}
		}
	}
	return next
}

// BatchEnd runs after global train batch step (1-based) with this process's
// running metrics; true asks training to end after this batch.
func (s *Set) BatchEnd(step int, logs Logs) (bool, error) {
	stop := false
	for _, cb := range s.list {
		if w, ok := cb.(batchWatcher); ok {
			st, err := w.batchEnd(step, logs)
			if err != nil {
				return false, err
			}
			stop = stop || st
		}
	}
	return stop, nil
}

// TestEnd runs after a validation of batches batches, with its metrics
// (names without "val_") and the train steps run so far.
func (s *Set) TestEnd(logs Logs, batches, iterations int) error {
	for _, cb := range s.list {
		if w, ok := cb.(testWatcher); ok {
			if err := w.testEnd(logs, batches, iterations); err != nil {
				return err
			}
		}
	}
	return nil
}

// EpochEnd runs at the end of epoch (0-based) with the epoch's logs (every
// process's data, so every process decides alike); true ends training.
func (s *Set) EpochEnd(epoch int, logs *Logs, m Model) (bool, error) {
	stop := false
	for _, cb := range s.list {
		st, err := cb.epochEnd(epoch, logs, m)
		if err != nil {
			return false, err
		}
		stop = stop || st
	}
	return stop, nil
}

// TrainEnd runs once training is over, before the model is saved: in the
// callbacks' order, but ModelCheckpoint's last, since its best model is the
// one written to the model dir (Keras's is its file, whatever the model
// holds after fit).
func (s *Set) TrainEnd(m Model) error {
	for _, last := range []bool{false, true} {
		for _, cb := range s.list {
			if _, ok := cb.(*modelCheckpoint); ok != last {
				continue
			}
			if err := cb.trainEnd(m); err != nil {
				return err
			}
		}
	}
	return nil
}

// State is every callback's counters and the kept weights, for a
// checkpoint.
type State struct {
	Callbacks []json.RawMessage `json:"callbacks"`
	// Kept says whose kept weights travel beside the checkpoint's
	// variables, one copy after another: indexes of the callbacks that
	// keep weights, in order. Absent in a checkpoint of a sagefit that
	// kept one copy for all.
	Kept []int `json:"kept,omitempty"`
}

// Snapshot returns the callbacks' state and the bytes of kept weights (nil
// when none).
func (s *Set) Snapshot() (State, []byte, error) {
	var st State
	for _, cb := range s.list[:s.exported] {
		raw, err := json.Marshal(cb.state())
		if err != nil {
			return st, nil, err
		}
		st.Callbacks = append(st.Callbacks, raw)
	}
	var best []byte
	for i, k := range s.kept {
		if k.vars != nil {
			st.Kept = append(st.Kept, i)
			for _, v := range k.vars {
				best = append(best, v.Data...)
			}
		}
	}
	return st, best, nil
}

// Restore puts back what Snapshot returned; m gives the shapes of the kept
// weights.
func (s *Set) Restore(st State, best []byte, m Model) error {
	if len(st.Callbacks) != s.exported {
		return fmt.Errorf("the checkpoint holds the state of %d callbacks and the model was exported with %d: it is another export's checkpoint, of the same layers but other callbacks; give this job a checkpoint location of its own, or empty this one to start afresh", len(st.Callbacks), s.exported)
	}
	for i, cb := range s.list[:s.exported] {
		if err := cb.restore(st.Callbacks[i]); err != nil {
			return fmt.Errorf("callback state: %w", err)
		}
	}
	if len(best) == 0 || len(s.kept) == 0 {
		return nil
	}
	like, err := m.ReadVariables()
	if err != nil {
		return err
	}
	if st.Kept == nil { // one copy of every variable, every callback's
		if len(s.kept) > 1 && s.said != nil {
			fmt.Fprintf(s.said, "sagefit: warning: the checkpoint, of an older sagefit, holds one copy of kept weights for the %d callbacks that keep some (EarlyStopping's restore_best_weights, ModelCheckpoint's best model): each restores that copy, the last one kept before the checkpoint, whichever callback kept it\n", len(s.kept))
		}
		for _, k := range s.kept {
			vars, err := model.SplitVariables(slices.Clone(like), best) // SplitVariables fills the slice it is given
			if err != nil {
				return fmt.Errorf("kept weights: %w", err)
			}
			k.vars = k.own(vars)
		}
		return nil
	}
	// A runtime that did not know NotWeight kept a random layer's seed
	// state in EarlyStopping's copy: where the bytes are that layout's,
	// they are read so, and the seed state dropped.
	total := func(older bool) int {
		n := 0
		for _, i := range st.Kept {
			if i >= 0 && i < len(s.kept) {
				for _, v := range s.kept[i].ownAs(slices.Clone(like), older) {
					n += len(v.Data)
				}
			}
		}
		return n
	}
	older := total(false) != len(best) && total(true) == len(best)
	for _, i := range st.Kept { // the copies one after another, each of what its callback keeps
		if i < 0 || i >= len(s.kept) {
			return fmt.Errorf("kept weights of callback %d of %d that keep some", i, len(s.kept))
		}
		k := s.kept[i]
		shape := k.ownAs(slices.Clone(like), older)
		size := 0
		for _, v := range shape {
			size += len(v.Data)
		}
		if size > len(best) {
			return errors.New("kept weights: fewer bytes than the copies need")
		}
		if k.vars, err = model.SplitVariables(shape, best[:size]); err != nil {
			return fmt.Errorf("kept weights: %w", err)
		}
		if older {
			k.vars = k.own(k.vars) // the seed state read, then dropped
		}
		best = best[size:]
	}
	if len(best) != 0 {
		return errors.New("kept weights: more bytes than the copies need")
	}
	return nil
}

// bestWeights are weights a callback keeps for the end of training: every
// variable (ModelCheckpoint's best model, a saved model in Keras), or with
// modelOnly the model's own (EarlyStopping restores only those, as Keras's
// set_weights does), the others held as no bytes.
type bestWeights struct {
	vars      []model.Variable
	modelOnly bool
}

// own is vars as b keeps them: with modelOnly, no bytes but the model's
// weights.
func (b *bestWeights) own(vars []model.Variable) []model.Variable { return b.ownAs(vars, false) }

// ownAs is own, or with older as a runtime that did not know NotWeight
// kept them: every model variable.
func (b *bestWeights) ownAs(vars []model.Variable, older bool) []model.Variable {
	if b.modelOnly {
		for i := range vars {
			if !isModelWeight(vars[i]) && !(older && isModelVariable(vars[i])) {
				vars[i].Data = nil
			}
		}
	}
	return vars
}

// isModelWeight: the model's own weights, as Keras's get_weights lists
// them (not a random layer's seed state); "" is an export that named no
// kinds.
func isModelWeight(v model.Variable) bool { return isModelVariable(v) && !v.Spec.NotWeight }

// isModelVariable: the model's own variables, weights or not.
func isModelVariable(v model.Variable) bool {
	return v.Spec.Kind == model.KindModel || v.Spec.Kind == ""
}

func (b *bestWeights) keep(m Model) error {
	vars, err := m.ReadVariables()
	if err != nil {
		return err
	}
	vars = b.own(vars)
	for i := range vars { // ReadVariables' buffers are ours; copy anyway so later reads never alias
		vars[i].Data = slices.Clone(vars[i].Data)
	}
	b.vars = vars
	return nil
}

// restoreModelWeights gives the model the kept weights of its own, as
// Keras's set_weights does, and leaves the optimizer's state and a custom
// step's own as training left them (ModelCheckpoint's best model, a saved
// model in Keras, restores them all).
func (b *bestWeights) restoreModelWeights(m Model) error {
	vars, err := m.ReadVariables()
	if err != nil {
		return err
	}
	if len(vars) != len(b.vars) {
		return fmt.Errorf("kept %d variables, the model has %d", len(b.vars), len(vars))
	}
	for i, v := range b.vars {
		if isModelWeight(v) {
			vars[i] = v
		}
	}
	return m.AssignVariables(vars)
}

// monitor decides improvements of a monitored metric as Keras's
// MonitorCallback does: current + min_delta < best in "min" mode,
// current - min_delta > best in "max" mode; no best yet is an improvement.
// Keras compares with keras.ops on Python floats, that is in float32 after
// the subtraction in float64; so does this.
type monitor struct {
	Name     string    `json:"monitor"`
	Mode     string    `json:"mode"`
	MinDelta float64   `json:"min_delta"`
	log      io.Writer // where a missing metric is named; nil: not named (a process that writes no files)
	// keepsUnmonitored: a Keras 3 ModelCheckpoint, which saves the model
	// of an epoch without its monitor (tf-keras's skips it).
	keepsUnmonitored bool
}

func (m *monitor) setLog(w io.Writer) { m.log = w }

func (m monitor) check() error {
	if m.Name == "" {
		return errors.New("no monitor")
	}
	if m.Mode != "min" && m.Mode != "max" {
		return fmt.Errorf("mode %q is neither min nor max", m.Mode)
	}
	return nil
}

func (m monitor) improves(current float64, best *float64) bool {
	if best == nil {
		return true
	}
	if m.Mode == "min" {
		return float32(current+m.MinDelta) < float32(*best)
	}
	return float32(current-m.MinDelta) > float32(*best)
}

// value reads the monitored metric; a missing one is named once in a
// warning, as Keras warns.
func (m monitor) value(logs Logs, who string, warned *bool) (float64, bool) {
	v, ok := logs.Get(m.Name)
	if !ok && !*warned && m.log != nil {
		then := "such epochs are skipped, as in Keras"
		if m.keepsUnmonitored {
			then = "as Keras saves the model of such an epoch (\"Can save best model only with " + m.Name + " available.\"), it is kept for the model dir, in place of any EarlyStopping's restored weights"
		}
		fmt.Fprintf(m.log, "sagefit: warning: %s watches %q, which the epoch logs do not have (they have %v); %s\n", who, m.Name, logs.names(), then)
		*warned = true
	}
	return v, ok
}

func isNaNOrInf(v float64) bool { return math.IsNaN(v) || math.IsInf(v, 0) }
