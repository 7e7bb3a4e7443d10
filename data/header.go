package data

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"strconv"
	"strings"
	"unicode/utf8"
)

// npyMagic starts every .npy file; the two bytes after it are the format
// version (major, minor).
const npyMagic = "\x93NUMPY"

// maxHeaderLen bounds the header dict we are willing to read. numpy itself
// refuses headers over 10000 bytes by default; a larger bound keeps very
// high-rank shapes working while a corrupt length cannot make us allocate
// gigabytes.
const maxHeaderLen = 1 << 20

// ErrBadMagic is returned (wrapped) when a stream does not start with the
// .npy magic string.
var ErrBadMagic = errors.New("not a .npy file (bad magic)")

// Header is the decoded preamble of a .npy file.
type Header struct {
	DType     DType
	BigEndian bool  // multi-byte elements are stored big-endian
	Fortran   bool  // elements are stored in column-major order
	Shape     []int // empty for a 0-d array
	HeaderLen int   // bytes before the data: magic, version, length field and dict
	// Width is, for String, the characters of one element: bytes for
	// numpy's 'S' dtype, UTF-32 code units for 'U' (Unicode).
	Width   int
	Unicode bool
}

// ItemSize is the bytes of one element in the file.
func (h Header) ItemSize() int {
	switch {
	case h.DType != String:
		return h.DType.Size()
	case h.Unicode:
		return 4 * h.Width
	}
	return h.Width
}

// Descr is numpy's type string for the header's dtype, e.g. "<f4", "<U5".
func (h Header) Descr() string {
	if h.DType != String {
		return h.DType.typestr(h.BigEndian)
	}
	if h.Unicode {
		order := "<"
		if h.BigEndian {
			order = ">"
		}
		return order + "U" + strconv.Itoa(h.Width)
	}
	return "|S" + strconv.Itoa(h.Width)
}

// Elems is the number of elements (1 for a 0-d array).
func (h Header) Elems() int {
	n := 1
	for _, d := range h.Shape {
		n *= d
	}
	return n
}

// DataLen is the number of data bytes that follow the header.
func (h Header) DataLen() int64 { return int64(h.Elems()) * int64(h.ItemSize()) }

// String describes the array the way the error messages do: "shape (1000, 10) float32".
func (h Header) String() string {
	if h.DType == String {
		return "shape " + shapeString(h.Shape) + " text (" + h.Descr() + ")"
	}
	return "shape " + shapeString(h.Shape) + " " + h.DType.String()
}

// shapeString formats a shape as Python prints a tuple: (), (5,), (3, 4).
func shapeString(shape []int) string {
	var b strings.Builder
	b.WriteByte('(')
	for i, d := range shape {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(d))
	}
	if len(shape) == 1 {
		b.WriteByte(',')
	}
	b.WriteByte(')')
	return b.String()
}

