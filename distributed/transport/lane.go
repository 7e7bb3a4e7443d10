package transport

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/sagefit/sagefit/distributed"
)

// The data lane. gRPC carries the rendezvous, the handshake, aborts, the
// stream status that says why a host left, and the liveness of each link
// (keepalive); the collectives' chunks travel beside it on one plain TCP
// connection per link, opened right after the handshake with a one-time
// token the handshake reply hands out.
//
// Why: on loopback a chunk sent through grpc-go is copied into HTTP/2
// frames, out of the read buffer into pooled frame buffers and from those
// into one payload, and those copies, not the network, bound the ring at
// about a quarter of what plain TCP moves (distributed/BENCHMARKS.md). On
// the lane a payload goes to the socket with one writev and comes off it
// straight into the buffer the ring sums into. A lane is owned by its
// link: whatever ends the link closes the lane, and a lane that breaks
// ends the link.
//
// Wire: the client writes laneMagic and the token, then frames of an
// 8-byte prefix (laneFrameMagic, payload length, both uint32 little-endian),
// the 48-byte message header and the payload.
const (
	laneMagic      = "SGFLANE1"
	laneTokenBytes = 16
	laneFrameMagic = 0x4c464753 // "SGFL"
	lanePrefix     = 8
	laneWait       = 10 * time.Second // for the lane to follow its handshake
	laneReadBuf    = 64 << 10
)

// laneOffer travels in the handshake reply: where to open the lane and the
// token that proves the connection belongs to this handshake.
type laneOffer struct {
	Port  int    `json:"port"`
	Token string `json:"token"`
}

// An idle lane probes its peer after 2 s of silence (every second, 3
// unanswered end it). No TCP_USER_TIMEOUT: since Linux 5.11 it also aborts
// a connection whose receiver keeps a zero window, which a healthy rank
// that starts a collective a few seconds after its predecessor does. A
// writer blocked on a peer that is gone is freed when the link's gRPC
// stream fails its keepalive (die closes the lane), or by the op timeout.
var laneKeepAlive = net.KeepAliveConfig{Enable: true, Idle: 2 * time.Second, Interval: time.Second, Count: 3}

// listenLane opens the lane listener on the gRPC listener's address, any
// port. It is announced in each handshake reply, so no second well-known
// port has to be agreed on.
func (t *grpcTransport) listenLane(grpcLis net.Listener) error {
	host := ""
	if a, ok := grpcLis.Addr().(*net.TCPAddr); ok && !a.IP.IsUnspecified() {
		host = a.IP.String()
	}
	lc := net.ListenConfig{KeepAliveConfig: laneKeepAlive}
	lis, err := lc.Listen(context.Background(), "tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return fmt.Errorf("data lane listener: %w", err)
	}
	t.laneLis = lis
	t.rv.laneConns = make(chan net.Conn, 1)
	t.wg.Add(1)
	go t.acceptLanes()
	return nil
}

func (t *grpcTransport) acceptLanes() {
	defer t.wg.Done()
	for {
		conn, err := t.laneLis.Accept()
		if err != nil {
			return // closed by shutdown
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			stop := context.AfterFunc(t.ctx, func() { conn.Close() })
			defer stop()
			if !t.admitLane(conn) {
				conn.Close()
			}
		}()
	}
}

// admitLane checks a lane connection's address and token and hands it to
// the handshake waiting for it.
func (t *grpcTransport) admitLane(conn net.Conn) bool {
	if !t.allow.allows(t.ctx, conn.RemoteAddr()) {
		t.logf("distributed: rank %d: refused data connection from %s: not an address of any host in job %q", t.rank, conn.RemoteAddr(), t.id.Job)
		return false
	}
	var pre [len(laneMagic) + laneTokenBytes]byte
	conn.SetReadDeadline(time.Now().Add(laneWait))
	magic, token := pre[:len(laneMagic)], pre[len(laneMagic):]
	if _, err := io.ReadFull(conn, magic); err != nil || string(magic) != laneMagic {
		return false // not a lane: closed at once
	}
	if _, err := io.ReadFull(conn, token); err != nil {
		return false
	}
	conn.SetReadDeadline(time.Time{})
	rv := &t.rv
	rv.mu.Lock()
	defer rv.mu.Unlock()
	if rv.laneToken == "" || subtle.ConstantTimeCompare([]byte(hex.EncodeToString(token)), []byte(rv.laneToken)) != 1 {
		t.logf("distributed: rank %d: refused data connection from %s: no handshake gave out its token", t.rank, conn.RemoteAddr())
		return false
	}
	// One use; handed over under rv.mu, so endLaneWait finds it if its
	// handshake gave up meanwhile. The channel holds one: a token admits
	// one connection, and endLaneWait empties it before the next token.
	rv.laneToken = ""
	select {
	case rv.laneConns <- conn:
		return true
	default:
		return false
	}
}

// endLaneWait ends a handshake's wait for its lane (rv.mu held): the token
// is void, and a lane admitted after the wait gave up is closed.
func (rv *rendezvous) endLaneWait() {
	rv.inPending, rv.laneToken = false, ""
	select {
	case conn := <-rv.laneConns:
		conn.Close()
	default:
	}
}

