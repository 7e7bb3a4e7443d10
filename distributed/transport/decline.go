package transport

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// declineHold bounds how long a declining host waits for its neighbours:
// a runner that stops every host once one has failed (SageMaker, its local
// mode, `sagefit local`) waits for its exit, and neighbours that have not
// come within it may never come.
const declineHold = time.Minute

// Decline tells the job's other hosts that this host will not join, and
// why: a host that failed before it joined (a bad file in its own channel,
// say) left the others to wait out their connect timeout, then to fail in
// words about a host that never came. It serves on this host's address
// meanwhile, answering each host that connects with the reason, and gives
// both neighbours a farewell, which each passes on round the ring as a
// host stopped while joining does. It returns once both neighbours have
// the reason, or after declineHold (cfg.ConnectTimeout, if shorter), or
// when ctx ends; the error says who was not told. A host that comes after
// its neighbours have passed the reason on and left still waits out its
// connect timeout.
func Decline(ctx context.Context, cfg Config, reason error) error {
	rank, err := cfg.validate()
	if err != nil {
		return err
	}
	n := len(cfg.Hosts)
	if n == 1 {
		if cfg.Listener != nil {
			cfg.Listener.Close()
		}
		return nil
	}
	addrs := make([]string, n)
	for i, h := range cfg.Hosts {
		addrs[i] = cfg.addr(h)
	}
	why := fmt.Errorf("host %s failed before it joined: %w", cfg.Self, reason)
	t, err := newTransport(cfg, rank, addrs, why) // a host that connects gets the reason (acceptLink)
	if err != nil {
		return fmt.Errorf("distributed: tell job %s's hosts why %s does not join: %w", cfg.JobName, cfg.Self, err)
	}
	hold := min(cfg.ConnectTimeout, declineHold)
	cfg.Logf("distributed: %s failed before it joined job %s; telling the other hosts why (for at most %v)", cfg.Self, cfg.JobName, hold)
	hctx, cancel := context.WithTimeout(ctx, hold)
	defer cancel()
	neighbours := []int{t.next}
	if t.prev != t.next {
		neighbours = append(neighbours, t.prev)
	}
	answered := make([]bool, len(neighbours))
	var wg sync.WaitGroup
	for i, r := range neighbours {
		wg.Go(func() { answered[i] = t.farewell(hctx, r, why) })
	}
	wg.Wait()
	var untold []string
	for i, r := range neighbours {
		if !answered[i] && !t.rv.knows[r].Load() {
			untold = append(untold, fmt.Sprintf("rank %d (%s at %s)", r, cfg.Hosts[r], addrs[r]))
		}
	}
	for _, r := range neighbours {
		t.rv.markKnows(r) // told, or given up on: leave tries no farewell again
	}
	t.leave(why)
	switch {
	case len(untold) > 0 && ctx.Err() != nil:
		return fmt.Errorf("distributed: %s could not be told why %s does not join before this host was stopped", strings.Join(untold, " and "), cfg.Self)
	case len(untold) > 0:
		return fmt.Errorf("distributed: %s could not be told why %s does not join within %v", strings.Join(untold, " and "), cfg.Self, hold)
	}
	return nil
}
