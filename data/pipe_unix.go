//go:build unix

package data

import (
	"context"
	"os"
	"syscall"
	"time"
)

// openReader opens path for reading. For a FIFO, open blocks until a
// writer opens the other end, and a blocked open cannot be interrupted, so
// it runs in a goroutine that is abandoned when ctx ends first. The
// abandoned open is then released by opening the FIFO for writing without
// blocking (the waiting reader lets that succeed) and closing it at once;
// whatever the open returns is closed.
func openReader(ctx context.Context, path string) (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	res := make(chan result, 1)
	go func() {
		f, err := os.OpenFile(path, os.O_RDONLY, 0)
		res <- result{f, err}
	}()
	select {
	case r := <-res:
		return r.f, r.err
	case <-ctx.Done():
	}
	go func() {
		// The open may not have reached the kernel yet, in which case the
		// writer's open fails (no reader): try again for a while.
		wait := time.Millisecond
		deadline := time.Now().Add(10 * time.Second)
		for {
			if w, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				w.Close()
			}
			t := time.NewTimer(wait)
			select {
			case r := <-res:
				t.Stop()
				if r.f != nil {
					r.f.Close()
				}
				return
			case <-t.C:
			}
			if time.Now().After(deadline) {
				return // the FIFO is gone; the open stays blocked until exit
			}
			wait = min(2*wait, 100*time.Millisecond)
		}
	}()
	return nil, ctx.Err()
}
