package data

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/debug"
	"sync"
	"unicode/utf8"
)

// Array is a memory-mapped .npy file. Rows (slices along the first axis)
// are copied out with Gather; the file is never read as a whole. The same
// type also holds the arrays of the other formats: a stored .npz member
// (mapped in place), a deflated one (decompressed into memory) and the
// two tensors of a CSV channel (parsed into memory).
//
// An Array is safe for concurrent Gathers. Close waits for running Gathers
// and makes later ones fail instead of touching unmapped memory.
type Array struct {
	path     string
	hdr      Header
	mapping  []byte // what mapFile returned, for Close; nil for data held in memory
	data     []byte // the element bytes: within mapping, or in memory
	rowElems int
	rowBytes int
	// fidx holds, for Fortran-ordered arrays of rank >= 2, the element
	// offset of each element of row 0 in C order; row r's element e is at
	// r + fidx[e]. Nil for C order, where a row is one contiguous run.
	fidx []int

	// load, when set, attaches the data on first use (a deflated .npz
	// member is inflated to disk then); loaded runs it once.
	load    func() error
	loaded  sync.Once
	loadErr error

	mu     sync.RWMutex
	closed bool

	// place, when set, says where row r is for a person (a CSV channel's
	// rows span its files); Place's default is the row of the one file.
	place func(r int) string
}

// Place says where row r (counting from 0) is: "row 17 (counting from 0)
// of y.npy", or for CSV files "row 3 of b.csv".
func (a *Array) Place(r int) string {
	if a.place != nil {
		return a.place(r)
	}
	return fmt.Sprintf("row %d (counting from 0) of %s", r, a.path)
}

// ready attaches data that is loaded on first use.
func (a *Array) ready() error {
	if a.load == nil {
		return nil
	}
	a.loaded.Do(func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if !a.closed {
			a.loadErr = a.load()
		}
	})
	return a.loadErr
}

// Open maps the .npy file at path read-only. Errors name the file. The
// file must not be truncated while it is open: SageMaker's File mode
// channels never are, and Gather reports it as an error if it happens.
//
// path may also name a member of a .npz archive as ListChannel lists it,
// "<archive>.npz/<member>.npy": see OpenNPZ for how members are read.
func Open(path string) (*Array, error) {
	return openFile(path, func(p string) string { return p }, "")
}

// openFile is Open naming files in errors with name (a channel names its
// files relative to its root; a .npz member is named after its archive's
// name) and spooling inflated .npz members in spool ("" for os.TempDir()).
func openFile(path string, name func(string) string, spool string) (*Array, error) {
	f, err := os.Open(path)
	if err != nil {
		if archive, member, ok := splitMemberPath(path); ok {
			return openMemberNamed(archive, name(archive), member, spool)
		}
		return nil, err
	}
	defer f.Close() // the mapping outlives the descriptor
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("%s: is a directory, not a .npy file", name(path))
	}
	return openNPY(f, name(path), 0, fi.Size())
}

// openNPY reads the .npy header at offset off of f, where size bytes of
// .npy data (header included) lie, and maps the array's data. Extra bytes
// after the data are ignored, as numpy does.
func openNPY(f *os.File, path string, off, size int64) (*Array, error) {
	h, err := ParseHeader(io.NewSectionReader(f, off, size))
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: file is empty, not a .npy file", path)
		}
		if errors.Is(err, ErrBadMagic) {
			var magic [4]byte
			if n, _ := f.ReadAt(magic[:], off); n == 4 && string(magic[:]) == zipMagic {
				return nil, fmt.Errorf("%s: is a zip archive (.npz), not a .npy file; open it with OpenNPZ", path)
			}
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	dataLen := h.DataLen()
	if have := size - int64(h.HeaderLen); have < dataLen {
		return nil, fmt.Errorf("%s: file is truncated: header says shape %s %s = %d bytes of data but only %d follow",
			path, shapeString(h.Shape), h.DType, dataLen, max(have, 0))
	}
	a := newArray(path, h)
	if dataLen > 0 {
		m, d, err := mapFile(f, off+int64(h.HeaderLen), int(dataLen))
		if err != nil {
			return nil, fmt.Errorf("%s: map file: %w", path, err)
		}
		a.mapping, a.data = m, d[:dataLen]
	}
	return a, nil
}

