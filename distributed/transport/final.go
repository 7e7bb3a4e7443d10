package transport

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/sagefit/sagefit/distributed"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// The final barrier (Config.FinalWait): no host leaves before rank 0 has
// closed its transport, which it does once the job's model and outputs are
// written. It is not a collective: a host closes when its part of the job
// ends, well or badly, and only then waits, after it has left the ring as
// before. Its neighbours see it leave at once, so a host that fails still
// ends every collective in progress within moments, and rank 0, failing
// too, closes and so ends the wait; a host that finished trains on nothing
// more, so rank 0 saving the model does not notice. The wait travels on a
// stream of its own to rank 0 (a hello with Linger set), which rank 0 ends
// when its shutdown starts; a rank 0 that is gone, or that cannot be
// reached, ends it too.

// lingerLogAfter is how long a host waits for rank 0 quietly before it
// says so in the log.
var lingerLogAfter = 5 * time.Second

// lingerHeld, when set (tests), is called once rank 0 has taken a host's
// wait.
var lingerHeld func()

// lingerHeader is the header rank 0 sends when it takes a host's wait.
const lingerHeader = "sagefit-linger"

// serveLinger holds a lingering host's stream until this transport shuts
// down (or the host gives up): the OK status it then gets says rank 0 is
// done. Only rank 0 holds them; only hosts of the job may ask.
func (t *grpcTransport) serveLinger(ctx context.Context, remote hello) error {
	if t.rankOf(remote.Host) < 0 {
		return status.Errorf(codes.PermissionDenied, "host %q is not in job %q", remote.Host, t.id.Job)
	}
	if t.rank != 0 {
		return status.Errorf(codes.FailedPrecondition, "rank %d is not rank 0", t.rank)
	}
	// Headers now: the host knows its wait is taken, so a stream that then
	// breaks is rank 0 lost, not rank 0 done and gone before it dialled.
	if err := grpc.SendHeader(ctx, metadata.Pairs(lingerHeader, "held")); err != nil {
		return err
	}
	select {
	case <-t.rv.leaving:
	case <-t.ctx.Done():
	case <-ctx.Done():
		// The host gave up, or its FinalWait passed (its deadline travels
		// with the stream and ends it here first): not an OK, which says
		// rank 0 is done and sometimes beat the host's own timer.
		return status.FromContextError(ctx.Err()).Err()
	}
	if why := t.failed.Load(); why != nil {
		return status.Error(codes.Aborted, (*why).Error())
	}
	return nil
}

// awaitRank0 waits, at most finalWait, until rank 0 has closed its
// transport or is gone. It returns an error where rank 0 was lost before
// it closed (the stream to it broke, or it went silent): the job's model
// and outputs may be missing, and this host must not end as if the job
// had succeeded. A rank 0 that cannot be reached at all is taken as done:
// after a clean end it has often closed before this host dials.
func (t *grpcTransport) awaitRank0() error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), t.finalWait)
	defer cancel()
	conn, err := grpc.NewClient("passthrough:///"+t.addrs[0], t.dialOptions()...)
	if err != nil {
		return nil
	}
	defer conn.Close()
	note := time.AfterFunc(lingerLogAfter, func() {
		t.logf("distributed: rank %d: waiting for rank 0 (%s) to finish the job's model and outputs before leaving (at most %v)", t.rank, t.addrs[0], t.finalWait)
	})
	defer note.Stop()
	h := t.id
	h.Linger = true
	waited, err := linger(ctx, conn, h)
	switch {
	case ctx.Err() != nil:
		t.logf("distributed: rank %d: rank 0 (%s) had not finished after %v; leaving anyway", t.rank, t.addrs[0], t.finalWait)
		return fmt.Errorf("rank 0 (%s) had not finished the job's model and outputs after %v", t.id.Hosts[0]+" at "+t.addrs[0], t.finalWait)
	case status.Code(err) == codes.Aborted: // taken, or refused as rank 0 shut down: it failed
		return fmt.Errorf("rank 0 (%s) failed after training: %s", t.id.Hosts[0], status.Convert(err).Message())
	case err != nil && waited:
		return fmt.Errorf("rank 0 (%s) was lost before it finished the job's model and outputs: %s", t.id.Hosts[0]+" at "+t.addrs[0], status.Convert(err).Message())
	case err != nil && time.Since(start) > lingerLogAfter:
		// Not sooner: after a clean stop rank 0 has often closed before
		// this host dials, which refuses at once and means it is done.
		t.logf("distributed: rank %d: rank 0 (%s) is gone (%v); leaving", t.rank, t.addrs[0], err)
	}
	return nil
}

// linger sends the hello and waits for the stream to end: nil when rank 0
// ended it (OK status), else how it failed (rank 0 unreachable or gone);
// waited says whether rank 0 had taken the hello (its stream was up), so
// that a failure is rank 0 lost while this host waited.
func linger(ctx context.Context, conn *grpc.ClientConn, h hello) (waited bool, err error) {
	stream, err := conn.NewStream(ctx, &ringServiceDesc.Streams[0], linkMethod)
	if err != nil {
		return false, err
	}
	if err := stream.SendMsg(h.message(0)); err != nil && err != io.EOF {
		return false, err
	}
	// Rank 0 answers a linger's headers at once (serveLinger). A stream it
	// ended without them (grpc-go's Header then gives no metadata and no
	// error) was refused before it was taken: rank 0 was shutting down as
	// the hello came, so it is done, not lost.
	md, err := stream.Header()
	if err != nil {
		return false, err
	}
	var m distributed.Message
	if len(md.Get(lingerHeader)) == 0 {
		if err := stream.RecvMsg(&m); err != io.EOF {
			return false, err
		}
		return false, nil
	}
	if lingerHeld != nil {
		lingerHeld()
	}
	if err := stream.RecvMsg(&m); err != io.EOF {
		if err == nil {
			return true, status.Error(codes.Internal, "unexpected reply to a linger")
		}
		return true, err
	}
	return true, nil
}
