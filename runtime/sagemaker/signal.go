package sagemaker

import (
	"context"
	"os"
	"os/signal"
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
// After the first signal the handler is removed, so a second Ctrl-C ends
// the process at once. Call stop to remove it sooner and release the
// context's resources.
func NotifyStop(ctx context.Context) (_ context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, os.Interrupt)
	go func() {
		defer signal.Stop(ch)
		select {
		case s := <-ch:
			cancel(&StopSignal{Signal: s})
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		cancel(nil)
	}
}
