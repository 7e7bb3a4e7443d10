package sagemaker

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// StopSignal is the cause of a context that [NotifyStop] cancelled: the
// signal that asked the job to stop. (Training that then stopped cleanly
// after a step ends with the fit loop's fit.Interrupted.)
type StopSignal struct {
	Signal os.Signal
}

func (e *StopSignal) Error() string { return "stopped by " + signalName(e.Signal) }

func signalName(s os.Signal) string {
	switch s {
	case syscall.SIGTERM:
		return "SIGTERM"
	case os.Interrupt:
		return "SIGINT"
	}
	return s.String()
}

// NotifyStop returns a copy of ctx that is cancelled when the process gets
// SIGTERM (SageMaker's stop request and spot interruption; SIGKILL follows
// 120 seconds later) or SIGINT. context.Cause of the returned context is
// then a [*StopSignal], whose message reads "stopped by SIGTERM".
//
// After the first signal a second Ctrl-C (SIGINT) ends the process at once;
// a second SIGTERM changes nothing: it is the same ask again (a supervisor
// that repeats it, kill run twice), and ending at once lost the checkpoint
// the first was writing. Call stop to remove the handler sooner and
// release the context's resources.
func NotifyStop(ctx context.Context) (_ context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	ch := make(chan os.Signal, 1)
	again := make(chan os.Signal, 1) // SIGTERM after the first signal: caught, and dropped once full
	var mu sync.Mutex                // orders the handler's switch with stop
	stopped := false
	signal.Notify(ch, syscall.SIGTERM, os.Interrupt)
	go func() {
		select {
		case s := <-ch:
			mu.Lock()
			if !stopped {
				signal.Notify(again, syscall.SIGTERM)
				signal.Stop(ch) // SIGINT's default again: a second Ctrl-C ends the process
			}
			mu.Unlock()
			cancel(&StopSignal{Signal: s})
		case <-ctx.Done():
			signal.Stop(ch)
		}
	}()
	return ctx, func() {
		mu.Lock()
		stopped = true
		signal.Stop(ch)
		signal.Stop(again)
		mu.Unlock()
		cancel(nil)
	}
}
