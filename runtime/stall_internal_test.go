package runtime

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sagefit/sagefit/distributed"
)

// A peer failure met before the ticker ran again after a freeze (the
// process woke, its op timed out, its ticker had not yet seen the gap) is
// explained as this host's stall; one met while ticks come is not.
func TestStallExplainedBeforeTheNextTick(t *testing.T) {
	w := watchStalls(time.Hour, time.Second) // no tick comes: the gap is pending
	defer w.close()
	failed := fmt.Errorf("all-reduce: %w", &distributed.PeerError{})
	if err := w.explain(failed, time.Second); err != failed {
		t.Errorf("no stall yet: %v", err)
	}
	w.mu.Lock()
	w.last = time.Now().Add(-3*time.Second - time.Hour) // frozen 3 s past the tick due
	w.mu.Unlock()
	if err := w.explain(failed, time.Second); !strings.Contains(fmt.Sprint(err), "this host did not run for 3s") {
		t.Errorf("a pending stall: %v", err)
	}
}
