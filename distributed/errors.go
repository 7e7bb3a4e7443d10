package distributed

import (
	"errors"
	"fmt"
	"strings"
)

// ErrClosed is returned by collectives on a closed Group or Transport.
var ErrClosed = errors.New("distributed: group closed")

// PeerError is how every peer failure surfaces: which peer, how to find it,
// which collective and where in it, and what went wrong. Err wraps the cause
// (context.DeadlineExceeded for a peer that went silent, the transport's
// error for a broken connection, *RemoteFailure when another rank saw the
// failure first).
type PeerError struct {
	Rank int    // the peer that failed or went silent
	Peer string // e.g. "algo-2 at 10.0.0.2:7001"; empty when unknown
	Op   string // e.g. "all-reduce #12"; empty outside a collective
	At   string // e.g. "reduce-scatter step 1 chunk 3"
	Err  error
}

func (e *PeerError) Error() string {
	var b strings.Builder
	b.WriteString("distributed: ")
	if e.Op != "" {
		b.WriteString(e.Op)
		if e.At != "" {
			b.WriteString(" at ")
			b.WriteString(e.At)
		}
		b.WriteString(": ")
	}
	fmt.Fprintf(&b, "rank %d", e.Rank)
	if e.Peer != "" {
		fmt.Fprintf(&b, " (%s)", e.Peer)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *PeerError) Unwrap() error { return e.Err }

// RemoteFailure is the cause in a PeerError when this rank learned of the
// failure from another rank: failures travel round the ring so that ranks
// not adjacent to the lost peer still name it instead of timing out on an
// innocent neighbour.
type RemoteFailure struct {
	ReportedBy int    // the rank that detected the failure
	Text       string // its error text
	Mismatch   bool   // the ranks disagree (see MismatchError) rather than one failed
}

func (e *RemoteFailure) Error() string {
	return fmt.Sprintf("reported by rank %d: %s", e.ReportedBy, e.Text)
}

// Unwrap exposes a remote disagreement as a *MismatchError.
func (e *RemoteFailure) Unwrap() error {
	if e.Mismatch {
		return &MismatchError{Text: e.Text}
	}
	return nil
}

// MismatchError reports that ranks disagree about a collective (buffer
// lengths, order of calls, ChunkBytes, compression) or about the job
// (fingerprint, host list): a bug or misconfiguration, not a network
// failure, so retrying cannot help. Test with errors.As.
type MismatchError struct {
	Text string // one sentence for the person who configured the job
}

func (e *MismatchError) Error() string { return e.Text }
