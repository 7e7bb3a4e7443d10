package runtime

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sagefit/sagefit/distributed"
	"github.com/sagefit/sagefit/distributed/transport"
	"github.com/sagefit/sagefit/internal/hostlist"
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
	cfg, err := ringConfig(j, fingerprint, environ, log)
	if err != nil {
		return nil, err
	}
	g, err := transport.Join(ctx, cfg)
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

// ringConfig is the transport's configuration for this host of j's job:
// the hosts' addresses (a launcher's, or SageMaker's names), the socket a
// launcher bound for it, the job's timeouts and wire settings.
func ringConfig(j *job.Job, fingerprint string, environ []string, log io.Writer) (transport.Config, error) {
	hostAddrs, _ := sagemaker.LookupEnv(environ, launch.EnvHostAddrs)
	addrs, err := transport.ParseHostAddrs(hostAddrs)
	if err != nil {
		return transport.Config{}, fmt.Errorf("%s: %w", launch.EnvHostAddrs, err)
	}
	var lis net.Listener
	f, err := launch.ListenInherited(environ)
	if err != nil {
		return transport.Config{}, err
	}
	if f != nil {
		lis, err = net.FileListener(f)
		f.Close()
		if err != nil {
			return transport.Config{}, fmt.Errorf("the ring listener inherited from the launcher: %w", err)
		}
	}
	compression := distributed.NoCompression
	if j.CompressFP16 {
		compression = distributed.FP16
	}
	var logMu sync.Mutex
	return transport.Config{
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
			logMu.Lock() // called from the transport's goroutines at once
			defer logMu.Unlock()
			fmt.Fprintf(log, "sagefit: "+format+"\n", args...)
		},
	}, nil
}

// notJoined is the failure of a host of several before it joined the
// others, who are told why (declineJoin) once the failure file is written.
type notJoined struct {
	err error
	job *job.Job
}

func (e *notJoined) Error() string { return e.err.Error() }
func (e *notJoined) Unwrap() error { return e.err }

// declineJoin tells the job's other hosts why this host does not join
// (transport.Decline, which bounds the wait and says so in the log).
func declineJoin(ctx context.Context, j *job.Job, environ []string, log io.Writer, reason error) {
	cfg, err := ringConfig(j, "", environ, log)
	if err == nil {
		err = transport.Decline(ctx, cfg, reason)
	}
	if err != nil {
		fmt.Fprintf(log, "sagefit: warning: the job's other hosts were not told why this host does not join: %v\n", err)
	}
}

// jobConfig is what every host of a job is given alike: SageMaker writes
// one hyperparameters.json for all of them, and the channels the job reads
// (a heterogeneous cluster may give other channels to some groups only).
type jobConfig struct {
	Hyperparameters map[string]string           `json:"hyperparameters"` // each value as JSON, or its text (NaN has no JSON)
	Channels        map[string]jobConfigChannel `json:"channels"`
}

type jobConfigChannel struct {
	InputMode    sagemaker.InputMode    `json:"input_mode"`
	Distribution sagemaker.Distribution `json:"distribution"`
	ContentType  string                 `json:"content_type"`
}

func configOf(j *job.Job) jobConfig {
	c := jobConfig{Hyperparameters: map[string]string{}, Channels: map[string]jobConfigChannel{}}
	for k, v := range j.Env.Hyperparameters {
		text, err := json.Marshal(v)
		if err != nil {
			text = []byte(fmt.Sprint(v))
		}
		c.Hyperparameters[k] = string(text)
	}
	read := []string{j.ModelChannel, j.TrainChannel.Name}
	if j.ValChannel != nil {
		read = append(read, j.ValChannel.Name)
	}
	for _, name := range read {
		if ch, ok := j.Env.Channels[name]; ok && name != "" {
			c.Channels[name] = jobConfigChannel{ch.InputMode, ch.Distribution, ch.ContentType}
		}
	}
	return c
}

