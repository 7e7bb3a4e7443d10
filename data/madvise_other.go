//go:build unix && !linux

package data

// adviseRandom is a no-op where package syscall has no Madvise (darwin).
func adviseRandom([]byte) {}

// adviseWillNeed is a no-op here (see madvise_linux.go).
func adviseWillNeed([]byte) {}

// residency: not asked here (nil, as where the kernel cannot say).
func residency([]byte) []byte { return nil }
