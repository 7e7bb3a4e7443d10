package launch

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/sagefit/sagefit/runtime/job"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// TestHostSocketsHoldThePort: the sockets of a local job's hosts are bound
// on one port before any host starts, and held: another process asking for
// that port on any host's address is refused (the CI flake this fixed was a
// port probed, let go and taken before the host bound it). A peer dialling
// a host not up yet is refused, not queued; once the host listens on the
// socket it inherited, the dial connects.
func TestHostSocketsHoldThePort(t *testing.T) {
	files, port, err := HostSockets(3)
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
	for i := range files {
		addr := fmt.Sprintf("127.0.0.%d:%d", i+1, port)
		if l, err := net.Listen("tcp", addr); err == nil {
			l.Close()
			t.Errorf("%s could be bound again while the launcher holds it", addr)
		}
		if c, err := net.Dial("tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
			if c != nil {
				c.Close()
			}
			t.Errorf("dial %s before its host listens: %v, want connection refused", addr, err)
		}
	}
	// Host 2 starts: it listens on the socket it inherited (here a copy of
	// the descriptor, which f then owns).
	fd, err := syscall.Dup(int(files[1].Fd()))
	if err != nil {
		t.Fatal(err)
	}
	f, err := ListenInherited([]string{EnvListenFD + "=" + strconv.Itoa(fd)})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := fmt.Sprintf("127.0.0.2:%d", port)
	if got := l.Addr().String(); got != addr {
		t.Errorf("host 2 listens on %s, want %s", got, addr)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s once its host listens: %v", addr, err)
	}
	c.Close()
	if _, _, err := HostSockets(256); err == nil {
		t.Error("256 hosts given sockets; 127.0.0.x stops at 255")
	}
}

// The launcher reads the peer timeout as the hosts read it (the job's own
// duration parser), so it waits for them as long as they wait for a peer.
func TestPeerTimeoutReadAsTheHostsReadIt(t *testing.T) {
	for text, want := range map[string]time.Duration{
		"30s": 30 * time.Second, "90": 90 * time.Second, `"1m"`: time.Minute, "0.5": 500 * time.Millisecond,
		"": job.DefaultPeerTimeout, "soon": job.DefaultPeerTimeout, "-5s": job.DefaultPeerTimeout,
	} {
		if got := peerTimeout(jobWith(t, job.HPPeerTimeout, text), nil); got != want {
			t.Errorf("peerTimeout with %q = %v, want %v", text, got, want)
		}
	}
	// An SM_HP_ variable the hosts inherit wins over hyperparameters.json,
	// for the launcher as for them.
	if got := peerTimeout(jobWith(t, job.HPPeerTimeout, "30s"), []string{"SM_HP_SAGEFIT_PEER_TIMEOUT=300s"}); got != 300*time.Second {
		t.Errorf("peerTimeout with SM_HP_SAGEFIT_PEER_TIMEOUT=300s = %v, want 5m0s", got)
	}
}

// jobWith lays out a local job's base folder whose hyperparameter name is
// text ("": not given).
func jobWith(t *testing.T, name, text string) string {
	t.Helper()
	hps := map[string]string{}
	if text != "" {
		hps[name] = text
	}
	base := t.TempDir()
	if err := sagemaker.WriteLocal(base, sagemaker.LocalSpec{Hyperparameters: hps}); err != nil {
		t.Fatal(err)
	}
	return base
}
