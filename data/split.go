package data

import "fmt"

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
// validation_split takes the last rows of the training data this way). It
// shares d's files: close d, not the part, and only after the part is done
// with.
func (d *Dataset) Rows(lo, hi int) (*Dataset, error) {
	if lo < 0 || hi > d.n || lo >= hi {
		return nil, fmt.Errorf("rows [%d, %d) are not a non-empty part of %d rows", lo, hi, d.n)
	}
	part := &Dataset{names: d.names, sources: make(map[string]rowSource, len(d.sources)), n: hi - lo}
	for name, s := range d.sources {
		part.sources[name] = rowRange{rowSource: s, lo: lo, n: hi - lo}
	}
	return part, nil
}
