package data

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// PipeOptions configure OpenPipeEpoch.
type PipeOptions struct {
	// SpoolDir is where each array is written before it is mapped; ""
	// means os.TempDir(). It needs room for one epoch of data. Spool files
	// are unlinked as soon as they are mapped, so nothing is left behind
	// even if the process dies.
	SpoolDir string
	// OpenTimeout bounds the wait for the FIFO to appear and for its
	// writer to open it; 0 leaves that to ctx.
	OpenTimeout time.Duration
	// IdleTimeout bounds each wait for more bytes once the stream has
	// started, so a writer that stalls without closing fails the epoch
	// instead of hanging it; 0 leaves that to ctx.
	IdleTimeout time.Duration
}

// ErrEmptyStream is returned (wrapped) by OpenPipeEpoch for a stream that
// ends before its first byte: SageMaker's stream of a ShardedByS3Key
// channel to a host that got none of its objects.
var ErrEmptyStream = errors.New("the stream ended before its first array: the writer sent nothing")

// OpenPipeEpoch reads one epoch of a Pipe-mode channel: the FIFO at fifo
// (see PipePath) carries one .npy array after another (the channel's S3
// objects, back to back), and names[i] is the tensor name of the i-th
// array in stream order; more arrays are more parts of the channel, one
// array per name each (part-0/x.npy, part-0/y.npy, part-1/x.npy, ...),
// their rows one part after another. Each array is spooled to a file in
// opts.SpoolDir and memory-mapped, so an epoch larger than memory works
// and its rows can be shuffled like a File-mode channel's. The returned
// dataset owns the arrays; Close it before the next epoch.
//
// It waits for the FIFO to appear (SageMaker creates each epoch's when
// the previous one has been read) and for the writer to open it, polling,
// never blocked beyond ctx, opts.OpenTimeout and opts.IdleTimeout. Errors
// name the FIFO: one that never appears, a stream that ends early (which
// array, how many of its bytes arrived), a stream that ends within a
// part, arrays whose row counts differ.
func OpenPipeEpoch(ctx context.Context, fifo string, names []string, opts PipeOptions) (*Dataset, error) {
	if len(names) == 0 {
		return nil, fmt.Errorf("pipe %s: no tensor names given for its arrays", fifo)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if n == "" || seen[n] {
			return nil, fmt.Errorf("pipe %s: tensor names %q must be distinct and not empty", fifo, names)
		}
		seen[n] = true
	}
	spool := opts.SpoolDir
	if spool == "" {
		spool = os.TempDir()
	}
	if err := os.MkdirAll(spool, 0o700); err != nil {
		return nil, fmt.Errorf("pipe %s: spool directory: %w", fifo, err)
	}
	f, err := waitAndOpen(ctx, fifo, opts.OpenTimeout)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := newPipeReader(ctx, f, opts.IdleTimeout)
	defer r.stop()

	var arrays []*Array
	fail := func(err error) (*Dataset, error) {
		for _, a := range arrays {
			a.Close()
		}
		return nil, err
	}
	buf := make([]byte, 1<<20)
	// One array per name, and again for each part that follows: a channel
	// in parts (part-0/x.npy, part-0/y.npy, part-1/x.npy, ...) streams them
	// back to back. The writer closes its end after the last array.
	for k := 0; ; k++ {
		a, err := spoolArray(r, fifo, names, k, spool, buf)
		if errors.Is(err, errStreamEnd) {
			break
		}
		if err != nil {
			return fail(err)
		}
		arrays = append(arrays, a)
	}
	n := len(names)
	for k, a := range arrays {
		if first := arrays[k-k%n]; a.Len() != first.Len() {
			return fail(fmt.Errorf("pipe %s: array %d (%q) has %d rows but array %d (%q) has %d; every array of a channel must have one row per example",
				fifo, k, names[k%n], a.Len(), k-k%n, names[0], first.Len()))
		}
	}
	var parts [][]*Array // the stream's parts, an array per name each
	for k := 0; k < len(arrays); k += n {
		parts = append(parts, arrays[k:k+n])
	}
	src, err := joinParts(names, parts)
	if err != nil {
		return fail(fmt.Errorf("pipe %s: tensor %w", fifo, err))
	}
	d, err := newDataset(src)
	if err != nil {
		return fail(err)
	}
	d.owned = arrays
	d.orders.noAhead = true // the next epoch comes through its own FIFO
	return d, nil
}

// errStreamEnd is spoolArray's word for a stream that ended where a part
// would begin.
var errStreamEnd = errors.New("the stream ended")

