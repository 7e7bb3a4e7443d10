package data

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// adviseRandom tells the kernel that m is read in random order.
func adviseRandom(m []byte) { _ = unix.Madvise(m, unix.MADV_RANDOM) }

// adviseWillNeed asks the kernel to read m's pages now, in the background:
// the reads are queued together and the call returns without waiting for
// them. Advice only; failure is ignored.
func adviseWillNeed(m []byte) { _ = unix.Madvise(m, unix.MADV_WILLNEED) }

// resident reports whether every page of the mapping m is in memory (true
// where the kernel cannot say).
func resident(m []byte) bool {
	page := os.Getpagesize()
	if len(m) == 0 {
		return true
	}
	vec := make([]byte, (len(m)+page-1)/page)
	// x/sys/unix has no Mincore for Linux.
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		return true
	}
	for _, v := range vec {
		if v&1 == 0 {
			return false
		}
	}
	return true
}
