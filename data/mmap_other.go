//go:build !unix

package data

import "os"

// mapFile reads the file into memory where mmap is not available.
func mapFile(f *os.File, size int) ([]byte, error) {
	b := make([]byte, size)
	_, err := f.ReadAt(b, 0)
	return b, err
}

func unmapFile([]byte) error { return nil }

// mmapped says whether arrays are memory-mapped (and so can fault).
const mmapped = false
