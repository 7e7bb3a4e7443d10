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

// residency is mincore's answer for the mapping m: a byte per page, bit 0
// set where the page is in memory; nil where the kernel cannot say.
func residency(m []byte) []byte {
	if len(m) == 0 {
		return nil
	}
	page := os.Getpagesize()
	vec := make([]byte, (len(m)+page-1)/page)
	// x/sys/unix has no Mincore for Linux.
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		return nil
	}
	return vec
}
