//go:build unix && !linux

package data

// adviseRandom is a no-op where package syscall has no Madvise (darwin).
func adviseRandom([]byte) {}

// adviseWillNeed is a no-op here (see madvise_linux.go).
func adviseWillNeed([]byte) {}

// residency says every page is in memory where it is not asked.
func residency([]byte) ([]byte, int) { return nil, 0 }
