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
// it initializes, after this.) Device placement, when asked for, still
// prints: TensorFlow writes it to stdout with printf as well.
#include <unistd.h>
static void sagefit_quiet_tensorflow(int argc, char **argv, char **envp) {
	static const char key[] = "TF_CPP_MIN_LOG_LEVEL=";
	int n = 0;
	(void)argc;
	for (char **e = envp; e && *e; e++, n++) {
		if (strncmp(*e, key, sizeof key - 1) == 0) {
			return; // the user's level, kept
		}
	}
	char *env[n + 2];
	for (int i = 0; i < n; i++) {
		env[i] = envp[i];
	}
	env[n] = "TF_CPP_MIN_LOG_LEVEL=2";
	env[n + 1] = NULL;
	execve("/proc/self/exe", argv, env); // returns only if it failed: go on, not quiet
}
__attribute__((section(".preinit_array"), used))
static void (*sagefit_preinit)(int, char **, char **) = sagefit_quiet_tensorflow;
#include "tensorflow/c/c_api.h"
#include "tensorflow/c/tf_tstring.h"

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
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/sagefit/sagefit/model"
)

// tfVersion is the version of the linked libtensorflow.
func tfVersion() string { return C.GoString(C.TF_Version()) }

func statusErr(s *C.TF_Status) error {
	if C.TF_GetCode(s) == C.TF_OK {
		return nil
	}
	return errors.New(C.GoString(C.TF_Message(s)))
}

// session is a loaded SavedModel. Runs are serialised: the signatures share
// variables, and two concurrent steps would race on them.
type session struct {
	mu     sync.Mutex
	graph  *C.TF_Graph
	sess   *C.TF_Session
	closed bool
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
	return &session{graph: graph, sess: sess}, C.GoBytes(meta.data, C.int(meta.length)), nil
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
	C.TF_DeleteGraph(s.graph)
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
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("model is closed")
	}
	nIn, nOut := len(feeds), len(fetches)
	// Go slices of C pointers may be handed to C: they hold no Go pointers.
	cFeeds := make([]C.TF_Output, nIn)
	cIn := make([]*C.TF_Tensor, nIn)
	cFetch := make([]C.TF_Output, nOut)
	cOut := make([]*C.TF_Tensor, nOut)
	defer func() {
		for _, t := range cIn {
			if t != nil {
				C.TF_DeleteTensor(t)
			}
		}
		for _, t := range cOut {
			if t != nil {
				C.TF_DeleteTensor(t)
			}
		}
	}()
	for i, in := range inputs {
		cFeeds[i] = feeds[i].out
		t, err := newCTensor(in)
		if err != nil {
			return nil, fmt.Errorf("feed %s: %w", feeds[i].name, err)
		}
		cIn[i] = t
	}
	for i, f := range fetches {
		cFetch[i] = f.out
	}
	status := C.TF_NewStatus()
	defer C.TF_DeleteStatus(status)
	C.TF_SessionRun(s.sess, nil, first(cFeeds), first(cIn), C.int(nIn), first(cFetch), first(cOut), C.int(nOut), nil, 0, nil, status)
	if err := statusErr(status); err != nil {
		return nil, err
	}
	res := make([]result, nOut)
	for i := range cOut {
		t := cOut[i]
		r := result{dtype: model.DType(C.TF_TensorType(t))}
		nd := int(C.TF_NumDims(t))
		r.shape = make([]int64, nd)
		for d := 0; d < nd; d++ {
			r.shape[d] = int64(C.TF_Dim(t, C.int(d)))
		}
		if r.dtype == model.String {
			return nil, fmt.Errorf("fetch %s: string outputs are not supported", fetches[i].name)
		}
		n := int(C.TF_TensorByteSize(t))
		var dst []byte
		if i < len(into) && cap(into[i]) >= n {
			dst = into[i][:n]
		} else {
			dst = make([]byte, n)
		}
		if n > 0 {
			copy(dst, unsafe.Slice((*byte)(C.TF_TensorData(t)), n))
		}
		r.data = dst
		res[i] = r
	}
	return res, nil
}

// runSave feeds the checkpoint prefix to the saver and runs its save op.
func (s *session) runSave(filename endpoint, prefix string, save endpoint) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("model is closed")
	}
	cs := C.CString(prefix)
	defer C.free(unsafe.Pointer(cs))
	in := []*C.TF_Tensor{C.sagefit_string_scalar(cs, C.size_t(len(prefix)))}
	defer C.TF_DeleteTensor(in[0])
	feeds := []C.TF_Output{filename.out}
	fetch := []C.TF_Output{save.out}
	out := []*C.TF_Tensor{nil}
	status := C.TF_NewStatus()
	defer C.TF_DeleteStatus(status)
	C.TF_SessionRun(s.sess, nil, &feeds[0], &in[0], 1, &fetch[0], &out[0], 1, nil, 0, nil, status)
	if out[0] != nil {
		C.TF_DeleteTensor(out[0])
	}
	return statusErr(status)
}

// first returns a pointer to s[0], or nil for an empty slice.
func first[T any](s []T) *T {
	if len(s) == 0 {
		return nil
	}
	return &s[0]
}

func newCTensor(h hostTensor) (*C.TF_Tensor, error) {
	if h.dtype == model.String {
		return nil, errors.New("string inputs are not supported")
	}
	size := h.dtype.Size()
	if size == 0 {
		return nil, fmt.Errorf("unsupported dtype %s", h.dtype)
	}
	n := 1
	for _, d := range h.shape {
		n *= int(d)
	}
	if n*size != len(h.data) {
		return nil, fmt.Errorf("shape %v of %s needs %d bytes, got %d", h.shape, h.dtype, n*size, len(h.data))
	}
	dims := make([]C.int64_t, len(h.shape))
	for i, d := range h.shape {
		dims[i] = C.int64_t(d)
	}
	t := C.TF_AllocateTensor(C.TF_DataType(h.dtype), first(dims), C.int(len(dims)), C.size_t(len(h.data)))
	if t == nil {
		return nil, errors.New("TF_AllocateTensor failed")
	}
	if len(h.data) > 0 {
		C.memcpy(C.TF_TensorData(t), unsafe.Pointer(&h.data[0]), C.size_t(len(h.data)))
	}
	return t, nil
}
