package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Metric is one named value of an epoch's logs, such as loss or val_accuracy.
type Metric struct {
	Name  string
	Value float64
}

// SortMetrics returns logs sorted by name: the order in which Keras 3
// prints them and keeps them in History.history (accuracy, loss,
// val_accuracy, val_loss).
func SortMetrics(logs []Metric) []Metric {
	sorted := slices.Clone(logs)
	slices.SortStableFunc(sorted, func(a, b Metric) int { return strings.Compare(a.Name, b.Name) })
	return sorted
}

// History is what Keras's History.history holds: for each metric, its value
// at the end of every epoch, metrics in the order they first appeared. The
// zero History is empty and ready to use.
type History struct {
	names  []string
	values map[string][]float64
}

// Append adds one epoch's logs. Like Keras, a metric seen for the first
// time starts its own list, so a metric that is not logged every epoch
// (validation every few epochs) has a shorter list. Names in one call are
// expected to be distinct, as keys of Keras's logs are.
func (h *History) Append(logs []Metric) {
	if h.values == nil {
		h.values = map[string][]float64{}
	}
	for _, m := range logs {
		if _, ok := h.values[m.Name]; !ok {
			h.names = append(h.names, m.Name)
		}
		h.values[m.Name] = append(h.values[m.Name], m.Value)
	}
}

// Names returns the metric names in the order they first appeared.
func (h *History) Names() []string { return slices.Clone(h.names) }

// Values returns the values of one metric, one for each epoch that logged
// it; nil for a metric the history does not have.
func (h *History) Values(name string) []float64 { return slices.Clone(h.values[name]) }

// Epochs is the length of the longest list: the number of epochs recorded.
func (h *History) Epochs() int {
	n := 0
	for _, v := range h.values {
		n = max(n, len(v))
	}
	return n
}

// MarshalJSON writes {"loss": [...], "accuracy": [...], ...} with the keys
// in order. JSON has no NaN or infinity: such values are written as null.
func (h *History) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("{")
	for i, name := range h.names {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("\n  ")
		key, err := json.Marshal(name)
		if err != nil {
			return nil, err
		}
		b.Write(key)
		b.WriteString(": [")
		for j, v := range h.values[name] {
			if j > 0 {
				b.WriteString(", ")
			}
			if math.IsNaN(v) || math.IsInf(v, 0) {
				b.WriteString("null")
				continue
			}
			num, err := json.Marshal(v)
			if err != nil {
				return nil, err
			}
			b.Write(num)
		}
		b.WriteString("]")
	}
	if len(h.names) > 0 {
		b.WriteString("\n")
	}
	b.WriteString("}")
	return b.Bytes(), nil
}

// UnmarshalJSON reads what MarshalJSON writes, or Keras's history as
// json.dump writes it, keeping the order of the keys. null reads as NaN.
func (h *History) UnmarshalJSON(data []byte) error {
	err := h.unmarshal(data)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("the JSON ends before the history does")
	}
	return err
}

func (h *History) unmarshal(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return fmt.Errorf("a history is a JSON object of metric names to lists of numbers")
	}
	var out History
	out.values = map[string][]float64{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		name := tok.(string) // object keys are strings
		if _, dup := out.values[name]; dup {
			return fmt.Errorf("metric %q appears twice", name)
		}
		var list []*float64
		if err := dec.Decode(&list); err != nil {
			return fmt.Errorf("metric %q: %w", name, err)
		}
		values := make([]float64, len(list))
		for i, v := range list {
			values[i] = math.NaN()
			if v != nil {
				values[i] = *v
			}
		}
		out.names = append(out.names, name)
		out.values[name] = values
	}
	if _, err := dec.Token(); err != nil {
		return err
	}
	*h = out
	return nil
}

// WriteJSON writes the history to path as JSON (see MarshalJSON). It
// replaces the file in one step, so a reader never sees half a history.
func (h *History) WriteJSON(path string) error {
	data, err := h.MarshalJSON()
	if err != nil {
		return fmt.Errorf("write history %s: %w", path, err)
	}
	if err := writeFileAtomic(path, append(data, '\n')); err != nil {
		return fmt.Errorf("write history %s: %w", path, err)
	}
	return nil
}

// ReadHistoryJSON reads a history that WriteJSON (or Keras's
// json.dump(history.history, f)) wrote, to resume training.
func ReadHistoryJSON(path string) (*History, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	h := new(History)
	if err := h.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("read history %s: %w", path, err)
	}
	return h, nil
}

// writeFileAtomic writes data to a new file beside path and renames it over
// path.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}
