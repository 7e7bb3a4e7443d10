package runtime

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sagefit/sagefit/distributed"
	"github.com/sagefit/sagefit/runtime/job"
)

// stallWatch notes the last long time this process did not run (stopped
// by SIGSTOP, its machine paused or starved): a host frozen past the peer
// timeout woke to find its peers had closed their links and blamed one of
// them, alive and right (a probe).
type stallWatch struct {
	tick  time.Duration
	mu    sync.Mutex
	gap   time.Duration // the last gap of at least the threshold
	ended time.Time     // when that gap ended
	last  time.Time     // the last tick
	done  chan struct{}
}

// watchStalls ticks every tick and keeps the last gap between ticks of at
// least threshold, until close.
func watchStalls(tick, threshold time.Duration) *stallWatch {
	w := &stallWatch{tick: tick, last: time.Now(), done: make(chan struct{})}
	go func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-w.done:
				return
			case <-t.C:
			}
			now := time.Now()
			w.mu.Lock()
			if gap := now.Sub(w.last) - tick; gap >= threshold {
				w.gap, w.ended = gap, now
			}
			w.last = now
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *stallWatch) close() { close(w.done) }

// explain says that this host itself stalled where failed is a peer's
// failure that came within peerTimeout of a stall of at least that long:
// the peers ended the job on this host's silence, and what this host then
// found (a link closed, a peer silent) was their leaving.
func (w *stallWatch) explain(failed error, peerTimeout time.Duration) error {
	if pe := (*distributed.PeerError)(nil); !errors.As(failed, &pe) {
		return failed
	}
	w.mu.Lock()
	gap, ended := w.gap, w.ended
	// A process that wakes may meet its peers' failure before its ticker
	// runs again: the gap since the last tick is a stall too (the frozen
	// host of a test blamed a live peer so, now and then).
	if pending := time.Since(w.last) - w.tick; pending >= peerTimeout {
		gap, ended = pending, time.Now()
	}
	w.mu.Unlock()
	if gap < peerTimeout || time.Since(ended) > peerTimeout {
		return failed
	}
	return fmt.Errorf("this host did not run for %v (its process stopped, or its machine paused or starved it), longer than %q (%v), so the other hosts ended the job without it; then: %w",
		gap.Round(100*time.Millisecond), job.HPPeerTimeout, peerTimeout, failed)
}
