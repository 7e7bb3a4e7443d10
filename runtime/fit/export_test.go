package fit

import "time"

// SetBlockBytes lowers "auto"'s bound on a block's bytes for a test; the
// returned func puts it back.
func SetBlockBytes(n int) (restore func()) {
	old := blockBytes
	blockBytes = n
	return func() { blockBytes = old }
}

// SetInlineReprobe sets how long the inline probe waits before timing
// both ways again (at least min, and factor times its own span), for a
// test; the returned func puts them back.
func SetInlineReprobe(min time.Duration, factor int) (restore func()) {
	oldMin, oldFactor := inlineReprobeMin, inlineReprobeFactor
	inlineReprobeMin, inlineReprobeFactor = min, time.Duration(factor)
	return func() { inlineReprobeMin, inlineReprobeFactor = oldMin, oldFactor }
}
