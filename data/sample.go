package data

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
)

// Sample is a short digest of the dataset's values: its row count and, of
// each tensor, the first row of its first file and the last row of its
// last, as stored. Datasets of the same rows and other values (another
// draw, another version) almost always differ in it, and it reads two rows
// a tensor (on a FastFile channel, two requests), not the data.
func (d *Dataset) Sample() (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%d rows\n", d.n)
	for _, name := range slices.Sorted(slices.Values(d.Names())) {
		arrays := d.Arrays(name)
		if len(arrays) == 0 {
			continue
		}
		last := arrays[len(arrays)-1]
		for _, at := range []struct {
			a   *Array
			row int
		}{{arrays[0], 0}, {last, last.Len() - 1}} {
			if at.row < 0 || at.a.Len() == 0 {
				continue
			}
			row := make([]byte, at.a.RowElems()*at.a.itemSizeAs(at.a.DType()))
			if err := at.a.Gather(row, at.a.DType(), []int{at.row}); err != nil {
				return "", err
			}
			fmt.Fprintf(h, "%s %s %v row %d\n", name, at.a.DType(), at.a.RowShape(), at.row)
			h.Write(row)
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:8]), nil
}