// offerLane makes the offer for the handshake in progress (rv.mu held).
func (t *grpcTransport) offerLane() *laneOffer {
	var tok [laneTokenBytes]byte
	rand.Read(tok[:])
	t.rv.laneToken = hex.EncodeToString(tok[:])
	return &laneOffer{Port: t.laneLis.Addr().(*net.TCPAddr).Port, Token: t.rv.laneToken}
}

// awaitLane waits for the client of the handshake just answered to open
// its lane.
func (t *grpcTransport) awaitLane(ctx context.Context) (net.Conn, error) {
	timer := time.NewTimer(laneWait)
	defer timer.Stop()
	select {
	case conn := <-t.rv.laneConns:
		return conn, nil
	case <-timer.C:
		return nil, fmt.Errorf("no data connection within %v of the handshake", laneWait)
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.rv.leaving:
		return nil, distributed.ErrClosed
	}
}

// dialLane opens the lane the next rank offered, at its host's address.
func (t *grpcTransport) dialLane(ctx context.Context, offer laneOffer) (net.Conn, error) {
	host, _, err := net.SplitHostPort(t.addrs[t.next])
	if err != nil {
		return nil, err
	}
	tok, err := hex.DecodeString(offer.Token)
	if err != nil || len(tok) != laneTokenBytes {
		return nil, errors.New("bad data lane token in the handshake reply")
	}
	d := net.Dialer{KeepAliveConfig: laneKeepAlive}
	if t.localIP != nil {
		d.LocalAddr = &net.TCPAddr{IP: t.localIP}
	}
	ctx, cancel := context.WithTimeout(ctx, laneWait)
	defer cancel()
	addr := net.JoinHostPort(host, strconv.Itoa(offer.Port))
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("data connection to %s: %w", addr, err)
	}
	conn.SetWriteDeadline(time.Now().Add(laneWait))
	_, err = conn.Write(append([]byte(laneMagic), tok...))
	conn.SetWriteDeadline(time.Time{})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("data connection to %s: %w", addr, err)
	}
	return conn, nil
}

// writeLaneFrame writes m with one writev; the payload is not copied.
func writeLaneFrame(conn net.Conn, m *distributed.Message) error {
	var hdr [lanePrefix + headerSize]byte
	binary.LittleEndian.PutUint32(hdr[0:], laneFrameMagic)
	binary.LittleEndian.PutUint32(hdr[4:], uint32(len(m.Payload)))
	appendHeader(hdr[:lanePrefix], m)
	return writeFrame(conn, hdr[:], m.Payload)
}

// readLane moves frames from an in-link's lane into its queue until the
// lane ends. Each payload is read straight into where the Group's
// placement says it belongs, or else into a pooled buffer.
func (t *grpcTransport) readLane(ctx context.Context, l *inLink, maxPayload int, streamDone <-chan struct{}) {
	r := bufio.NewReaderSize(l.lane, laneReadBuf)
	protocol := func(err error) error { return &laneProtocolError{err} }
	var hdr [lanePrefix + headerSize]byte
	for {
		var m distributed.Message
		err := func() error {
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				return err
			}
			n := int(binary.LittleEndian.Uint32(hdr[4:]))
			if binary.LittleEndian.Uint32(hdr[0:]) != laneFrameMagic || decodeFrame(hdr[lanePrefix:], &m) != nil {
				return protocol(errBadFrame)
			}
			if n > maxPayload {
				return protocol(fmt.Errorf("a frame of %d bytes, more than the %d a chunk can be (every host must run the same sagefit build and settings)", n, maxPayload))
			}
			if n == 0 {
				return nil
			}
			if place := t.data.placement.Load(); place != nil {
				m.Payload = (*place)(&m, n) // straight into the caller's buffer
			}
			if m.Payload == nil {
				m.Payload = distributed.AllocPayload(n)
			}
			if _, err := io.ReadFull(r, m.Payload); err != nil {
				if err == io.EOF {
					return io.ErrUnexpectedEOF // a frame cut short is no orderly close
				}
				return err
			}
			return nil
		}()
		if err == io.EOF {
			// An orderly close: the sender ends its stream right after, and
			// an abort it sent on the stream must not lose the race to this.
			return
		}
		if err != nil {
			var pe *laneProtocolError
			if errors.As(err, &pe) {
				l.die(fmt.Errorf("data lane: %w", pe.err))
			} else {
				// A sender that leaves says why on the stream first (an
				// abort): let that reach the queue before the link dies.
				select {
				case <-streamDone:
				case <-time.After(time.Second):
				}
				l.die(fmt.Errorf("connection lost (the sender crashed or the network failed): %w", err))
			}
			t.postFatal(t.prev, l.err)
			return
		}
		if !l.deliver(ctx, m) {
			return
		}
	}
}

// laneProtocolError is a lane frame that breaks the protocol, as opposed
// to a connection that broke.
type laneProtocolError struct{ err error }

func (e *laneProtocolError) Error() string { return e.err.Error() }