// spoolArray copies the k-th .npy array of the stream, of tensor
// names[k%len(names)], to a spool file and maps it.
func spoolArray(r *pipeReader, fifo string, names []string, k int, spool string, buf []byte) (*Array, error) {
	i := k % len(names)
	what := fmt.Sprintf("pipe %s: array %d (%q)", fifo, k, names[i])
	var hdr bytes.Buffer
	h, err := ParseHeader(io.TeeReader(r, &hdr))
	switch {
	case err == io.EOF && k == 0:
		return nil, fmt.Errorf("pipe %s: %w", fifo, ErrEmptyStream)
	case err == io.EOF && i == 0:
		return nil, errStreamEnd
	case err == io.EOF:
		// Too few arrays, or one too many (a sample_weight.npy the names
		// leave out) read as the start of another part.
		return nil, fmt.Errorf("pipe %s ended after %d arrays, not a whole number of groups of %d (%q: an array per tensor, for each part of the stream); does the channel hold an array more or fewer than the tensor names (sagefit_pipe_tensors)?",
			fifo, k, len(names), names)
	case errors.Is(err, ErrBadMagic):
		return nil, fmt.Errorf("%s is not a .npy array (bad magic); Pipe mode reads .npy files back to back", what)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return nil, fmt.Errorf("%s: the writer stopped in the middle of the header, after %d bytes", what, hdr.Len())
	case err != nil:
		return nil, fmt.Errorf("%s: %w", what, r.explain(err))
	}
	if len(h.Shape) == 0 {
		return nil, fmt.Errorf("%s is a 0-d array (a scalar); a channel array needs one row per example, shape (N, ...)", what)
	}
	sf, err := os.CreateTemp(spool, "sagefit-spool-*.npy")
	if err != nil {
		return nil, fmt.Errorf("%s: spool: %w", what, err)
	}
	spath := sf.Name()
	defer os.Remove(spath) // the mapping keeps the data; the name can go
	if _, err := sf.Write(hdr.Bytes()); err != nil {
		sf.Close()
		return nil, fmt.Errorf("%s: spool to %s: %w", what, spath, err)
	}
	want := h.DataLen()
	var got int64
	for got < want {
		n, rerr := r.Read(buf[:min(int64(len(buf)), want-got)])
		if n > 0 {
			if _, err := sf.Write(buf[:n]); err != nil {
				sf.Close()
				return nil, fmt.Errorf("%s: spool to %s: %w", what, spath, err)
			}
			got += int64(n)
		}
		if rerr == io.EOF && got < want {
			sf.Close()
			return nil, fmt.Errorf("%s, %s: the writer stopped after %d of its %d data bytes", what, h, got, want)
		}
		if rerr != nil && rerr != io.EOF {
			sf.Close()
			return nil, fmt.Errorf("%s, %s: after %d of %d data bytes: %w", what, h, got, want, r.explain(rerr))
		}
	}
	if err := sf.Close(); err != nil {
		return nil, fmt.Errorf("%s: spool to %s: %w", what, spath, err)
	}
	a, err := Open(spath)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	a.path = fmt.Sprintf("%s[%d]", fifo, k)
	return a, nil
}

// waitAndOpen waits for path to exist and opens it for reading, which for
// a FIFO waits for a writer too; never beyond ctx or timeout.
func waitAndOpen(ctx context.Context, path string, timeout time.Duration) (*os.File, error) {
	wctx := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	why := func(what string) error {
		if ctx.Err() == nil && timeout > 0 {
			return fmt.Errorf("pipe %s: %s within %v", path, what, timeout)
		}
		return fmt.Errorf("pipe %s: %s: %w", path, what, wctx.Err())
	}
	wait := 5 * time.Millisecond
	for {
		fi, err := os.Stat(path)
		if err == nil {
			if fi.IsDir() {
				return nil, fmt.Errorf("pipe %s: is a directory, not a FIFO", path)
			}
			break
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("pipe %s: %w", path, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-wctx.Done():
			t.Stop()
			return nil, why("the FIFO did not appear (SageMaker makes it for a channel whose TrainingInputMode is Pipe; sagefit local does not)")
		case <-t.C:
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
	f, err := openReader(wctx, path)
	if err != nil {
		if wctx.Err() != nil {
			return nil, why("no writer opened the FIFO")
		}
		return nil, fmt.Errorf("pipe %s: %w", path, err)
	}
	return f, nil
}

// pipeReader reads a FIFO with each read bounded by ctx and, if set, an
// idle timeout, through the file's read deadline (the runtime poller
// serves FIFOs, so a blocked read wakes up when the deadline passes).
type pipeReader struct {
	ctx  context.Context
	f    *os.File
	idle time.Duration

	mu       sync.Mutex // orders setting deadlines against ctx's cancellation
	stopWake func() bool
}

func newPipeReader(ctx context.Context, f *os.File, idle time.Duration) *pipeReader {
	r := &pipeReader{ctx: ctx, f: f, idle: idle}
	r.stopWake = context.AfterFunc(ctx, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.f.SetReadDeadline(time.Unix(1, 0)) // wake a blocked Read now
	})
	return r
}

func (r *pipeReader) stop() { r.stopWake() }

func (r *pipeReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	if err := r.ctx.Err(); err != nil {
		r.mu.Unlock()
		return 0, err
	}
	if r.idle > 0 {
		// Files the poller cannot serve (a regular file given as the
		// "FIFO") never block, so ErrNoDeadline is fine to ignore.
		r.f.SetReadDeadline(time.Now().Add(r.idle))
	}
	r.mu.Unlock()
	n, err := r.f.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		if cerr := r.ctx.Err(); cerr != nil {
			return n, cerr
		}
		return n, errIdle
	}
	return n, err
}

var errIdle = errors.New("idle")

// explain turns a read error into words.
func (r *pipeReader) explain(err error) error {
	if errors.Is(err, errIdle) {
		return fmt.Errorf("no data arrived for %v; the writer stalled", r.idle)
	}
	return err
}
