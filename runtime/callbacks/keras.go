package callbacks

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
)

func decode(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("its configuration in the model's contract: %w", err)
	}
	return nil
}

// earlyStopping is keras.callbacks.EarlyStopping.
type earlyStopping struct {
	monitor
	Patience           int      `json:"patience"`
	Baseline           *float64 `json:"baseline"`
	RestoreBestWeights bool     `json:"restore_best_weights"`
	StartFromEpoch     int      `json:"start_from_epoch"`
	Verbose            int      `json:"verbose"`

	st struct {
		Wait        int      `json:"wait"`
		StoppedAt   int      `json:"stopped_epoch"`
		Best        *float64 `json:"best"`
		BestEpoch   int      `json:"best_epoch"`
		HaveWeights bool     `json:"have_weights"`
	}
	kept   *bestWeights
	set    *Set
	warned bool
	log    io.Writer // Keras's lines with verbose (the writing process's)
}

func newEarlyStopping(raw json.RawMessage, s *Set, log io.Writer) (*earlyStopping, error) {
	e := &earlyStopping{set: s, log: log}
	if err := decode(raw, e); err != nil {
		return nil, err
	}
	if err := e.monitor.check(); err != nil {
		return nil, err
	}
	if e.RestoreBestWeights {
		e.kept = s.keeper()
		e.kept.modelOnly = true // it restores those alone
	}
	return e, nil
}

func (e *earlyStopping) trainBegin() error { return nil }

func (e *earlyStopping) epochEnd(epoch int, logs *Logs, m Model) (bool, error) {
	current, ok := e.value(*logs, "EarlyStopping", &e.warned)
	if !ok || epoch < e.StartFromEpoch {
		return false, nil
	}
	if e.RestoreBestWeights && !e.st.HaveWeights {
		if err := e.kept.keep(m); err != nil {
			return false, err
		}
		e.st.HaveWeights, e.st.BestEpoch = true, epoch
	}
	e.st.Wait++
	if e.improves(current, e.st.Best) {
		e.st.Best, e.st.BestEpoch = &current, epoch
		if e.RestoreBestWeights {
			if err := e.kept.keep(m); err != nil {
				return false, err
			}
		}
		if e.Baseline == nil || e.improves(current, e.Baseline) {
			e.st.Wait = 0
		}
		return false, nil
	}
	if e.st.Wait >= e.Patience && epoch > 0 {
		e.st.StoppedAt = epoch
		return true, nil
	}
	return false, nil
}

func (e *earlyStopping) trainEnd(m Model) error {
	say := e.Verbose > 0 && e.log != nil
	if say && e.st.StoppedAt > 0 {
		fmt.Fprintf(e.log, "Epoch %d: early stopping\n", e.st.StoppedAt+1)
	}
	if e.RestoreBestWeights && e.st.HaveWeights && e.kept.vars != nil {
		if say {
			fmt.Fprintf(e.log, "Restoring model weights from the end of the best epoch: %d.\n", e.st.BestEpoch+1)
		}
		return e.kept.restoreModelWeights(m)
	}
	return nil
}

func (e *earlyStopping) state() any { return e.st }

func (e *earlyStopping) restore(raw json.RawMessage) error { return json.Unmarshal(raw, &e.st) }

// reduceLR is keras.callbacks.ReduceLROnPlateau.
type reduceLR struct {
	monitor
	Factor   float64 `json:"factor"`
	Patience int     `json:"patience"`
	Cooldown int     `json:"cooldown"`
	MinLR    float64 `json:"min_lr"`
	Verbose  int     `json:"verbose"`

	st struct {
		Best     *float64 `json:"best"`
		Wait     int      `json:"wait"`
		Cooldown int      `json:"cooldown_counter"`
	}
	warned  bool
	log     io.Writer // Keras's line with verbose (the writing process's)
	tfKeras bool      // tf-keras's: the rate logged as "lr", reduced in float32
}

// tfKerasLR is the key tf-keras's ReduceLROnPlateau logs the rate under.
const tfKerasLR = "lr"

