//go:build !unix

package data

import "os"

// mapFile reads size bytes of f at off into memory where mmap is not
// available.
func mapFile(f *os.File, off int64, size int) (mapping, data []byte, err error) {
	b := make([]byte, size)
	if _, err := f.ReadAt(b, off); err != nil {
		return nil, nil, err
	}
	return nil, b, nil
}

func unmapFile([]byte) error { return nil }

// mmapped says whether arrays are memory-mapped (and so can fault).
const mmapped = false

// residency: the data is read into memory here (nil: not asked).
func residency([]byte) []byte { return nil }

func adviseWillNeed([]byte) {}
