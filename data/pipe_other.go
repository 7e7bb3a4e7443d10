//go:build !unix

package data

import (
	"context"
	"os"
)

// openReader opens path for reading; there are no FIFOs to wait on here.
func openReader(ctx context.Context, path string) (*os.File, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return os.Open(path)
}