// sameJobConfig checks, right after the join, that every process was given
// rank 0's hyperparameters and the channels the job reads. Hosts given others (files made by
// hand, a wrong copy) trained on without a word (another seed: shares that
// overlap; another learning_rate: rank 0's used), or failed on a collective
// the others did not call (another batch_size, epochs, a validation channel
// on one host only), in words about the collectives.
func sameJobConfig(ctx context.Context, g fit.Group, j *job.Job) error {
	env, cfg := j.Env, configOf(j)
	mine, err := json.Marshal(cfg) // maps marshal in key order: one text for one config
	if err != nil {
		return err
	}
	size := make([]byte, 8)
	binary.LittleEndian.PutUint64(size, uint64(len(mine)))
	if err := g.Broadcast(ctx, size, 0); err != nil {
		return fmt.Errorf("compare the hosts' hyperparameters: %w", err)
	}
	rank0 := make([]byte, binary.LittleEndian.Uint64(size))
	copy(rank0, mine)
	if err := g.Broadcast(ctx, rank0, 0); err != nil {
		return fmt.Errorf("compare the hosts' hyperparameters: %w", err)
	}
	differs := make([]float64, g.World())
	var theirs jobConfig
	var why []string
	if !bytes.Equal(mine, rank0) {
		differs[g.Rank()] = 1
		if err := json.Unmarshal(rank0, &theirs); err != nil {
			return fmt.Errorf("compare the hosts' hyperparameters: rank 0's: %w", err)
		}
		why = configDiff(cfg, theirs)
	}
	if err := g.AllReduceFloat64(ctx, differs); err != nil {
		return fmt.Errorf("compare the hosts' hyperparameters: %w", err)
	}
	var others []string
	for r, d := range differs {
		if d != 0 {
			others = append(others, env.Hosts[r])
		}
	}
	switch {
	case len(others) == 0:
		return nil
	case len(why) > 0:
		return &fit.Agreed{Err: fmt.Errorf("this host (%s) was given other settings than rank 0 (%s): %s; SageMaker gives every host the same hyperparameters and the channels of its instance group: give each host the same files",
			env.CurrentHost, env.Hosts[0], strings.Join(why, "; "))}
	}
	return &fit.Agreed{Err: fmt.Errorf("hosts %s were given other hyperparameters or channels than rank 0 (%s), as their failures say; give each host the same files",
		hostlist.Short(others), env.Hosts[0])}
}

// configDiff says how mine differs from rank 0's, key by key.
func configDiff(mine, rank0 jobConfig) []string {
	text := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	var why []string
	for _, k := range slices.Sorted(maps.Keys(mine.Hyperparameters)) {
		if v, ok := rank0.Hyperparameters[k]; !ok {
			why = append(why, fmt.Sprintf("hyperparameter %q is %s here and not given on rank 0", k, mine.Hyperparameters[k]))
		} else if v != mine.Hyperparameters[k] {
			why = append(why, fmt.Sprintf("hyperparameter %q is %s here and %s on rank 0", k, mine.Hyperparameters[k], v))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(rank0.Hyperparameters)) {
		if _, ok := mine.Hyperparameters[k]; !ok {
			why = append(why, fmt.Sprintf("hyperparameter %q is not given here and %s on rank 0", k, rank0.Hyperparameters[k]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(mine.Channels)) {
		if c, ok := rank0.Channels[k]; !ok {
			why = append(why, fmt.Sprintf("channel %q is given here and not on rank 0", k))
		} else if c != mine.Channels[k] {
			why = append(why, fmt.Sprintf("channel %q is %s here and %s on rank 0", k, text(mine.Channels[k]), text(c)))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(rank0.Channels)) {
		if _, ok := mine.Channels[k]; !ok {
			why = append(why, fmt.Sprintf("channel %q is given on rank 0 and not here", k))
		}
	}
	return why
}