// ParseHeader reads one .npy header from r and stops exactly at the first
// data byte: pipe mode reads several arrays back to back from one FIFO, so
// nothing past the header may be consumed (no buffering here). A stream
// that is empty returns io.EOF unwrapped, so a reader of concatenated
// arrays can tell a clean end from a truncated header.
func ParseHeader(r io.Reader) (Header, error) {
	var pre [8]byte
	if n, err := io.ReadFull(r, pre[:]); err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return Header{}, io.EOF
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			if !strings.HasPrefix(npyMagic, string(pre[:min(n, len(npyMagic))])) {
				return Header{}, ErrBadMagic
			}
			return Header{}, fmt.Errorf("header is truncated after %d bytes: %w", n, io.ErrUnexpectedEOF)
		}
		return Header{}, fmt.Errorf("read header: %w", err)
	}
	if string(pre[:6]) != npyMagic {
		return Header{}, ErrBadMagic
	}
	major, minor := pre[6], pre[7]
	var lenField int
	switch major {
	case 1:
		lenField = 2
	case 2, 3:
		lenField = 4
	default:
		return Header{}, fmt.Errorf(".npy format version %d.%d is not supported; want 1.0, 2.0 or 3.0", major, minor)
	}
	if minor != 0 {
		return Header{}, fmt.Errorf(".npy format version %d.%d is not supported; want 1.0, 2.0 or 3.0", major, minor)
	}
	var lb [4]byte
	if _, err := io.ReadFull(r, lb[:lenField]); err != nil {
		return Header{}, truncatedHeader(err)
	}
	var hlen uint32
	if lenField == 2 {
		hlen = uint32(binary.LittleEndian.Uint16(lb[:2]))
	} else {
		hlen = binary.LittleEndian.Uint32(lb[:4])
	}
	if hlen > maxHeaderLen {
		return Header{}, fmt.Errorf("header length %d is over the %d byte limit; the file is corrupt", hlen, maxHeaderLen)
	}
	dict := make([]byte, hlen)
	if _, err := io.ReadFull(r, dict); err != nil {
		return Header{}, truncatedHeader(err)
	}
	if major == 3 && !utf8.Valid(dict) {
		return Header{}, errors.New("header of a version 3.0 file is not valid UTF-8")
	}
	h, err := parseDict(dict)
	if err != nil {
		return Header{}, err
	}
	h.HeaderLen = len(npyMagic) + 2 + lenField + int(hlen)
	return h, nil
}

