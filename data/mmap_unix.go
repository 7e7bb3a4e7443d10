//go:build unix

package data

import (
	"os"
	"syscall"
)

// mapFile maps the first size bytes of f read-only. The pages are shared
// with the page cache, so opening a large channel file costs no copy and
// only the rows a batch touches are ever read from disk.
func mapFile(f *os.File, size int) ([]byte, error) {
	return syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
}

func unmapFile(b []byte) error { return syscall.Munmap(b) }

// mmapped says whether arrays are memory-mapped (and so can fault).
const mmapped = true