// newArray is an Array for header h with no data attached yet.
func newArray(path string, h Header) *Array {
	a := &Array{path: path, hdr: h}
	a.rowElems = 1
	for _, d := range h.Shape[min(1, len(h.Shape)):] {
		a.rowElems *= d
	}
	a.rowBytes = a.rowElems * h.ItemSize()
	if h.Fortran && len(h.Shape) >= 2 {
		a.fidx = fortranIndex(h.Shape)
	}
	return a
}

// newMemArray is an Array over data held in memory (a decompressed .npz
// member, parsed CSV): the elements as the header describes them.
func newMemArray(path string, h Header, data []byte) *Array {
	a := newArray(path, h)
	a.data = data
	return a
}

// fortranIndex computes, for each element of row 0 in C order, its element
// offset in a column-major array of the given shape.
func fortranIndex(shape []int) []int {
	rowShape := shape[1:]
	n := 1
	for _, d := range rowShape {
		n *= d
	}
	idx := make([]int, n)
	if n == 0 {
		return idx
	}
	// strides[j] is the column-major stride of axis j+1.
	strides := make([]int, len(rowShape))
	s := shape[0]
	for j, d := range rowShape {
		strides[j] = s
		s *= d
	}
	// Walk row 0 in C order like an odometer, the last axis fastest.
	pos := make([]int, len(rowShape))
	off := 0
	for e := range n {
		idx[e] = off
		for j := len(rowShape) - 1; j >= 0; j-- {
			pos[j]++
			off += strides[j]
			if pos[j] < rowShape[j] {
				break
			}
			off -= pos[j] * strides[j]
			pos[j] = 0
		}
	}
	return idx
}

// Path is the file the array was opened from.
func (a *Array) Path() string { return a.path }

// Header is the file's parsed header.
func (a *Array) Header() Header {
	h := a.hdr
	h.Shape = append([]int(nil), h.Shape...)
	return h
}

// Shape is the array's shape; empty for a 0-d array.
func (a *Array) Shape() []int { return append([]int{}, a.hdr.Shape...) }

// Len is the number of rows, the first dimension; 0 for a 0-d array, which
// has no rows (NewDataset refuses it).
func (a *Array) Len() int {
	if len(a.hdr.Shape) == 0 {
		return 0
	}
	return a.hdr.Shape[0]
}

// RowShape is the shape of one row: Shape()[1:].
func (a *Array) RowShape() []int {
	if len(a.hdr.Shape) == 0 {
		return []int{}
	}
	return append([]int{}, a.hdr.Shape[1:]...)
}

// RowElems is the number of elements in one row (1 for a 1-D array).
func (a *Array) RowElems() int { return a.rowElems }

// TextWidth is the bytes of one text element as Gather writes it: NUL-padded
// UTF-8, 4 bytes for each of a unicode ('U') element's characters, the
// element's width for bytes ('S'). Zero for numeric arrays.
func (a *Array) TextWidth() int {
	if a.hdr.DType != String {
		return 0
	}
	if a.hdr.Unicode {
		return 4 * a.hdr.Width
	}
	return a.hdr.Width
}

// itemSizeAs is the bytes Gather writes per element as dt.
func (a *Array) itemSizeAs(dt DType) int {
	if dt == String {
		return a.TextWidth()
	}
	return dt.Size()
}

// DType is the element type stored in the file.
func (a *Array) DType() DType { return a.hdr.DType }

// Close unmaps the file. Gathers after Close return an error.
func (a *Array) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	m := a.mapping
	a.mapping, a.data = nil, nil
	if m != nil {
		if err := unmapFile(m); err != nil {
			return fmt.Errorf("%s: unmap: %w", a.path, err)
		}
	}
	return nil
}

