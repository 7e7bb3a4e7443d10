package transport

import (
	"context"
	"io"
	"time"

	"github.com/sagefit/sagefit/distributed"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
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
	select {
	case <-t.rv.leaving:
	case <-t.ctx.Done():
	case <-ctx.Done():
	}
	return nil
}

// awaitRank0 waits, at most finalWait, until rank 0 has closed its
// transport or is gone.
func (t *grpcTransport) awaitRank0() {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), t.finalWait)
	defer cancel()
	conn, err := grpc.NewClient("passthrough:///"+t.addrs[0], t.dialOptions()...)
	if err != nil {
		return
	}
	defer conn.Close()
	note := time.AfterFunc(lingerLogAfter, func() {
		t.logf("distributed: rank %d: waiting for rank 0 (%s) to finish the job's model and outputs before leaving (at most %v)", t.rank, t.addrs[0], t.finalWait)
	})
	defer note.Stop()
	h := t.id
	h.Linger = true
	err = linger(ctx, conn, h)
	switch {
	case ctx.Err() != nil:
		t.logf("distributed: rank %d: rank 0 (%s) had not finished after %v; leaving anyway", t.rank, t.addrs[0], t.finalWait)
	case err != nil && time.Since(start) > lingerLogAfter:
		// Not sooner: after a clean stop rank 0 has often closed before
		// this host dials, which refuses at once and means it is done.
		t.logf("distributed: rank %d: rank 0 (%s) is gone (%v); leaving", t.rank, t.addrs[0], err)
	}
}

// linger sends the hello and waits for the stream to end: nil when rank 0
// ended it (OK status), else how it failed (rank 0 unreachable or gone).
func linger(ctx context.Context, conn *grpc.ClientConn, h hello) error {
	stream, err := conn.NewStream(ctx, &ringServiceDesc.Streams[0], linkMethod)
	if err != nil {
		return err
	}
	if err := stream.SendMsg(h.message(0)); err != nil && err != io.EOF {
		return err
	}
	var m distributed.Message
	if err := stream.RecvMsg(&m); err != io.EOF {
		if err == nil {
			return status.Error(codes.Internal, "unexpected reply to a linger")
		}
		return err
	}
	return nil
}
