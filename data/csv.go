package data

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
)

// OpenCSV reads CSV files the way SageMaker's built-in algorithms take
// ContentType text/csv: no header row, the label in the first column and
// the features, numeric, in the rest. The files are read in the order
// given (OpenChannel sorts them) and concatenated. It returns the label
// column, float32 of shape (N,), and the features, float32 of shape
// (N, columns-1).
//
// CSV is text, so unlike .npy it cannot be mapped: every file is parsed
// once, here, into float32 arrays held in memory (4 bytes per cell).
// Channels larger than memory belong in .npy or .npz files.
//
// Cells may be quoted and padded with spaces; nan, inf and -inf are
// numbers. Blank lines are skipped. Errors name the file, line and column:
// an empty or non-numeric cell (on a first line, with a hint that headers
// are not allowed), a row whose column count differs from the first row's,
// a file with only one column.
func OpenCSV(paths ...string) (label, features *Array, err error) {
	return openCSV(func(p string) string { return p }, false, paths...)
}

// openCSV is OpenCSV naming files with name in errors; with text, the
// feature cells are kept as text (a string array as wide as the widest
// cell's UTF-8 bytes) for a model whose input takes strings. CSV is parsed into
// memory, so it first checks the files fit: at most half the memory this
// process may still use (the cgroup's limit or what the machine has
// available), counting the text's bytes, which bounds the parsed cells.
func openCSV(name func(string) string, text bool, paths ...string) (label, features *Array, err error) {
	if len(paths) == 0 {
		return nil, nil, errors.New("OpenCSV: no files given")
	}
	var total int64
	for _, path := range paths {
		if fi, err := os.Stat(path); err == nil {
			total += fi.Size()
		}
	}
	if avail, ok := availableMemory(); ok && total > avail/2 {
		return nil, nil, fmt.Errorf("%s: the CSV data is %s, more than the %s (half the memory available) sagefit parses CSV into; save it as .npy files (np.save), which are memory-mapped and train in bounded memory",
			csvDesc(name, paths), byteSize(total), byteSize(avail/2))
	}
	p := csvParser{name: name, text: text}
	starts := make([]int, len(paths)) // each file's first row
	for i, path := range paths {
		starts[i] = p.rows
		if err := p.file(path); err != nil {
			return nil, nil, err
		}
	}
	place := func(r int) string {
		i := max(0, sort.SearchInts(starts, r+1)-1)
		return fmt.Sprintf("row %d of %s", r-starts[i]+1, name(paths[i]))
	}
	desc := csvDesc(name, paths)
	if p.rows == 0 {
		if len(paths) == 1 {
			return nil, nil, fmt.Errorf("%s: CSV file holds no rows", desc)
		}
		return nil, nil, fmt.Errorf("%s: CSV files hold no rows", desc)
	}
	label = newMemArray(desc+" column 1 (label)",
		Header{DType: Float32, Shape: []int{p.rows}}, p.label)
	fh := Header{DType: Float32, Shape: []int{p.rows, p.cols - 1}}
	if text {
		fh.DType, fh.Width = String, 1
		for _, c := range p.texts {
			fh.Width = max(fh.Width, len(c))
		}
		p.features = make([]byte, len(p.texts)*fh.Width)
		for i, c := range p.texts {
			copy(p.features[i*fh.Width:], c)
		}
	}
	features = newMemArray(fmt.Sprintf("%s columns 2-%d (features)", desc, p.cols), fh, p.features)
	label.place, features.place = place, place
	return label, features, nil
}

// csvDesc names CSV files: the first, and how many more.
func csvDesc(name func(string) string, paths []string) string {
	if len(paths) > 1 {
		return fmt.Sprintf("%s (and %d more CSV files)", name(paths[0]), len(paths)-1)
	}
	return name(paths[0])
}

