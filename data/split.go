package data

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
)

// rowRange is rows [lo, lo+n) of a source, as a source of its own.
type rowRange struct {
	rowSource
	lo, n int
}

func (r rowRange) Len() int { return r.n }

func (r rowRange) Gather(dst []byte, dstType DType, rows []int) error {
	shifted := make([]int, len(rows))
	for i, row := range rows {
		if row < 0 || row >= r.n {
			return fmt.Errorf("%s: row %d outside the %d rows of this part", r.Path(), row, r.n)
		}
		shifted[i] = row + r.lo
	}
	return r.rowSource.Gather(dst, dstType, shifted)
}

// Rows returns rows [lo, hi) of d as a dataset of their own (Keras's
// validation_split takes the last rows of the training data this way; on
// a host with a small shard of a ShardedByS3Key channel one part may be
// empty). It shares d's files: close d, not the part, and only after the
// part is done with.
func (d *Dataset) Rows(lo, hi int) (*Dataset, error) {
	if lo < 0 || hi > d.n || lo > hi {
		return nil, fmt.Errorf("rows [%d, %d) are not a part of %d rows", lo, hi, d.n)
	}
	part := &Dataset{names: d.names, sources: make(map[string]rowSource, len(d.sources)), n: hi - lo}
	for name, s := range d.sources {
		part.sources[name] = rowRange{rowSource: s, lo: lo, n: hi - lo}
	}
	return part, nil
}

// NewFloat32Array is an array of one float32 value per row held in memory
// (a per-row weight computed from other data); name is how errors name it.
func NewFloat32Array(name string, values []float32) *Array {
	b := make([]byte, 4*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return newMemArray(name, Header{DType: Float32, Shape: []int{len(values)}}, b)
}

// RepeatRows is a float32 array in memory of rows's rows, each row's one
// value repeated over rowShape (a weight per row over a loss's values per
// row, as Keras broadcasts it); name is how errors name it. rows must hold
// one value per row.
func RepeatRows(name string, rows []*Array, rowShape []int) (*Array, error) {
	per := 1
	for _, d := range rowShape {
		per *= d
	}
	n := 0
	for _, a := range rows {
		if a.RowElems() != 1 {
			return nil, fmt.Errorf("%s holds %d values per row, not one", a.Path(), a.RowElems())
		}
		n += a.Len()
	}
	out := make([]byte, 4*n*per)
	at := 0
	for _, a := range rows {
		idx := make([]int, a.Len())
		for i := range idx {
			idx[i] = i
		}
		one := make([]byte, 4*a.Len())
		if err := a.Gather(one, Float32, idx); err != nil {
			return nil, err
		}
		for r := range a.Len() {
			for range per {
				copy(out[at:at+4], one[4*r:4*r+4])
				at += 4
			}
		}
	}
	return newMemArray(name, Header{DType: Float32, Shape: append([]int{n}, rowShape...)}, out), nil
}

// EmptyArray is an array of no rows whose examples have rowShape: a
// tensor of a host that got none of a ShardedByS3Key channel's objects
// (SageMaker gives a host none where a channel has fewer objects than the
// job has hosts). name is how errors name it.
func EmptyArray(name string, dtype DType, rowShape []int) *Array {
	h := Header{DType: dtype, Shape: append([]int{0}, rowShape...)}
	if dtype == String {
		h.Width = 1
	}
	return newMemArray(name, h, nil)
}

// Add makes a a tensor of d, named name; it must have d's row count. d
// does not take a over: its caller keeps closing it.
func (d *Dataset) Add(name string, a *Array) error {
	if _, ok := d.sources[name]; ok {
		return fmt.Errorf("the dataset already has a tensor %q", name)
	}
	if a.Len() != d.n {
		return fmt.Errorf("%s has %d rows but the channel has %d", a.Path(), a.Len(), d.n)
	}
	d.sources[name] = a
	d.names = append(d.names, name)
	sort.Strings(d.names)
	return nil
}

// Replace makes a the tensor name of d in place of the one it has (a
// computed form of it); it must have d's row count.
func (d *Dataset) Replace(name string, a *Array) error {
	if _, ok := d.sources[name]; !ok {
		return fmt.Errorf("the dataset has no tensor %q", name)
	}
	if a.Len() != d.n {
		return fmt.Errorf("%s has %d rows but the channel has %d", a.Path(), a.Len(), d.n)
	}
	d.sources[name] = a
	return nil
}

// Without is d without the tensor name (a view sharing d's files).
func (d *Dataset) Without(name string) *Dataset {
	part := &Dataset{n: d.n, sources: make(map[string]rowSource, len(d.sources))}
	for _, k := range d.names {
		if k != name {
			part.names = append(part.names, k)
			part.sources[k] = d.sources[k]
		}
	}
	return part
}
