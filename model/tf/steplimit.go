package tf

// The graph's own limit, for the benchmarks in steplimit_bench_test.go (cgo
// is not allowed in test files, so the loop lives here, unexported): a
// step signature run back to back from C on input tensors made once, with
// only the signature's own outputs fetched (and deleted), so nothing of
// sagefit's runtime (data pipeline, tensor copies, metric parsing, Go
// scheduling) is in the time. What TF_SessionRun costs is all that is left.

/*
#include "tensorflow/c/c_api.h"

static void sagefit_run_n(TF_Session* s, const TF_Output* feeds, TF_Tensor* const* in, int nIn,
                          const TF_Output* fetches, TF_Tensor** out, int nOut, long n, TF_Status* status) {
	for (long i = 0; i < n; i++) {
		TF_SessionRun(s, NULL, feeds, in, nIn, fetches, out, nOut, NULL, 0, NULL, status);
		for (int j = 0; j < nOut; j++) {
			if (out[j]) {
				TF_DeleteTensor(out[j]);
				out[j] = NULL;
			}
		}
		if (TF_GetCode(status) != TF_OK) {
			return;
		}
	}
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
}

// newStepLoop prepares role (its weighted form when b carries sample
// weights) to run on b again and again.
func (m *Model) newStepLoop(role string, b model.Batch) (*stepLoop, error) {
	role, err := m.roleFor(role, b)
	if err != nil {
		return nil, err
	}
	c := m.calls[role]
	if c == nil {
		return nil, fmt.Errorf("the model has no %s signature", role)
	}
	feeds, err := m.batchFeeds(c, b)
	if err != nil {
		return nil, err
	}
	l := &stepLoop{s: m.sess, name: c.name, out: make([]*C.TF_Tensor, len(c.fetches))}
	for i, f := range feeds {
		t, err := newCTensor(f)
		if err != nil {
			l.close()
			return nil, fmt.Errorf("feed %s: %w", c.feeds[i].name, err)
		}
		l.feeds = append(l.feeds, c.feeds[i].out)
		l.in = append(l.in, t)
	}
	for _, f := range c.fetches {
		l.fetches = append(l.fetches, f.out)
	}
	return l, nil
}

// run runs the step n times back to back in one call into C.
func (l *stepLoop) run(n int) error {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	if l.s.closed {
		return errors.New("model is closed")
	}
	status := C.TF_NewStatus()
	defer C.TF_DeleteStatus(status)
	C.sagefit_run_n(l.s.sess, first(l.feeds), first(l.in), C.int(len(l.in)),
		first(l.fetches), first(l.out), C.int(len(l.out)), C.long(n), status)
	if err := statusErr(status); err != nil {
		return fmt.Errorf("%s: %w", l.name, err)
	}
	return nil
}

func (l *stepLoop) close() {
	for _, t := range l.in {
		C.TF_DeleteTensor(t)
	}
	l.in = nil
}
