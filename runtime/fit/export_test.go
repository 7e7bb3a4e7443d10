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
// both ways again (one process: at least min, and factor times its own
// span; several: calls train steps), for a test; the returned func puts
// them back.
func SetInlineReprobe(min time.Duration, factor, calls int) (restore func()) {
	oldMin, oldFactor, oldCalls := inlineReprobeMin, inlineReprobeFactor, inlineReprobeCalls
	inlineReprobeMin, inlineReprobeFactor, inlineReprobeCalls = min, time.Duration(factor), calls
	return func() { inlineReprobeMin, inlineReprobeFactor, inlineReprobeCalls = oldMin, oldFactor, oldCalls }
}