// Gather writes the given rows, in the given order, into dst as dstType:
// little-endian, C order, row after row. dst must be exactly
// len(rows)*RowElems()*dstType.Size() bytes. Same dtype, little-endian,
// C order is a plain copy of each run of consecutive rows; anything else
// converts element by element without reflection.
func (a *Array) Gather(dst []byte, dstType DType, rows []int) (err error) {
	if err := a.ready(); err != nil {
		return err
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	// A mapped file cut short after Open (overwritten, truncated, a
	// network file system losing it) raises SIGBUS on access. Turn that
	// fault into an error naming the file rather than a crash.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(interface{ Addr() uintptr }); !ok {
				panic(r)
			}
			err = fmt.Errorf("%s: reading the mapped file failed: the file was cut short or replaced during training", a.path)
		}
	}()
	if a.closed {
		return fmt.Errorf("%s: array is closed", a.path)
	}
	if len(a.hdr.Shape) == 0 {
		return fmt.Errorf("%s: is a 0-d array (a scalar) and has no rows to gather", a.path)
	}
	if !dstType.Valid() {
		return fmt.Errorf("%s: gather into invalid dtype %v", a.path, dstType)
	}
	if (dstType == String) != (a.hdr.DType == String) {
		return fmt.Errorf("%s: holds %s, which cannot be gathered as %s", a.path, a.hdr, dstType)
	}
	dstRow := a.rowElems * a.itemSizeAs(dstType)
	if want := len(rows) * dstRow; len(dst) != want {
		return fmt.Errorf("%s: gather of %d rows of %s as %s needs %d bytes but dst has %d",
			a.path, len(rows), shapeString(a.hdr.Shape[1:]), dstType, want, len(dst))
	}
	n := a.hdr.Shape[0]
	for _, r := range rows {
		if r < 0 || r >= n {
			return fmt.Errorf("%s: row %d is out of range [0, %d)", a.path, r, n)
		}
	}
	if a.rowBytes == 0 {
		return nil
	}
	st, big := a.hdr.DType, a.hdr.BigEndian
	rb := a.rowBytes
	same := st == dstType && (!big || st.Size() == 1)
	if st == String {
		if a.fidx != nil {
			a.gatherFortranText(dst, rows, dstRow)
			return nil
		}
		same = !a.hdr.Unicode
		if !same {
			for i, r := range rows {
				utf32To8(dst[i*dstRow:(i+1)*dstRow], a.data[r*rb:(r+1)*rb], a.hdr.Width, big)
			}
			return nil
		}
	}
	switch {
	case a.fidx == nil && same:
		// Copy runs of consecutive rows at once: an unshuffled epoch
		// becomes one memmove per batch.
		for i := 0; i < len(rows); {
			j := i + 1
			for j < len(rows) && rows[j] == rows[j-1]+1 {
				j++
			}
			copy(dst[i*rb:j*rb], a.data[rows[i]*rb:rows[j-1]*rb+rb])
			i = j
		}
	case a.fidx == nil && st == dstType:
		for i, r := range rows {
			swapCopy(dst[i*rb:(i+1)*rb], a.data[r*rb:(r+1)*rb], st.Size())
		}
	case a.fidx == nil:
		var c converter
		c.init(dst, dstType, st, big)
		for _, r := range rows {
			c.push(a.data[r*rb:(r+1)*rb], a.rowElems)
		}
		c.flush()
	case same:
		for i, r := range rows {
			a.fortranElems(dst[i*dstRow:(i+1)*dstRow], r, 0, a.rowElems)
		}
	default:
		// Fortran order with conversion: collect a stack chunk of
		// elements in C order, then convert it.
		var c converter
		c.init(dst, dstType, st, big)
		var scratch [convChunk * 8]byte
		size := st.Size()
		for _, r := range rows {
			for e := 0; e < a.rowElems; e += convChunk {
				m := min(convChunk, a.rowElems-e)
				a.fortranElems(scratch[:m*size], r, e, m)
				c.push(scratch[:m*size], m)
			}
		}
		c.flush()
	}
	return nil
}

// gatherFortranText gathers rows of a column-major text array element by
// element (an element is Width bytes, or 4*Width for unicode, and keeps that
// size in dst), unicode turned into UTF-8 as in C order.
func (a *Array) gatherFortranText(dst []byte, rows []int, dstRow int) {
	size := a.hdr.ItemSize()
	for i, r := range rows {
		row := dst[i*dstRow : (i+1)*dstRow]
		for e, off := range a.fidx {
			src := a.data[(r+off)*size : (r+off+1)*size]
			out := row[e*size : (e+1)*size]
			if a.hdr.Unicode {
				utf32To8(out, src, a.hdr.Width, a.hdr.BigEndian)
			} else {
				copy(out, src)
			}
		}
	}
}

// fortranElems copies n elements of row r of a column-major array,
// starting at C-order element e0 of the row, into out in C order, keeping
// the file's byte order.
func (a *Array) fortranElems(out []byte, r, e0, n int) {
	d := a.data
	idx := a.fidx[e0 : e0+n]
	switch a.hdr.DType.Size() {
	case 1:
		for e, off := range idx {
			out[e] = d[r+off]
		}
	case 2:
		for e, off := range idx {
			copy(out[2*e:2*e+2], d[2*(r+off):])
		}
	case 4:
		for e, off := range idx {
			copy(out[4*e:4*e+4], d[4*(r+off):])
		}
	case 8:
		for e, off := range idx {
			copy(out[8*e:8*e+8], d[8*(r+off):])
		}
	}
}

