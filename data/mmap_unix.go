//go:build unix

package data

import (
	"os"
	"syscall"
)

// mapFile maps size bytes of f starting at off read-only and returns the
// whole mapping (for unmapFile) and the requested bytes within it. mmap
// wants a page-aligned offset, so the mapping may start up to a page
// earlier than off. The pages are shared with the page cache, so opening a
// large channel file costs no copy and only the rows a batch touches are
// ever read from disk.
func mapFile(f *os.File, off int64, size int) (mapping, data []byte, err error) {
	page := int64(os.Getpagesize())
	start := off - off%page
	m, err := syscall.Mmap(int(f.Fd()), start, size+int(off-start), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	// Batches gather rows in shuffled order: the kernel's readahead around
	// each fault would read pages no batch asked for, and on a file larger
	// than memory it evicts the rows (and code) in use, thrashing. Advice
	// only; ignore failure.
	adviseRandom(m)
	return m, m[off-start:], nil
}

func unmapFile(b []byte) error { return syscall.Munmap(b) }

// mmapped says whether arrays are memory-mapped (and so can fault).
const mmapped = true
