package transport

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDeclineEndsTheOthersJoin: a host that fails before it joins tells
// the others why, whether they are joining already or come later; they
// fail at once with its reason, not at their connect timeout with words
// about a host that never came.
func TestDeclineEndsTheOthersJoin(t *testing.T) {
	for _, c := range []struct {
		name   string
		n      int
		others time.Duration // the others start this long after the decline
	}{
		{"others joining already", 3, -500 * time.Millisecond},
		{"others come later", 3, 1500 * time.Millisecond},
		// Its farewells are in gRPC's reconnect backoff (up to 3 s) when
		// the others dial it: they get the reason from its server.
		{"others come much later", 3, 5 * time.Second},
		{"passed round the ring", 5, -500 * time.Millisecond}, // ranks 3 and 4 are no neighbours of rank 1
	} {
		t.Run(c.name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			cfgs := loopbackConfigs(t, c.n, "job-decline")
			for r := range cfgs {
				cfgs[r].ConnectTimeout = 60 * time.Second
			}
			cfgs[1].Fingerprint = "" // its model did not load (a mismatch went round the ring)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			start := time.Now()
			var declined error
			var wg sync.WaitGroup
			wg.Go(func() {
				time.Sleep(max(0, -c.others))
				declined = Decline(ctx, cfgs[1], errors.New("channel training: train.npy is no .npy file"))
			})
			errs := make([]error, c.n)
			for r := range c.n {
				if r == 1 {
					continue
				}
				wg.Go(func() {
					time.Sleep(max(0, c.others))
					_, errs[r] = Join(ctx, cfgs[r])
				})
			}
			wg.Wait()
			if declined != nil {
				t.Errorf("Decline: %v", declined)
			}
			for r := range c.n {
				if r == 1 {
					continue
				}
				t.Logf("rank %d: %v", r, errs[r])
				if errs[r] == nil || !strings.Contains(errs[r].Error(), "host algo-2 failed before it joined: channel training: train.npy is no .npy file") {
					t.Errorf("rank %d: Join = %v, want algo-2's reason", r, errs[r])
				}
			}
			if d := time.Since(start); d > 30*time.Second {
				t.Errorf("the job ended after %v; the connect timeout is %v", d, cfgs[0].ConnectTimeout)
			}
			expectNoLeak(t, before)
		})
	}
}

// TestDeclineBounded: neighbours that never come hold a declining host for
// the connect timeout at most, and its error names them.
func TestDeclineBounded(t *testing.T) {
	before := runtime.NumGoroutine()
	cfgs := loopbackConfigs(t, 3, "job-decline-alone")
	cfgs[1].ConnectTimeout = time.Second
	for _, r := range []int{0, 2} {
		cfgs[r].Listener.Close() // hosts that never listen
	}
	start := time.Now()
	err := Decline(context.Background(), cfgs[1], errors.New("no data"))
	if err == nil || !strings.Contains(err.Error(), "rank 2 (algo-3 at ") || !strings.Contains(err.Error(), "rank 0 (algo-1 at ") ||
		!strings.Contains(err.Error(), "could not be told why algo-2 does not join within 1s") {
		t.Errorf("Decline = %v, want both neighbours named", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Decline took %v with a connect timeout of 1 s", d)
	}
	expectNoLeak(t, before)
}
