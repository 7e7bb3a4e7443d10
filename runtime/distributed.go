package runtime

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"

	"github.com/sagefit/sagefit/distributed"
)

// joinGRPC forms the job's ring over gRPC: it waits for late hosts (up to
// the connect timeout) and checks every host loaded the same model.
// listenFD, when set, is the inherited socket this process listens on (a
// worker of a host's launcher, see launch.go).
func joinGRPC(ctx context.Context, j *Job, fingerprint, hostAddrs, listenFD string, log io.Writer) (Group, error) {
	addrs, err := distributed.ParseHostAddrs(hostAddrs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", distributed.EnvHostAddrs, err)
	}
	var lis net.Listener
	if listenFD != "" {
		fd, err := strconv.Atoi(listenFD)
		if err != nil {
			return nil, fmt.Errorf("%s=%q: not a file descriptor", envListenFD, listenFD)
		}
		f := os.NewFile(uintptr(fd), "ring listener")
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
	g, err := distributed.Join(ctx, distributed.Config{
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
		Logf: func(format string, args ...any) {
			fmt.Fprintf(log, "sagefit: "+format+"\n", args...)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("join hosts %v: %w", j.Env.Hosts, err)
	}
	return g, nil
}
