package callbacks

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// csvLogger is keras.callbacks.CSVLogger, writing into the job's output
// data folder (output.tar.gz): the epoch, then every log key in sorted
// order (the val_ keys added up front when the first epoch had none), one
// row per epoch, values as Python writes floats, "NA" where a key is
// missing, rows ended with "\r\n" like Python's csv module.
type csvLogger struct {
	Filename  string `json:"filename"`
	Separator string `json:"separator"`
	Append    bool   `json:"append"`

	path   string
	lr32   bool // tf-keras's ReduceLROnPlateau's "lr" is a float32, written as numpy writes one (New sets it)
	keys   []string
	header bool
	text   strings.Builder // what this job wrote to the file: carried through checkpoints
}

// csvState is what a checkpoint keeps of a CSVLogger, so that a resumed job's
// file reads as an uninterrupted one's: the columns and the text written.
type csvState struct {
	Keys []string `json:"keys,omitempty"`
	Text string   `json:"text,omitempty"`
}

// csvName is the file a CSVLogger's config names in the output data folder
// ("" when it names none).
func csvName(raw json.RawMessage) string {
	var c csvLogger
	if decode(raw, &c) != nil {
		return ""
	}
	return baseName(c.Filename)
}

func newCSVLogger(raw json.RawMessage, o Options) (callback, error) {
	c := &csvLogger{Separator: ","}
	if err := decode(raw, c); err != nil {
		return nil, err
	}
	name := baseName(c.Filename)
	if name == "." || name == "/" || name == "" {
		return nil, fmt.Errorf("filename %q names no file", c.Filename)
	}
	if slices.Contains(o.Taken, name) {
		return nil, fmt.Errorf("filename %q: %s in the job's output data folder is written by sagefit or by another CSVLogger already; give this one another file name", c.Filename, name)
	}
	if len(c.Separator) == 0 {
		return nil, errors.New("an empty separator")
	}
	if !o.Writer {
		return noWrite{}, nil
	}
	c.path = filepath.Join(o.OutputDataDir, name)
	if o.Log != nil && c.Filename != name {
		fmt.Fprintf(o.Log, "sagefit: note: CSVLogger writes %s (in output.tar.gz), not %s\n", c.path, c.Filename)
	}
	return c, nil
}

func (c *csvLogger) trainBegin() error {
	c.keys, c.header = nil, true
	c.text.Reset()
	if c.Append {
		if info, err := os.Stat(c.path); err == nil && info.Size() > 0 {
			c.header = false
			return nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(c.path), 0o755); err != nil {
		return fmt.Errorf("CSVLogger: %w", err)
	}
	if err := os.WriteFile(c.path, nil, 0o644); err != nil {
		return fmt.Errorf("CSVLogger: %w", err)
	}
	return nil
}

func (c *csvLogger) epochEnd(epoch int, logs *Logs, _ Model) (bool, error) {
	if c.keys == nil {
		c.keys = logs.names()
		slices.Sort(c.keys)
		if !slices.ContainsFunc(c.keys, func(k string) bool { return strings.HasPrefix(k, "val_") }) {
			for _, k := range slices.Clone(c.keys) {
				c.keys = append(c.keys, "val_"+k)
			}
		}
	}
	var rows strings.Builder
	if c.header {
		rows.WriteString(c.row(append([]string{"epoch"}, c.keys...)))
		c.header = false
	}
	cells := []string{strconv.Itoa(epoch)}
	for _, k := range c.keys {
		if v, ok := logs.Get(k); ok && c.lr32 && k == tfKerasLR {
			cells = append(cells, pyReprBits(v, 32))
		} else if ok {
			cells = append(cells, pyRepr(v))
		} else {
			cells = append(cells, "NA")
		}
	}
	rows.WriteString(c.row(cells))
	if err := c.write(os.O_APPEND, rows.String()); err != nil {
		return false, err
	}
	c.text.WriteString(rows.String())
	return false, nil
}

// row joins cells as Python's csv module does with the excel dialect:
// a cell holding the separator, a quote or a line break is quoted.
func (c *csvLogger) row(cells []string) string {
	out := make([]string, len(cells))
	for i, s := range cells {
		if strings.Contains(s, c.Separator) || strings.ContainsAny(s, "\"\r\n") {
			s = `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
		}
		out[i] = s
	}
	return strings.Join(out, c.Separator) + "\r\n"
}

func (c *csvLogger) trainEnd(Model) error { return nil }

func (c *csvLogger) state() any { return csvState{Keys: c.keys, Text: c.text.String()} }

// restore puts back the rows written before the checkpoint (a resumed job
// runs in a fresh container, whose output folder is empty), so the file
// ends as an uninterrupted job's. With append, a file that already ends with
// them (a local run resumed into the same output folder) is left as it is.
// Checkpoints from before this state was kept hold none: the file then
// starts with the epochs trained after the resume.
func (c *csvLogger) restore(raw json.RawMessage) error {
	var st csvState
	if err := json.Unmarshal(raw, &st); err != nil {
		return err
	}
	if st.Text == "" {
		return nil
	}
	c.keys, c.header = st.Keys, false
	c.text.Reset()
	c.text.WriteString(st.Text)
	if !c.Append {
		return c.write(os.O_TRUNC, st.Text)
	}
	had, err := os.ReadFile(c.path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("CSVLogger: %w", err)
	}
	if strings.HasSuffix(string(had), st.Text) {
		return nil
	}
	return c.write(os.O_APPEND, st.Text)
}

// write writes text to the file, truncated or appended to (flag).
func (c *csvLogger) write(flag int, text string) error {
	f, err := os.OpenFile(c.path, os.O_WRONLY|os.O_CREATE|flag, 0o644)
	if err != nil {
		return fmt.Errorf("CSVLogger: %w", err)
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return fmt.Errorf("CSVLogger: %w", err)
	}
	return f.Close()
}

// pyRepr formats v as Python's repr of a float does (what Keras's
// CSVLogger writes through the csv module).
func pyRepr(v float64) string { return pyReprBits(v, 64) }

// pyReprBits is pyRepr for a float of bits 64 or 32: numpy writes a
// float32 as the shortest decimal that reads back as that float32 ("0.001",
// where its float64 is 0.0010000000474974513), with Python's rules.
func pyReprBits(v float64, bits int) string {
	switch {
	case math.IsNaN(v):
		return "nan"
	case math.IsInf(v, 1):
		return "inf"
	case math.IsInf(v, -1):
		return "-inf"
	}
	if v == 0 {
		if math.Signbit(v) {
			return "-0.0"
		}
		return "0.0"
	}
	exp := math.Floor(math.Log10(math.Abs(v)))
	// Python switches to exponent notation below 1e-4 and from 1e16.
	if exp < -4 || exp >= 16 {
		return strconv.FormatFloat(v, 'e', -1, bits) // "1e-05", "1.5e+16", as Python writes them
	}
	s := strconv.FormatFloat(v, 'f', -1, bits) // the shortest decimal that reads back as v
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}

// baseName is a file name's last element, of a path written on Linux or
// on Windows (where the model was exported: C:\runs\log.csv).
func baseName(name string) string {
	return filepath.Base(strings.ReplaceAll(name, `\`, "/"))
}