func newReduceLR(raw json.RawMessage, log io.Writer, tfKeras bool) (*reduceLR, error) {
	r := &reduceLR{log: log, tfKeras: tfKeras}
	if err := decode(raw, r); err != nil {
		return nil, err
	}
	if err := r.monitor.check(); err != nil {
		return nil, err
	}
	if r.Factor >= 1 {
		return nil, fmt.Errorf("factor %v must be below 1", r.Factor)
	}
	return r, nil
}

func (r *reduceLR) trainBegin() error { return nil }

func (r *reduceLR) epochEnd(epoch int, logs *Logs, m Model) (bool, error) {
	lr, err := m.LearningRate()
	if err != nil {
		return false, err
	}
	// Keras logs the rate in force during the epoch: Keras 3 as a Python
	// float under "learning_rate", tf-keras as the variable's float32 under
	// "lr".
	key := "learning_rate"
	if r.tfKeras {
		key = tfKerasLR
	}
	logs.set(key, lr)
	current, ok := r.value(*logs, "ReduceLROnPlateau", &r.warned)
	if !ok {
		return false, nil
	}
	inCooldown := r.st.Cooldown > 0
	if inCooldown {
		r.st.Cooldown--
		r.st.Wait = 0
	}
	if r.improves(current, r.st.Best) {
		r.st.Best, r.st.Wait = &current, 0
		return false, nil
	}
	if r.st.Cooldown > 0 {
		return false, nil // still cooling down
	}
	r.st.Wait++
	if r.st.Wait < r.Patience {
		return false, nil
	}
	if lr > float64(float32(r.MinLR)) {
		newLR := max(lr*r.Factor, r.MinLR)
		said := pyRepr(newLR)
		if r.tfKeras {
			// old_lr * factor with old_lr numpy's float32: float32
			// arithmetic (0.05 * 0.1 is 0.0050000004, not float32(0.005)).
			newLR, said = float64(float32(lr)*float32(r.Factor)), pyReprBits(float64(float32(lr)*float32(r.Factor)), 32)
			if newLR < r.MinLR {
				newLR, said = r.MinLR, pyRepr(r.MinLR)
			}
		}
		if err := m.SetLearningRate(newLR); err != nil {
			return false, fmt.Errorf("ReduceLROnPlateau: %w", err)
		}
		if r.Verbose > 0 && r.log != nil {
			fmt.Fprintf(r.log, "\nEpoch %d: ReduceLROnPlateau reducing learning rate to %s.\n", epoch+1, said)
		}
		r.st.Cooldown, r.st.Wait = r.Cooldown, 0
	}
	return false, nil
}

func (r *reduceLR) trainEnd(Model) error { return nil }

func (r *reduceLR) state() any { return r.st }

func (r *reduceLR) restore(raw json.RawMessage) error { return json.Unmarshal(raw, &r.st) }

// terminateOnNaN is keras.callbacks.TerminateOnNaN.
type terminateOnNaN struct {
	RaiseError bool `json:"raise_error"`
	log        io.Writer
}

func newTerminateOnNaN(raw json.RawMessage, log io.Writer) (*terminateOnNaN, error) {
	t := &terminateOnNaN{log: log}
	return t, decode(raw, t)
}

func (t *terminateOnNaN) batchEnd(step int, logs Logs) (bool, error) {
	loss, ok := logs.Get("loss")
	if !ok || !isNaNOrInf(loss) {
		return false, nil
	}
	if t.RaiseError {
		return false, fmt.Errorf("TerminateOnNaN: the loss is %v at train step %d of the job (raise_error=True)", loss, step)
	}
	if t.log != nil { // Keras's line, but the step counted over the job from 1 (Keras's batch is the epoch's, from 0)
		fmt.Fprintf(t.log, "TerminateOnNaN: train step %d of the job: invalid loss (%v), terminating training\n", step, loss)
	}
	return true, nil
}

func (t *terminateOnNaN) trainBegin() error                        { return nil }
func (t *terminateOnNaN) epochEnd(int, *Logs, Model) (bool, error) { return false, nil }
func (t *terminateOnNaN) trainEnd(Model) error                     { return nil }
func (t *terminateOnNaN) state() any                               { return struct{}{} }
func (t *terminateOnNaN) restore(json.RawMessage) error            { return nil }