// FindRow returns the first row holding an element for which match is
// true (elements converted to float64), or -1, reading the array a
// bounded number of rows at a time until ctx ends: for finding a value a
// step failed on, not per step.
func (a *Array) FindRow(ctx context.Context, match func(float64) bool) (int, error) {
	if err := a.ready(); err != nil {
		return -1, err
	}
	n, per := a.Len(), max(1, (256<<10)/max(1, a.rowElems*8))
	rows := make([]int, 0, per)
	buf := make([]byte, per*a.rowElems*8)
	for start := 0; start < n && ctx.Err() == nil; start += per {
		rows = rows[:0]
		for r := start; r < min(n, start+per); r++ {
			rows = append(rows, r)
		}
		b := buf[:len(rows)*a.rowElems*8]
		if err := a.Gather(b, Float64, rows); err != nil {
			return -1, err
		}
		for e := 0; e < len(b)/8; e++ {
			if match(math.Float64frombits(binary.LittleEndian.Uint64(b[8*e:]))) {
				return start + e/max(1, a.rowElems), nil
			}
		}
	}
	return -1, nil
}

// Float32s returns every element converted to float32, in C order. It reads
// the whole array into memory: for tests, metadata and small arrays, not
// for training data.
func (a *Array) Float32s() ([]float32, error) {
	if err := a.ready(); err != nil {
		return nil, err
	}
	out := make([]float32, a.hdr.Elems())
	if len(out) == 0 {
		return out, nil
	}
	if len(a.hdr.Shape) == 0 {
		a.mu.RLock()
		defer a.mu.RUnlock()
		if a.closed {
			return nil, fmt.Errorf("%s: array is closed", a.path)
		}
		var b [4]byte
		convert(b[:], Float32, a.data, a.hdr.DType, a.hdr.BigEndian, 1)
		out[0] = math.Float32frombits(binary.LittleEndian.Uint32(b[:]))
		return out, nil
	}
	// Gather a bounded number of rows at a time so the byte buffer stays
	// small next to the result.
	per := max(1, (64<<10)/max(1, a.rowElems*4))
	rows := make([]int, 0, per)
	buf := make([]byte, per*a.rowElems*4)
	k := 0
	for start := 0; start < a.Len(); start += per {
		rows = rows[:0]
		for r := start; r < min(start+per, a.Len()); r++ {
			rows = append(rows, r)
		}
		b := buf[:len(rows)*a.rowElems*4]
		if err := a.Gather(b, Float32, rows); err != nil {
			return nil, err
		}
		for i := 0; i < len(b); i += 4 {
			out[k] = math.Float32frombits(binary.LittleEndian.Uint32(b[i:]))
			k++
		}
	}
	return out, nil
}

// WriteNPY writes a version 1.0 (2.0 if the header needs it) .npy file,
// little-endian and C order, with the same header bytes np.save writes.
// data holds the elements, little-endian, C order.
func WriteNPY(path string, dtype DType, shape []int, data []byte) error {
	if !dtype.Valid() {
		return fmt.Errorf("write %s: invalid dtype %v", path, dtype)
	}
	h := Header{DType: dtype, Shape: shape}
	for _, d := range shape {
		if d < 0 {
			return fmt.Errorf("write %s: negative dimension in shape %s", path, shapeString(shape))
		}
	}
	if want := h.DataLen(); int64(len(data)) != want {
		return fmt.Errorf("write %s: %s needs %d bytes of data but %d were given", path, h, want, len(data))
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(encodeHeader(h)); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// utf32To8 writes n-character UTF-32 elements of src as NUL-padded UTF-8
// elements of 4n bytes each into dst. numpy pads short strings with NUL
// code points, which end an element here as they do in numpy; a code
// point that is not a valid character becomes U+FFFD.
func utf32To8(dst, src []byte, n int, bigEndian bool) {
	w := 4 * n
	for e := 0; e+w <= len(dst) && e+w <= len(src); e += w {
		out := dst[e : e : e+w]
		for c := 0; c < n; c++ {
			var r uint32
			if bigEndian {
				r = binary.BigEndian.Uint32(src[e+4*c:])
			} else {
				r = binary.LittleEndian.Uint32(src[e+4*c:])
			}
			if r == 0 {
				break
			}
			out = utf8.AppendRune(out, rune(r))
		}
		clear(dst[e+len(out) : e+w])
	}
}
