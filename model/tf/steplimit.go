package tf

// The graph's own limit, for the benchmark in steplimit_bench_test.go (cgo
// is not allowed in test files, so the loop lives here, unexported): a
// step signature run back to back from C on input tensors made once, with
// only the signature's own outputs fetched (and deleted), so nothing of
// sagefit's runtime (data pipeline, tensor copies, metric parsing, Go
// scheduling) is in the time. What TF_SessionRun costs is all that is left.

/*
#include <stdint.h>
#include <time.h>
#include "tensorflow/c/c_api.h"
#include "fpmode.h"

// sagefit_run_n runs the session n times (with opts, the session's run
// options); with ns, it writes each run's
// nanoseconds there.
static void sagefit_run_n(TF_Session* s, const TF_Buffer* opts, const TF_Output* feeds, TF_Tensor* const* in, int nIn,
                          const TF_Output* fetches, TF_Tensor** out, int nOut, long n, int64_t* ns,
                          TF_Status* status) {
	struct timespec a, b;
	sagefit_fpmode mode = sagefit_flush_denormals(); // as the runtime's runs (sagefit_run)
	for (long i = 0; i < n; i++) {
		if (ns) clock_gettime(CLOCK_MONOTONIC, &a);
		TF_SessionRun(s, opts, feeds, in, nIn, fetches, out, nOut, NULL, 0, NULL, status);
		for (int j = 0; j < nOut; j++) {
			if (out[j]) {
				TF_DeleteTensor(out[j]);
				out[j] = NULL;
			}
		}
		if (ns) {
			clock_gettime(CLOCK_MONOTONIC, &b);
			ns[i] = (int64_t)(b.tv_sec - a.tv_sec) * 1000000000 + (b.tv_nsec - a.tv_nsec);
		}
		if (TF_GetCode(status) != TF_OK) {
			break;
		}
	}
	sagefit_restore_fpmode(mode);
}
*/
import "C"

import (
	"errors"
	"fmt"

	"github.com/sagefit/sagefit/model"
)

// stepLoop is one step signature with its inputs already in TensorFlow's
// tensors.
type stepLoop struct {
	s       *session
	name    string
	feeds   []C.TF_Output
	in      []*C.TF_Tensor
	fetches []C.TF_Output
	out     []*C.TF_Tensor
	host    []hostTensor // the inputs on the Go side, for refill
}

// newStepLoop prepares role (its weighted form when b carries sample
// weights) to run on b again and again, with the feeds a step of the fit
// loop gets.
func (m *Model) newStepLoop(role string, b model.Batch) (*stepLoop, error) {
	role, err := m.roleFor(role, b)
	if err != nil {
		return nil, err
	}
	c := m.calls[role]
	if c == nil {
		return nil, fmt.Errorf("the model has no %s signature", role)
	}
	feeds, err := m.batchFeeds(c.feedPlans, b, 1)
	if err != nil {
		return nil, err
	}
	ends, feeds := c.inputs(feeds) // as every step of the fit loop feeds them
	l := &stepLoop{s: m.sess, name: c.name, out: make([]*C.TF_Tensor, len(c.fetches)), host: feeds}
	for i := range feeds {
		l.feeds = append(l.feeds, ends[i].out)
		l.in = append(l.in, nil)
	}
	for _, f := range c.fetches {
		l.fetches = append(l.fetches, f.out)
	}
	if err := l.refill(); err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

// refill makes the input tensors anew from the Go side, as every step of
// the fit loop does.
func (l *stepLoop) refill() error {
	for i, h := range l.host {
		t, err := newCTensor(h)
		if err != nil {
			return fmt.Errorf("feed %d: %w", i, err)
		}
		if l.in[i] != nil {
			C.TF_DeleteTensor(l.in[i])
		}
		l.in[i] = t
	}
	return nil
}

// run runs the step n times back to back in one call into C; with ns
// (at least n long), it writes each run's nanoseconds there.
func (l *stepLoop) run(n int, ns []int64) error {
	l.s.yield() // as every session call does
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	if l.s.closed {
		return errors.New("model is closed")
	}
	if ns != nil && len(ns) < n {
		return fmt.Errorf("%d run times do not fit in %d", n, len(ns))
	}
	status := C.TF_NewStatus()
	defer C.TF_DeleteStatus(status)
	var times *C.int64_t
	if ns != nil {
		times = (*C.int64_t)(&ns[0])
	}
	C.sagefit_run_n(l.s.sess, l.s.runOptions(), first(l.feeds), first(l.in), C.int(len(l.in)),
		first(l.fetches), first(l.out), C.int(len(l.out)), C.long(n), times, status)
	if err := statusErr(status); err != nil {
		return fmt.Errorf("%s: %w", l.name, err)
	}
	return nil
}

func (l *stepLoop) close() {
	for i, t := range l.in {
		if t != nil {
			C.TF_DeleteTensor(t)
			l.in[i] = nil
		}
	}
}
