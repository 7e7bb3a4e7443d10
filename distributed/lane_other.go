//go:build !linux

package distributed

import (
	"syscall"
	"time"
)

// setUserTimeout: TCP_USER_TIMEOUT is Linux's; elsewhere keepalive and
// gRPC's own keepalive on the link's stream are what notice a dead peer.
func setUserTimeout(time.Duration) func(network, address string, c syscall.RawConn) error {
	return nil
}
