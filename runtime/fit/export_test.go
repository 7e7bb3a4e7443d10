package fit

// SetBlockBytes lowers "auto"'s bound on a block's bytes for a test; the
// returned func puts it back.
func SetBlockBytes(n int) (restore func()) {
	old := blockBytes
	blockBytes = n
	return func() { blockBytes = old }
}
