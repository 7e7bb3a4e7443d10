package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/sagefit/sagefit/distributed"
	"github.com/sagefit/sagefit/distributed/transport"
	"github.com/sagefit/sagefit/runtime/fit"
	"github.com/sagefit/sagefit/runtime/job"
	"github.com/sagefit/sagefit/runtime/launch"
	"github.com/sagefit/sagefit/runtime/sagemaker"
)

// finalWait bounds the final barrier: a host other than rank 0 that has
// finished (or failed) stays until rank 0 has written the model and the
// outputs and closed its end, so that SageMaker's local mode, which stops
// every container when the first one exits, and anything else that reads a
// host's exit as the job's end, never cuts rank 0 short. Rank 0 failing or
// gone ends the wait at once; the bound only covers a rank 0 that hangs.
const finalWait = 30 * time.Minute

// joinGRPC forms the job's ring over gRPC: it waits for late hosts (up to
// the connect timeout) and checks every host loaded the same model.
// environ may name the socket this process listens on, bound by its
// launcher (launch.EnvListenFD: a worker of a host's launcher, a host of
// `sagefit local --hosts`).
func joinGRPC(ctx context.Context, j *job.Job, fingerprint string, environ []string, log io.Writer) (fit.Group, error) {
	hostAddrs, _ := sagemaker.LookupEnv(environ, launch.EnvHostAddrs)
	addrs, err := transport.ParseHostAddrs(hostAddrs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", launch.EnvHostAddrs, err)
	}
	var lis net.Listener
	f, err := launch.ListenInherited(environ)
	if err != nil {
		return nil, err
	}
	if f != nil {
		lis, err = net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("the ring listener inherited from the launcher: %w", err)
		}
	}
	compression := distributed.NoCompression
	if j.CompressFP16 {
		compression = distributed.FP16
	}
	g, err := transport.Join(ctx, transport.Config{
		JobName:        j.Env.JobName,
		Hosts:          j.Env.Hosts,
		Self:           j.Env.CurrentHost,
		Addrs:          addrs,
		Fingerprint:    fingerprint,
		ConnectTimeout: j.ConnectTimeout,
		OpTimeout:      j.PeerTimeout,
		ChunkBytes:     j.ChunkBytes,
		Compression:    compression,
		DataOverGRPC:   j.DataOverGRPC,
		Listener:       lis,
		FinalWait:      finalWait,
		Logf: func(format string, args ...any) {
			fmt.Fprintf(log, "sagefit: "+format+"\n", args...)
		},
	})
	if err != nil {
		var stop *sagemaker.StopSignal
		if errors.As(context.Cause(ctx), &stop) {
			// SIGTERM while waiting for the others (a stop, a spot
			// interruption): that is the reason, not the handshake it cut.
			return nil, fmt.Errorf("while joining the job's %d hosts: %w", len(j.Env.Hosts), stop)
		}
		// Not the host list: with hundreds of hosts it would fill the 1024
		// characters SageMaker shows before the cause. The transport's
		// sentence names the host it concerns, abbreviates any list, and
		// logs the full one.
		return nil, fmt.Errorf("join the job's %d hosts: %w", len(j.Env.Hosts), err)
	}
	return g, nil
}
