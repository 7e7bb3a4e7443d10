package callbacks

import (
	"bufio"
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
	keys   []string
	header bool
}

func newCSVLogger(raw json.RawMessage, o Options) (callback, error) {
	c := &csvLogger{Separator: ","}
	if err := decode(raw, c); err != nil {
		return nil, err
	}
	name := filepath.Base(c.Filename)
	if name == "." || name == "/" || name == "" {
		return nil, fmt.Errorf("filename %q names no file", c.Filename)
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
	f, err := os.OpenFile(c.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return false, fmt.Errorf("CSVLogger: %w", err)
	}
	w := bufio.NewWriter(f)
	if c.header {
		w.WriteString(c.row(append([]string{"epoch"}, c.keys...)))
		c.header = false
	}
	cells := []string{strconv.Itoa(epoch)}
	for _, k := range c.keys {
		if v, ok := logs.Get(k); ok {
			cells = append(cells, pyRepr(v))
		} else {
			cells = append(cells, "NA")
		}
	}
	w.WriteString(c.row(cells))
	if err := w.Flush(); err != nil {
		f.Close()
		return false, fmt.Errorf("CSVLogger: %w", err)
	}
	return false, f.Close()
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

// A resumed job's file starts anew with the epochs trained after the
// resume (as a new fit call with the same CSVLogger writes a new file).
func (c *csvLogger) state() any                    { return struct{}{} }
func (c *csvLogger) restore(json.RawMessage) error { return nil }

// pyRepr formats v as Python's repr of a float does (what Keras's
// CSVLogger writes through the csv module).
func pyRepr(v float64) string {
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
		return strconv.FormatFloat(v, 'e', -1, 64) // "1e-05", "1.5e+16", as Python writes them
	}
	s := strconv.FormatFloat(v, 'f', -1, 64) // the shortest decimal that reads back as v
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}
