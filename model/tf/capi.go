package tf

// This file is the whole cgo surface of sagefit: loading a SavedModel into a
// TF_Session and running it with tensors whose lifetime we own. The galeone Go
// bindings free tensors only through finalizers, which lets C memory pile up
// in a tight step loop, so the step path talks to the C API directly and
// deletes every tensor as soon as its bytes are read.

/*
#include <stdlib.h>
#include <string.h>

// TensorFlow reads TF_CPP_MIN_LOG_LEVEL once, in its own static
// initializers, and would log a dozen INFO lines (reader.cc, loader.cc,
// cpu_feature_guard.cc, ...) into every run. A function in the executable's
// .preinit_array runs before any shared library's initializer; when the
// user has not set the level, it runs the program again with level 2
// (INFO and warnings off, errors on), before TensorFlow has done anything.
// (setenv here would not last: the C library resets the environment when
// it initializes, after this.) A few lines are logged by the libraries'
// own initializers whatever the level (oneDNN's notice, "no CUDA
// drivers"): in the program run again, stderr goes to a memory file until
// Go's init (sagefit_replay_stderr), which passes on every line but the
// INFO records. Device placement, when asked for, still prints: TensorFlow
// writes it to stdout with printf as well.
//
// A stop (SIGTERM) that comes while the libraries initialize, before Go's
// handler, killed the process with no failure file (a third of a second,
// twice that with the run again): from the first thing this function does
// it is held (blocked: exec keeps it pending), then noted by a handler of
// its own until Go's (sagefit_early_term; SignalledBeforeStart).
#include <signal.h>
#include <unistd.h>
#include <sys/syscall.h>
static int sagefit_saved_stderr = -1, sagefit_captured_stderr = -1;
static volatile sig_atomic_t sagefit_early_term = 0;
static void sagefit_note_term(int sig) {
	(void)sig;
	sagefit_early_term = 1;
}
static void sagefit_hold_term(int hold) {
	sigset_t term;
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	if (!hold) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = sagefit_note_term;
		sa.sa_flags = SA_RESTART;
		sigemptyset(&sa.sa_mask);
		sigaction(SIGTERM, &sa, NULL); // a held one comes to it once unblocked
	}
	sigprocmask(hold ? SIG_BLOCK : SIG_UNBLOCK, &term, NULL);
}
static int sagefit_signalled_early(void) { return sagefit_early_term; }
static void sagefit_quiet_tensorflow(int argc, char **argv, char **envp) {
	static const char key[] = "TF_CPP_MIN_LOG_LEVEL=", quiet[] = "SAGEFIT_TF_QUIET=1";
	int n = 0, ours = 0, level = 0;
	(void)argc;
	sagefit_hold_term(1);
	for (char **e = envp; e && *e; e++, n++) {
		if (strcmp(*e, quiet) == 0) {
			ours = 1;
		} else if (strncmp(*e, key, sizeof key - 1) == 0) {
			level = 1;
		}
	}
	if (level && !ours) {
		sagefit_hold_term(0);
		return; // the user's level, kept, and nothing held back
	}
	if (level) { // run again by the code below: hold stderr until Go's init
		int fd = (int)syscall(SYS_memfd_create, "sagefit-stderr", 0);
		int saved = fd >= 0 ? dup(2) : -1;
		if (saved >= 0 && dup2(fd, 2) >= 0) {
			sagefit_saved_stderr = saved;
			sagefit_captured_stderr = fd;
		}
		sagefit_hold_term(0);
		return;
	}
	char *env[n + 3];
	for (int i = 0; i < n; i++) {
		env[i] = envp[i];
	}
	env[n] = "TF_CPP_MIN_LOG_LEVEL=2";
	env[n + 1] = (char *)quiet;
	env[n + 2] = NULL;
	execve("/proc/self/exe", argv, env); // returns only if it failed: go on, not quiet
	sagefit_hold_term(0);
}
__attribute__((section(".preinit_array"), used))
static void (*sagefit_preinit)(int, char **, char **) = sagefit_quiet_tensorflow;

// is_info_record says whether a line starts an absl INFO record
// ("I0000 00:00:..."), or is absl's banner about logging before its
// initialization.
static int is_info_record(const char *l, size_t n) {
	static const char banner[] = "WARNING: All log messages before absl::InitializeLog() is called";
	if (n >= sizeof banner - 1 && strncmp(l, banner, sizeof banner - 1) == 0) return 1;
	return n > 5 && l[0] == 'I' && l[1] >= '0' && l[1] <= '9' && l[5] == ' ';
}

static int is_record(const char *l, size_t n) {
	return n > 5 && strchr("IWEF", l[0]) && l[1] >= '0' && l[1] <= '9' && l[5] == ' ';
}

// sagefit_replay_stderr puts stderr back and writes what the libraries'
// initializers logged, but for the INFO records (and the lines that
// continue them).
static void sagefit_replay_stderr(void) {
	if (sagefit_captured_stderr < 0) return;
	dup2(sagefit_saved_stderr, 2);
	close(sagefit_saved_stderr);
	off_t size = lseek(sagefit_captured_stderr, 0, SEEK_END);
	if (size > 0 && size <= (1 << 20)) {
		char *buf = malloc((size_t)size);
		if (buf && pread(sagefit_captured_stderr, buf, (size_t)size, 0) == size) {
			int dropping = 0;
			for (char *l = buf, *end = buf + size; l < end;) {
				char *nl = memchr(l, '\n', (size_t)(end - l));
				size_t n = nl ? (size_t)(nl - l) + 1 : (size_t)(end - l);
				if (is_info_record(l, n)) dropping = 1;
				else if (is_record(l, n)) dropping = 0;
				if (!dropping && write(2, l, n) < 0) break;
				l += n;
			}
		}
		free(buf);
	} else if (size > (1 << 20)) { // too much to sift: pass it all on
		char chunk[65536];
		ssize_t k;
		lseek(sagefit_captured_stderr, 0, SEEK_SET);
		while ((k = read(sagefit_captured_stderr, chunk, sizeof chunk)) > 0) {
			if (write(2, chunk, (size_t)k) < 0) break;
		}
	}
	close(sagefit_captured_stderr);
	sagefit_captured_stderr = -1;
}
#include "tensorflow/c/c_api.h"
#include "tensorflow/c/tf_tstring.h"

// sagefit_inline_run is RunOptions{inter_op_thread_pool: -1} serialized
// (field 3, varint -1 as ten bytes): the run executes every op in the
// calling thread instead of handing them to the inter-op pool.
static const char sagefit_inline_run_bytes[] = {0x18, (char)0xff, (char)0xff, (char)0xff, (char)0xff,
	(char)0xff, (char)0xff, (char)0xff, (char)0xff, (char)0xff, 0x01};
static const TF_Buffer sagefit_inline_run_buffer = {sagefit_inline_run_bytes, sizeof sagefit_inline_run_bytes, NULL};
static const TF_Buffer* sagefit_inline_run(void) { return &sagefit_inline_run_buffer; }

// sagefit_string_tensor makes a string tensor of n elements from data, n
// NUL-padded elements of width bytes each: element i is its bytes up to the
// trailing NULs (numpy's rule for 'S' and 'U' arrays). TF_TString keeps
// short strings inline and copies longer ones once.
static TF_Tensor* sagefit_string_tensor(const int64_t* dims, int ndims, const char* data, size_t n, size_t width) {
	TF_Tensor* t = TF_AllocateTensor(TF_STRING, dims, ndims, n * sizeof(TF_TString));
	if (t == NULL) return NULL;
	TF_TString* ts = (TF_TString*)TF_TensorData(t);
	for (size_t i = 0; i < n; i++) {
		const char* e = data + i * width;
		size_t len = width;
		while (len > 0 && e[len - 1] == 0) len--;
		TF_StringInit(&ts[i]);
		TF_StringCopy(&ts[i], e, len);
	}
	return t;
}

// sagefit_tensor makes a tensor and fills it with len bytes of data: one
// call from Go instead of two.
static TF_Tensor* sagefit_tensor(TF_DataType dt, const int64_t* dims, int ndims, const void* data, size_t len) {
	TF_Tensor* t = TF_AllocateTensor(dt, dims, ndims, len);
	if (t != NULL && len > 0) memcpy(TF_TensorData(t), data, len);
	return t;
}

// sagefit_fetched describes a fetched tensor to Go without a call per
// field; dims holds the first SAGEFIT_DIMS of ndims.
#define SAGEFIT_DIMS 8
typedef struct {
	int dtype;
	int ndims;
	int64_t dims[SAGEFIT_DIMS];
	size_t bytes;
	void* data;
} sagefit_fetched;

// Subnormal floats are flushed to zero during a run, as TensorFlow's pool
// threads run (fpmode.h).
#include "fpmode.h"

// sagefit_run runs the session, gives back the input tensors TensorFlow
// holds no more (in[i] stays; others are deleted and cleared: see
// session.keep) and describes every output in desc: a step's whole
// exchange with TensorFlow but the outputs' deletion in one call from Go
// (each call costs a transition and the Go side's bookkeeping; a step of
// the seed MLP made about thirty). It returns the status code.
static int sagefit_run(TF_Session* s, const TF_Buffer* opts, const TF_Output* feeds, TF_Tensor** in, int nIn,
                       const TF_Output* fetches, TF_Tensor** out, sagefit_fetched* desc, int nOut, TF_Status* status) {
	sagefit_fpmode mode = sagefit_flush_denormals();
	TF_SessionRun(s, opts, feeds, in, nIn, fetches, out, nOut, NULL, 0, NULL, status);
	sagefit_restore_fpmode(mode);
	for (int i = 0; i < nIn; i++) {
		// TF_TensorMaybeMove: the tensor itself where this reference is
		// its buffer's only one, else NULL and the tensor untouched.
		TF_Tensor* whole = TF_TensorType(in[i]) == TF_STRING ? NULL : TF_TensorMaybeMove(in[i]);
		if (whole == NULL) TF_DeleteTensor(in[i]);
		in[i] = whole;
	}
	int code = TF_GetCode(status);
	if (code != TF_OK) return code;
	for (int i = 0; i < nOut; i++) {
		TF_Tensor* t = out[i];
		sagefit_fetched* d = &desc[i];
		d->dtype = TF_TensorType(t);
		d->ndims = TF_NumDims(t);
		for (int j = 0; j < d->ndims && j < SAGEFIT_DIMS; j++) d->dims[j] = TF_Dim(t, j);
		d->bytes = TF_TensorByteSize(t);
		d->data = TF_TensorData(t);
	}
	return code;
}

// sagefit_delete deletes the tensors in ts and clears them.
static void sagefit_delete(TF_Tensor** ts, int n) {
	for (int i = 0; i < n; i++) {
		if (ts[i] != NULL) {
			TF_DeleteTensor(ts[i]);
			ts[i] = NULL;
		}
	}
}

static TF_Tensor* sagefit_string_scalar(const char* s, size_t n) {
	TF_Tensor* t = TF_AllocateTensor(TF_STRING, NULL, 0, sizeof(TF_TString));
	TF_TString* ts = (TF_TString*)TF_TensorData(t);
	TF_StringInit(ts);
	TF_StringCopy(ts, s, n);
	return t;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/sagefit/sagefit/model"
)

// A SIGTERM from this package's init, the first of the program's, until
// the caller's handler is in place is noted: Go's runtime puts its own
// handler in place of the preinit function's before any package init, and
// it ends the process on a SIGTERM no channel asks for (a probe's SIGTERM
// in those milliseconds: no failure file, no reason). A program that never
// claims it (SignalledBeforeStart: a test binary, a tool) ends on it a
// second later, as on any SIGTERM.
var early = struct {
	term           chan os.Signal
	claimed, acked chan struct{}
	once           sync.Once
	noted          atomic.Bool
}{term: make(chan os.Signal, 1), claimed: make(chan struct{}), acked: make(chan struct{})}

// unclaimedTermWait is how long a noted SIGTERM waits for the program to
// claim it before it ends the process.
const unclaimedTermWait = time.Second

// Stderr held back while the libraries initialized (see the preinit
// function above) is passed on, INFO records left out, before anything
// else of the program runs.
func init() {
	signal.Notify(early.term, syscall.SIGTERM)
	go func() {
		defer close(early.acked) // SignalledBeforeStart reads noted after this
		var unclaimed <-chan time.Time
		for {
			select {
			case <-early.term:
				early.noted.Store(true)
				unclaimed = time.After(unclaimedTermWait)
			case <-unclaimed:
				signal.Stop(early.term)
				syscall.Kill(os.Getpid(), syscall.SIGTERM) // Go's default now, or the caller's handler
				return
			case <-early.claimed:
				return
			}
		}
	}()
	C.sagefit_replay_stderr()
}

// SignalledBeforeStart says whether a SIGTERM came before the caller's own
// handler: while the libraries initialized (see the preinit function
// above), or since this package's init. It stops noting them, so call it
// once that handler is in place (which a SIGTERM noted here also reached
// where it came after); the caller raises the signal again for it.
func SignalledBeforeStart() bool {
	early.once.Do(func() {
		signal.Stop(early.term)
		close(early.claimed)
		<-early.acked
	})
	select {
	case <-early.term: // delivered, not read by the noting goroutine
		early.noted.Store(true)
	default:
	}
	return early.noted.Load() || C.sagefit_signalled_early() != 0
}

// tfVersion is the version of the linked libtensorflow.
func tfVersion() string { return C.GoString(C.TF_Version()) }

func statusErr(s *C.TF_Status) error {
	if C.TF_GetCode(s) == C.TF_OK {
		return nil
	}
	return tfError(C.GoString(C.TF_Message(s)))
}

// session is a loaded SavedModel. Runs are serialised: the signatures share
// variables, and two concurrent steps would race on them.
type session struct {
	mu     sync.Mutex
	graph  *C.TF_Graph
	sess   *C.TF_Session
	closed bool
	// ownsGraph: close deletes the graph (the loaded session; a sibling
	// shares it).
	ownsGraph bool
	// inline runs every op of a run in the calling thread (see setInline).
	inline bool
	// status and buffers are the runs' TF_Status, made once, and the
	// arrays they pass to C (guarded by mu).
	status  *C.TF_Status
	buffers struct {
		feeds, fetches []C.TF_Output
		in, out        []*C.TF_Tensor
		desc           []C.sagefit_fetched
		lent           []keptTensor // per feed, the kept tensor the run was lent, if any
	}
	// kept holds, per feed, the input tensor its last run gave back
	// (guarded by mu; see keep).
	kept map[C.TF_Output]keptTensor
	// lastYield is when a caller last passed through Go's scheduler
	// (nanoseconds since start, see yield).
	lastYield atomic.Int64
}

// keptTensor is an input tensor a run gave back whole (no op holds its
// buffer), kept for its feed's next run: filled again there instead of
// made again when the batch has its dtype and shape. Making each step's
// inputs (an allocation and a TF_Tensor per feed, freed after the run)
// cost the seed MLP's step 3-6 µs more than running on the same tensors
// again (BenchmarkStepLimit's fresh and cgo arms); measured in the fit
// loop (seed MLP, one step per call, 5 alternated pairs), the median step
// 83.4-86.2 against 84.4-88.1 µs. The numbers cannot change: the kept
// tensor is refilled only where this reference is the buffer's only one,
// and during a run it holds a second, as a tensor made anew did, so no op
// can take its buffer over.
type keptTensor struct {
	t     *C.TF_Tensor
	data  unsafe.Pointer
	dtype model.DType
	shape []int64
	bytes int
}

// yieldEvery bounds how long the goroutine that makes session calls back to
// back goes without passing through Go's scheduler. Go's sysmon preempts a
// goroutine that has run 10 ms without being rescheduled, and when that
// goroutine is in a cgo call it takes the goroutine's P instead; every such
// take sets sysmon back to waking every 20 µs, on the cores TensorFlow's
// threads are using. Measured on the seed MLP in the calling thread: bare
// TrainStep calls back to back, 15,000 steps, about 3,600 takes and 7,000
// context switches, 95-129 µs per step, against 15 takes, 1,000 switches
// and 89-93 µs with the yield; the fit loop, which its waits for input
// sometimes reschedule, 6 epochs: 80-350 takes against 20-30, context
// switches more than halved, its step level to 6% faster (this VM's noise
// is about as large). Yielding more often than sysmon's limit keeps the
// goroutine's scheduling tick moving, so neither happens; once every few
// milliseconds costs nothing measurable.
const yieldEvery = 5 * time.Millisecond

var (
	started = time.Now()      // the clock yield counts from
	gosched = runtime.Gosched // a test counts the yields
)

// yield lets Go's scheduler run (runtime.Gosched) when yieldEvery has passed
// since a caller last did. Called before each session call, outside the
// session's lock.
func (s *session) yield() {
	now := int64(time.Since(started))
	if last := s.lastYield.Load(); now-last >= int64(yieldEvery) && s.lastYield.CompareAndSwap(last, now) {
		gosched()
	}
}

// setInline makes later runs execute their ops in the calling thread
// (RunOptions.inter_op_thread_pool -1), or in the inter-op pool again.
// TensorFlow runs a graph placed on more than one device in the pool
// whatever this says.
func (s *session) setInline(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inline = on
}

// runOptions is the RunOptions buffer of a run: nil for TensorFlow's
// defaults.
func (s *session) runOptions() *C.TF_Buffer {
	if s.inline {
		return C.sagefit_inline_run()
	}
	return nil
}

// loadSession loads dir with the "serve" tag and returns the session and the
// serialized MetaGraphDef.
func loadSession(dir string, config []byte) (*session, []byte, error) {
	status := C.TF_NewStatus()
	defer C.TF_DeleteStatus(status)
	opts := C.TF_NewSessionOptions()
	defer C.TF_DeleteSessionOptions(opts)
	if len(config) > 0 {
		c := C.CBytes(config)
		defer C.free(c)
		C.TF_SetConfig(opts, c, C.size_t(len(config)), status)
		if err := statusErr(status); err != nil {
			return nil, nil, fmt.Errorf("session config: %w", err)
		}
	}
	cdir := C.CString(dir)
	defer C.free(unsafe.Pointer(cdir))
	tag := C.CString("serve")
	defer C.free(unsafe.Pointer(tag))
	graph := C.TF_NewGraph()
	meta := C.TF_NewBuffer()
	defer C.TF_DeleteBuffer(meta)
	sess := C.TF_LoadSessionFromSavedModel(opts, nil, cdir, &tag, 1, graph, meta, status)
	if err := statusErr(status); err != nil {
		C.TF_DeleteGraph(graph)
		return nil, nil, err
	}
	return &session{graph: graph, sess: sess, ownsGraph: true}, C.GoBytes(meta.data, C.int(meta.length)), nil
}

func (s *session) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	status := C.TF_NewStatus()
	defer C.TF_DeleteStatus(status)
	C.TF_CloseSession(s.sess, status)
	err := statusErr(status)
	C.TF_DeleteSession(s.sess, status)
	if s.ownsGraph {
		C.TF_DeleteGraph(s.graph)
	}
	if s.status != nil {
		C.TF_DeleteStatus(s.status)
		s.status = nil
	}
	for _, k := range s.kept {
		C.TF_DeleteTensor(k.t)
	}
	s.kept = nil
	return err
}

// endpoint is a graph tensor "op:index" resolved once.
type endpoint struct {
	name string
	out  C.TF_Output
}

func (s *session) resolve(name string) (endpoint, error) {
	op, idx := name, 0
	if i := strings.LastIndexByte(name, ':'); i >= 0 {
		n, err := strconv.Atoi(name[i+1:])
		if err != nil {
			return endpoint{}, fmt.Errorf("tensor name %q: bad output index", name)
		}
		op, idx = name[:i], n
	}
	cop := C.CString(op)
	defer C.free(unsafe.Pointer(cop))
	o := C.TF_GraphOperationByName(s.graph, cop)
	if o == nil {
		return endpoint{}, fmt.Errorf("graph has no operation %q", op)
	}
	if n := int(C.TF_OperationNumOutputs(o)); idx >= n {
		return endpoint{}, fmt.Errorf("operation %q has %d outputs, not %d", op, n, idx+1)
	}
	return endpoint{name: name, out: C.TF_Output{oper: o, index: C.int(idx)}}, nil
}

// capturedConsts lists the floating-point Const operations that feed the
// function call behind fetches directly (through Identity ops): the
// tensors a traced Keras function captured (an adapted Normalization's
// mean and variance), which the SavedModel holds as constants. In fit they
// reach the function as inputs; here, left as constants, Grappler folds
// them into the inlined body and rounds otherwise (x / c becomes x * 1/c):
// fed at every run, they stay inputs.
func (s *session) capturedConsts(fetches []endpoint) []endpoint {
	var out []endpoint
	seen := map[*C.TF_Operation]bool{}
	for _, f := range fetches {
		op := f.out.oper
		for C.GoString(C.TF_OperationOpType(op)) == "Identity" && C.TF_OperationNumInputs(op) > 0 {
			op = C.TF_OperationInput(C.TF_Input{oper: op, index: 0}).oper
		}
		switch C.GoString(C.TF_OperationOpType(op)) {
		case "PartitionedCall", "StatefulPartitionedCall":
		default:
			continue
		}
		if seen[op] {
			continue
		}
		seen[op] = true
		for i := range int(C.TF_OperationNumInputs(op)) {
			in := C.TF_OperationInput(C.TF_Input{oper: op, index: C.int(i)})
			if C.GoString(C.TF_OperationOpType(in.oper)) != "Const" || seen[in.oper] {
				continue
			}
			switch model.DType(C.TF_OperationOutputType(in)) {
			case model.Float32, model.Float64, model.Float16, model.BFloat16:
				seen[in.oper] = true
				out = append(out, endpoint{name: C.GoString(C.TF_OperationName(in.oper)) + ":" + strconv.Itoa(int(in.index)), out: in})
			}
		}
	}
	return out
}

// hostTensor is input data on the Go side: its bytes are copied once into a
// TF-owned buffer at run time.
type hostTensor struct {
	dtype model.DType
	shape []int64
	data  []byte
}

// result is a fetched output, copied out of TensorFlow's buffer.
type result struct {
	dtype model.DType
	shape []int64
	data  []byte
}

// run feeds inputs, fetches outputs and returns copies of their bytes. Every
// C tensor made or returned here is deleted before run returns. If into is
// non-nil, into[i] (when long enough) receives fetch i instead of a new slice.
func (s *session) run(feeds []endpoint, inputs []hostTensor, fetches []endpoint, into [][]byte) ([]result, error) {
	s.yield()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("model is closed")
	}
	nIn, nOut := len(feeds), len(fetches)
	// Go slices of C pointers may be handed to C: they hold no Go pointers.
	// They are the session's, reused from run to run under its lock.
	b := &s.buffers
	cFeeds, cIn := grow(&b.feeds, nIn), grow(&b.in, nIn)
	cFetch, cOut, desc := grow(&b.fetches, nOut), grow(&b.out, nOut), grow(&b.desc, nOut)
	defer func() {
		C.sagefit_delete(first(cIn), C.int(nIn))
		C.sagefit_delete(first(cOut), C.int(nOut))
	}()
	lent := grow(&b.lent, nIn)
	for i, in := range inputs {
		cFeeds[i] = feeds[i].out
		t, err := s.input(feeds[i].out, in, &lent[i])
		if err != nil {
			return nil, fmt.Errorf("feed %s: %w", feeds[i].name, err)
		}
		cIn[i] = t
	}
	for i, f := range fetches {
		cFetch[i] = f.out
	}
	if s.status == nil {
		s.status = C.TF_NewStatus()
	}
	code := C.sagefit_run(s.sess, s.runOptions(), first(cFeeds), first(cIn), C.int(nIn), first(cFetch), first(cOut), first(desc), C.int(nOut), s.status)
	s.keep(cFeeds, cIn, inputs, lent)
	if code != C.TF_OK {
		return nil, tfError(C.GoString(C.TF_Message(s.status)))
	}
	res := make([]result, nOut)
	for i := range cOut {
		d := &desc[i]
		r := result{dtype: model.DType(d.dtype), shape: make([]int64, int(d.ndims))}
		for j := range r.shape {
			if j < C.SAGEFIT_DIMS {
				r.shape[j] = int64(d.dims[j])
			} else {
				r.shape[j] = int64(C.TF_Dim(cOut[i], C.int(j)))
			}
		}
		if r.dtype == model.String {
			return nil, fmt.Errorf("fetch %s: string outputs are not supported", fetches[i].name)
		}
		n := int(d.bytes)
		var dst []byte
		if i < len(into) && cap(into[i]) >= n {
			dst = into[i][:n]
		} else {
			dst = make([]byte, n)
		}
		if n > 0 {
			copy(dst, unsafe.Slice((*byte)(d.data), n))
		}
		r.data = dst
		res[i] = r
	}
	return res, nil
}

// input is the tensor that feeds h to feed: the one its last run gave back,
// filled with h, where it has h's dtype, shape and size (and lent says
// which); else a new one, which checks h. The run owns it until keep.
func (s *session) input(feed C.TF_Output, h hostTensor, lent *keptTensor) (*C.TF_Tensor, error) {
	*lent = keptTensor{}
	if k, ok := s.kept[feed]; ok {
		delete(s.kept, feed)
		if k.dtype == h.dtype && slices.Equal(k.shape, h.shape) && len(h.data) == k.bytes {
			copy(unsafe.Slice((*byte)(k.data), len(h.data)), h.data)
			*lent = k
			return k.t, nil
		}
		C.TF_DeleteTensor(k.t)
	}
	return newCTensor(h)
}

// keep takes back the input tensors sagefit_run gave back (clearing their
// slots in in, which the run's deferred delete then skips), one per feed,
// for the feed's next run.
func (s *session) keep(feeds []C.TF_Output, in []*C.TF_Tensor, inputs []hostTensor, lent []keptTensor) {
	for i, t := range in {
		if t == nil {
			continue
		}
		k := lent[i]
		if k.t != t {
			k = keptTensor{t: t, data: C.TF_TensorData(t), dtype: inputs[i].dtype, shape: slices.Clone(inputs[i].shape), bytes: len(inputs[i].data)}
		}
		if s.kept == nil {
			s.kept = map[C.TF_Output]keptTensor{}
		}
		s.kept[feeds[i]] = k
		in[i] = nil
	}
}

// runStrings feeds string scalars (values[i] to feeds[i]) and runs the
// graph up to fetch and target (either may be nil): the saver's save and
// restore, and the SavedModel's init op.
func (s *session) runStrings(feeds []endpoint, values []string, fetch *endpoint, target *C.TF_Operation) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("model is closed")
	}
	cFeeds := make([]C.TF_Output, len(feeds))
	in := make([]*C.TF_Tensor, len(feeds))
	defer C.sagefit_delete(first(in), C.int(len(in)))
	for i, v := range values {
		cs := C.CString(v)
		in[i] = C.sagefit_string_scalar(cs, C.size_t(len(v)))
		C.free(unsafe.Pointer(cs))
		cFeeds[i] = feeds[i].out
	}
	var cFetch []C.TF_Output
	out := []*C.TF_Tensor{nil}
	if fetch != nil {
		cFetch = []C.TF_Output{fetch.out}
	}
	var targets []*C.TF_Operation
	if target != nil {
		targets = []*C.TF_Operation{target}
	}
	status := C.TF_NewStatus()
	defer C.TF_DeleteStatus(status)
	C.TF_SessionRun(s.sess, nil, first(cFeeds), first(in), C.int(len(in)), first(cFetch), first(out), C.int(len(cFetch)),
		first(targets), C.int(len(targets)), nil, status)
	C.sagefit_delete(first(out), 1)
	return statusErr(status)
}

// operation is the graph's operation name.
func (s *session) operation(name string) (*C.TF_Operation, error) {
	cop := C.CString(name)
	defer C.free(unsafe.Pointer(cop))
	o := C.TF_GraphOperationByName(s.graph, cop)
	if o == nil {
		return nil, fmt.Errorf("graph has no operation %q", name)
	}
	return o, nil
}

// sibling opens another session on s's graph with config (a serialized
// ConfigProto). Its variables are not set: it has run nothing. s keeps
// the graph's deletion: TensorFlow defers it until the graph's last
// session is deleted.
func (s *session) sibling(config []byte) (*session, error) {
	status := C.TF_NewStatus()
	defer C.TF_DeleteStatus(status)
	opts := C.TF_NewSessionOptions()
	defer C.TF_DeleteSessionOptions(opts)
	c := C.CBytes(config)
	defer C.free(c)
	C.TF_SetConfig(opts, c, C.size_t(len(config)), status)
	if err := statusErr(status); err != nil {
		return nil, fmt.Errorf("session config: %w", err)
	}
	sess := C.TF_NewSession(s.graph, opts, status)
	if err := statusErr(status); err != nil {
		return nil, err
	}
	return &session{graph: s.graph, sess: sess, inline: s.inline}, nil
}

// grow returns (*buf)[:n], cleared, growing *buf when it is shorter.
func grow[T any](buf *[]T, n int) []T {
	if cap(*buf) < n {
		*buf = make([]T, n)
	}
	s := (*buf)[:n]
	clear(s)
	return s
}

// first returns a pointer to s[0], or nil for an empty slice.
func first[T any](s []T) *T {
	if len(s) == 0 {
		return nil
	}
	return &s[0]
}

func newCTensor(h hostTensor) (*C.TF_Tensor, error) {
	n := 1
	for _, d := range h.shape {
		n *= int(d)
	}
	// int64_t is int64 (the C API's dims are Go's shape as it is).
	dims := unsafe.Slice((*C.int64_t)(unsafe.SliceData(h.shape)), len(h.shape))
	if h.dtype == model.String {
		// Text arrives as n NUL-padded UTF-8 elements of one width.
		width := 0
		if n > 0 {
			width = len(h.data) / n
		}
		if width*n != len(h.data) {
			return nil, fmt.Errorf("%d bytes of text do not split into %d elements of one width", len(h.data), n)
		}
		t := C.sagefit_string_tensor(first(dims), C.int(len(dims)), (*C.char)(unsafe.Pointer(unsafe.SliceData(h.data))), C.size_t(n), C.size_t(width))
		if t == nil {
			return nil, errors.New("TF_AllocateTensor failed")
		}
		return t, nil
	}
	size := h.dtype.Size()
	if size == 0 {
		return nil, fmt.Errorf("unsupported dtype %s", h.dtype)
	}
	if n*size != len(h.data) {
		return nil, fmt.Errorf("shape %v of %s needs %d bytes, got %d", h.shape, h.dtype, n*size, len(h.data))
	}
	t := C.sagefit_tensor(C.TF_DataType(h.dtype), first(dims), C.int(len(dims)), unsafe.Pointer(unsafe.SliceData(h.data)), C.size_t(len(h.data)))
	if t == nil {
		return nil, errors.New("TF_AllocateTensor failed")
	}
	return t, nil
}
