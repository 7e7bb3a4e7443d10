//go:build unix && !linux

package data

// adviseRandom is a no-op where package syscall has no Madvise (darwin).
func adviseRandom([]byte) {}
