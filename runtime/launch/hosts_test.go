package launch

import (
	"fmt"
	"net"
	"testing"
)

// TestHostListenersHoldThePort: the sockets of a local job's hosts are
// bound on one port before any host starts, and held: another process
// asking for that port on any host's address is refused (the CI flake this
// fixed was a second job taking a port the first had probed and let go).
func TestHostListenersHoldThePort(t *testing.T) {
	files, port, err := HostListeners(3)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if len(files) != 3 {
		t.Fatalf("%d sockets for 3 hosts", len(files))
	}
	for i, f := range files {
		l, err := net.FileListener(f)
		if err != nil {
			t.Fatalf("host %d: %v", i+1, err)
		}
		want := fmt.Sprintf("127.0.0.%d:%d", i+1, port)
		if got := l.Addr().String(); got != want {
			t.Errorf("host %d listens on %s, want %s", i+1, got, want)
		}
		l.Close()
		if l, err := net.Listen("tcp", want); err == nil {
			l.Close()
			t.Errorf("%s could be bound again while the launcher holds it", want)
		}
	}
}