// csvParser accumulates the rows of several CSV files as little-endian
// float32 bytes.
type csvParser struct {
	name            func(string) string // how errors name a file
	rows, cols      int
	colsFrom        string // "a.csv line 1": where the column count was set
	label, features []byte
	text            bool     // feature cells are text, kept in texts
	texts           []string // the feature cells, row after row, when text
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

func (p *csvParser) file(path string) error {
	f, err := os.Open(path)
	shown := p.name(path)
	if err != nil {
		return err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	if b, _ := br.Peek(len(utf8BOM)); bytes.Equal(b, utf8BOM) {
		br.Discard(len(utf8BOM))
	}
	r := csv.NewReader(br)
	r.FieldsPerRecord = -1 // checked here, with a better message
	r.ReuseRecord = true
	// A text cell's spaces are its own (" cyan", as Python's csv.writer
	// writes it, was fed as "cyan"); a number's are not.
	r.TrimLeadingSpace = !p.text
	first := true
	for {
		rec, err := r.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return fmt.Errorf("%s line %d column %d: %v", shown, pe.Line, pe.Column, pe.Err)
			}
			return fmt.Errorf("%s: %w", shown, err)
		}
		line, _ := r.FieldPos(0)
		// Cells first: a header row or a binary file is better told as
		// "not a number" than by its column count.
		for i, cell := range rec {
			if p.text && i > 0 {
				p.texts = append(p.texts, cell)
				continue
			}
			v, err := parseCell(cell)
			if err != nil {
				hint := ""
				switch {
				case strings.ContainsRune(cell, '\r'):
					hint = " (its lines end in a lone carriage return, as old Mac files do: save it with \\n or \\r\\n line endings)"
				case first && i == 0 && !errors.Is(err, errOutOfRange): // past a first cell that is a number, no header
					hint = " (text/csv channels have no header row; remove it)"
				}
				at, _ := r.FieldPos(i) // a quoted cell before it may span lines
				return fmt.Errorf("%s line %d column %d: %v%s", shown, at, i+1, err, hint)
			}
			if i == 0 {
				p.label = binary.LittleEndian.AppendUint32(p.label, math.Float32bits(v))
			} else {
				p.features = binary.LittleEndian.AppendUint32(p.features, math.Float32bits(v))
			}
		}
		switch {
		case p.cols == 0 && len(rec) < 2:
			return fmt.Errorf("%s line %d has 1 column; a CSV channel needs the label in the first column and at least one feature after it", shown, line)
		case p.cols == 0:
			p.cols, p.colsFrom = len(rec), fmt.Sprintf("%s line %d", shown, line)
		case len(rec) != p.cols:
			return fmt.Errorf("%s line %d has %d columns but %s has %d; every row needs the label and the same number of features",
				shown, line, len(rec), p.colsFrom, p.cols)
		}
		p.rows++
		first = false
	}
}

// parseCell reads one numeric cell as float32.
func parseCell(cell string) (float32, error) {
	s := strings.TrimSpace(cell)
	if s == "" {
		return 0, errors.New("empty cell; every cell needs a number (missing values are not supported)")
	}
	// As np.loadtxt reads it: no Go literal syntax (digit separators, hex
	// floats), and rounded to float64 first, then to float32 (straight to
	// float32 rounded a decimal halfway between two float32s the other way).
	digits := strings.TrimLeft(s, "+-")
	if strings.ContainsRune(s, '_') || strings.HasPrefix(digits, "0x") || strings.HasPrefix(digits, "0X") {
		return 0, fmt.Errorf("%q is not a number", cell)
	}
	if strings.EqualFold(digits, "nan") && len(s)-len(digits) <= 1 { // -nan, as C's printf writes it
		return float32(math.NaN()), nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("%q is not a number", cell)
	}
	f := float32(v)
	if err != nil || math.IsInf(float64(f), 0) && !math.IsInf(v, 0) {
		// numpy reads it as inf; a number past float32 is more likely a fault.
		return 0, fmt.Errorf("%q is %w", cell, errOutOfRange)
	}
	return f, nil
}

// errOutOfRange is a cell's number beyond float32's range.
var errOutOfRange = errors.New("out of float32 range")