func truncatedHeader(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("header is truncated: %w", io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("read header: %w", err)
}

// parseDict decodes the Python dict literal of a header, e.g.
// {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
func parseDict(src []byte) (Header, error) {
	p := &pyParser{s: src}
	v, err := p.parse()
	if err != nil {
		return Header{}, fmt.Errorf("header is not a valid Python literal: %v", err)
	}
	d, ok := v.(pyDict)
	if !ok {
		return Header{}, errors.New("header is not a Python dict")
	}
	var h Header
	var seen [3]bool
	for _, kv := range d {
		switch kv.key {
		case "descr":
			seen[0] = true
			switch descr := kv.val.(type) {
			case string:
				if err := parseDescr(&h, descr); err != nil {
					return Header{}, err
				}
			case pyList:
				return Header{}, errors.New("structured dtypes (record arrays) are not supported; save one plain numeric array per tensor")
			default:
				return Header{}, errors.New("header 'descr' is not a dtype string")
			}
		case "fortran_order":
			seen[1] = true
			b, ok := kv.val.(bool)
			if !ok {
				return Header{}, errors.New("header 'fortran_order' is not True or False")
			}
			h.Fortran = b
		case "shape":
			seen[2] = true
			t, ok := kv.val.(pyTuple)
			if !ok {
				return Header{}, errors.New("header 'shape' is not a tuple")
			}
			shape := make([]int, len(t))
			for i, e := range t {
				n, ok := e.(int64)
				if !ok {
					return Header{}, errors.New("header 'shape' holds something other than integers")
				}
				if n < 0 {
					return Header{}, fmt.Errorf("header 'shape' has a negative dimension %d", n)
				}
				shape[i] = int(n)
			}
			h.Shape = shape
		default:
			return Header{}, fmt.Errorf("header has an unexpected key %q; want descr, fortran_order and shape", kv.key)
		}
	}
	for i, k := range [3]string{"descr", "fortran_order", "shape"} {
		if !seen[i] {
			return Header{}, fmt.Errorf("header has no %q key", k)
		}
	}
	// The data size, and so every partial product such as a row's size,
	// must fit an int: it becomes a slice length. Zero dimensions are
	// skipped so that (0, huge) cannot hide an overflowing row size.
	total := uint64(h.ItemSize())
	for _, d := range h.Shape {
		if d == 0 {
			continue
		}
		hi, lo := bits.Mul64(total, uint64(d))
		if hi != 0 || lo > math.MaxInt {
			return Header{}, fmt.Errorf("header shape %s is too large to address", shapeString(h.Shape))
		}
		total = lo
	}
	return h, nil
}

// encodeHeader writes the header numpy's np.save would write for h
// (numpy >= 1.24 layout: sorted keys, room for the first axis to grow,
// padded with spaces to a multiple of 64 bytes, version 1.0 unless the
// dict needs a 4-byte length).
func encodeHeader(h Header) []byte {
	fortran := "False"
	if h.Fortran {
		fortran = "True"
	}
	dict := "{'descr': '" + h.Descr() + "', 'fortran_order': " + fortran +
		", 'shape': " + shapeString(h.Shape) + ", }"
	if len(h.Shape) > 0 {
		growth := h.Shape[0]
		if h.Fortran {
			growth = h.Shape[len(h.Shape)-1]
		}
		const growthAxisMaxDigits = 21
		dict += strings.Repeat(" ", max(0, growthAxisMaxDigits-len(strconv.Itoa(growth))))
	}
	const align = 64
	lenField, major := 2, byte(1)
	if len(dict)+1+align > math.MaxUint16 {
		lenField, major = 4, 2
	}
	hlen := len(dict) + 1
	pad := align - (len(npyMagic)+2+lenField+hlen)%align
	out := make([]byte, 0, len(npyMagic)+2+lenField+hlen+pad)
	out = append(out, npyMagic...)
	out = append(out, major, 0)
	if lenField == 2 {
		out = binary.LittleEndian.AppendUint16(out, uint16(hlen+pad))
	} else {
		out = binary.LittleEndian.AppendUint32(out, uint32(hlen+pad))
	}
	out = append(out, dict...)
	for range pad {
		out = append(out, ' ')
	}
	return append(out, '\n')
}

// pyParser reads the small subset of Python literals that .npy headers use:
// dicts, tuples, lists, strings, integers (with Python 2's L suffix), True,
// False and None. Anything else is an error, never a panic.
type pyParser struct {
	s     []byte
	i     int
	depth int
}

type (
	pyDict []pyKV
	pyKV   struct {
		key string
		val any
	}
	pyTuple []any
	pyList  []any
)

const maxPyDepth = 32

func (p *pyParser) parse() (any, error) {
	v, err := p.value()
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i != len(p.s) {
		return nil, fmt.Errorf("unexpected %q after the literal at byte %d", p.s[p.i], p.i)
	}
	return v, nil
}

func (p *pyParser) space() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r', '\f', '\v':
			p.i++
		default:
			return
		}
	}
}

func (p *pyParser) value() (any, error) {
	p.space()
	if p.i >= len(p.s) {
		return nil, errors.New("unexpected end")
	}
	switch c := p.s[p.i]; {
	case c == '{':
		return p.dict()
	case c == '(':
		t, err := p.seq('(', ')')
		return pyTuple(t), err
	case c == '[':
		l, err := p.seq('[', ']')
		return pyList(l), err
	case c == '\'' || c == '"':
		return p.str()
	case c == '-' || c == '+' || (c >= '0' && c <= '9'):
		return p.int()
	case isIdentStart(c):
		start := p.i
		for p.i < len(p.s) && (isIdentStart(p.s[p.i]) || (p.s[p.i] >= '0' && p.s[p.i] <= '9')) {
			p.i++
		}
		switch w := string(p.s[start:p.i]); w {
		case "True":
			return true, nil
		case "False":
			return false, nil
		case "None":
			return nil, nil
		default:
			return nil, fmt.Errorf("unexpected name %q", w)
		}
	default:
		return nil, fmt.Errorf("unexpected %q at byte %d", c, p.i)
	}
}

func isIdentStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func (p *pyParser) enter() error {
	p.depth++
	if p.depth > maxPyDepth {
		return errors.New("nested too deeply")
	}
	return nil
}

