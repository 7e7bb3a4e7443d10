//go:build !linux

package fit

import "time"

// processStart is unknown here: timing counts from Go's init.
func processStart() (time.Time, bool) { return time.Time{}, false }