// modelCheckpoint is keras.callbacks.ModelCheckpoint(save_best_only=True):
// the best epoch's weights become the saved model.
type modelCheckpoint struct {
	monitor
	InitialValueThreshold *float64 `json:"initial_value_threshold"`
	Filepath              string   `json:"filepath"`
	SaveWeightsOnly       bool     `json:"save_weights_only"`
	Verbose               int      `json:"verbose"`

	st struct {
		Best     *float64 `json:"best"`
		HaveBest bool     `json:"have_best"`
	}
	kept   *bestWeights
	warned bool
	log    io.Writer // Keras's lines with verbose (the writing process's)
}

func newModelCheckpoint(raw json.RawMessage, o Options, s *Set, log io.Writer) (*modelCheckpoint, error) {
	c := &modelCheckpoint{log: log}
	if err := decode(raw, c); err != nil {
		return nil, err
	}
	if err := c.monitor.check(); err != nil {
		return nil, err
	}
	c.kept = s.keeper()
	c.keepsUnmonitored = !o.TFKeras
	c.st.Best = c.InitialValueThreshold
	if o.Writer && o.Log != nil {
		fmt.Fprintf(o.Log, "sagefit: note: ModelCheckpoint(save_best_only=True): the model of the epoch with the best %s is the one written to the model dir; its filepath %q%s does not apply\n",
			c.Name, c.Filepath, map[bool]string{true: " and save_weights_only", false: ""}[c.SaveWeightsOnly])
	}
	return c, nil
}

func (c *modelCheckpoint) trainBegin() error { return nil }

func (c *modelCheckpoint) epochEnd(epoch int, logs *Logs, m Model) (bool, error) {
	current, ok := c.value(*logs, "ModelCheckpoint", &c.warned)
	if !ok {
		if !c.keepsUnmonitored { // tf-keras: "Can save best model only with val_loss available, skipping."
			return false, nil
		}
		c.st.HaveBest = true // Keras 3 saves such an epoch's model, its best value unchanged
		return false, c.kept.keep(m)
	}
	// Keras's lines, but for the model it keeps: sagefit writes the best
	// epoch's model to the model dir at the end, not to filepath now.
	say := c.Verbose > 0 && c.log != nil
	best := "None"
	if c.st.Best != nil {
		best = pyFixed5(*c.st.Best)
	}
	if !c.improves(current, c.st.Best) {
		if say {
			fmt.Fprintf(c.log, "\nEpoch %d: %s did not improve from %s\n", epoch+1, c.Name, best)
		}
		return false, nil
	}
	if say {
		fmt.Fprintf(c.log, "\nEpoch %d: %s improved from %s to %s, keeping this epoch's model for the model dir\n", epoch+1, c.Name, best, pyFixed5(current))
	}
	c.st.Best, c.st.HaveBest = &current, true
	return false, c.kept.keep(m)
}

func (c *modelCheckpoint) trainEnd(m Model) error {
	if c.st.HaveBest && c.kept.vars != nil {
		return m.AssignVariables(c.kept.vars)
	}
	return nil
}

func (c *modelCheckpoint) state() any { return c.st }

func (c *modelCheckpoint) restore(raw json.RawMessage) error { return json.Unmarshal(raw, &c.st) }

// pyFixed5 is Python's f"{v:.5f}": "nan", "inf" and "-inf" where Go
// writes "NaN" and "+Inf".
func pyFixed5(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return pyRepr(v)
	}
	return fmt.Sprintf("%.5f", v)
}

// noWrite is a callback that does nothing: a file-writing callback on a
// process other than the job's writer.
type noWrite struct{}

func (noWrite) trainBegin() error                        { return nil }
func (noWrite) epochEnd(int, *Logs, Model) (bool, error) { return false, nil }
func (noWrite) trainEnd(Model) error                     { return nil }
func (noWrite) state() any                               { return struct{}{} }
func (noWrite) restore(json.RawMessage) error            { return nil }