func (p *pyParser) dict() (any, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	p.i++ // '{'
	var d pyDict
	for {
		p.space()
		if p.i >= len(p.s) {
			return nil, errors.New("dict is not closed")
		}
		if p.s[p.i] == '}' {
			p.i++
			return d, nil
		}
		k, err := p.value()
		if err != nil {
			return nil, err
		}
		key, ok := k.(string)
		if !ok {
			return nil, errors.New("dict key is not a string")
		}
		for _, kv := range d {
			if kv.key == key {
				return nil, fmt.Errorf("dict key %q appears twice", key)
			}
		}
		p.space()
		if p.i >= len(p.s) || p.s[p.i] != ':' {
			return nil, errors.New("missing ':' after a dict key")
		}
		p.i++
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		d = append(d, pyKV{key, v})
		p.space()
		if p.i < len(p.s) && p.s[p.i] == ',' {
			p.i++
			continue
		}
		p.space()
		if p.i < len(p.s) && p.s[p.i] == '}' {
			continue
		}
		return nil, errors.New("missing ',' between dict items")
	}
}

// seq parses a tuple or list. In Python (5) is the number 5, not a tuple,
// so a one-element tuple needs its comma: (5,).
func (p *pyParser) seq(open, close byte) ([]any, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	p.i++ // open
	var out []any
	commas := 0
	for {
		p.space()
		if p.i >= len(p.s) {
			return nil, fmt.Errorf("%q is not closed", open)
		}
		if p.s[p.i] == close {
			p.i++
			if open == '(' && len(out) == 1 && commas == 0 {
				return nil, errors.New("a parenthesised value without a comma is not a tuple")
			}
			return out, nil
		}
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		p.space()
		if p.i < len(p.s) && p.s[p.i] == ',' {
			p.i++
			commas++
			continue
		}
		if p.i < len(p.s) && p.s[p.i] == close {
			continue
		}
		return nil, fmt.Errorf("missing ',' in a %q sequence", open)
	}
}

func (p *pyParser) int() (any, error) {
	start := p.i
	if p.s[p.i] == '-' || p.s[p.i] == '+' {
		p.i++
	}
	digits := p.i
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
	}
	if p.i == digits {
		return nil, fmt.Errorf("sign without digits at byte %d", start)
	}
	text := string(p.s[start:p.i])
	if p.i < len(p.s) && (p.s[p.i] == 'L' || p.s[p.i] == 'l') {
		p.i++ // Python 2 long, written by old numpy
	}
	if p.i < len(p.s) && (p.s[p.i] == '.' || p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		return nil, fmt.Errorf("non-integer number at byte %d", start)
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("integer %s is out of range", text)
	}
	return n, nil
}

func (p *pyParser) str() (any, error) {
	q := p.s[p.i]
	p.i++
	var b strings.Builder
	for {
		if p.i >= len(p.s) {
			return nil, errors.New("string is not closed")
		}
		c := p.s[p.i]
		p.i++
		switch {
		case c == q:
			return b.String(), nil
		case c == '\n':
			return nil, errors.New("newline inside a string")
		case c == '\\':
			if p.i >= len(p.s) {
				return nil, errors.New("string is not closed")
			}
			e := p.s[p.i]
			p.i++
			switch e {
			case '\\', '\'', '"':
				b.WriteByte(e)
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case '0':
				b.WriteByte(0)
			case 'x', 'u', 'U':
				n := 2
				if e == 'u' {
					n = 4
				} else if e == 'U' {
					n = 8
				}
				if p.i+n > len(p.s) {
					return nil, errors.New("short escape in a string")
				}
				r, err := strconv.ParseUint(string(p.s[p.i:p.i+n]), 16, 32)
				if err != nil {
					return nil, errors.New("bad escape in a string")
				}
				p.i += n
				b.WriteRune(rune(r))
			default:
				b.WriteByte('\\')
				b.WriteByte(e)
			}
		default:
			b.WriteByte(c)
		}
	}
}
