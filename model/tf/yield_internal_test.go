package tf

import (
	"runtime"
	"testing"
	"time"
)

// A session call passes through Go's scheduler once yieldEvery has passed
// since the last did, and not before.
func TestSessionCallsYieldEveryFewMilliseconds(t *testing.T) {
	yields := 0
	gosched = func() { yields++; runtime.Gosched() }
	defer func() { gosched = runtime.Gosched }()
	var s session
	s.lastYield.Store(-int64(yieldEvery)) // as long before the clock's start
	s.yield()
	if yields != 1 {
		t.Fatalf("a call yieldEvery after the last yield: %d yields, want 1", yields)
	}
	last := s.lastYield.Load()
	for range 10 {
		s.yield()
	}
	// (a machine that stopped this test for yieldEvery would yield again)
	if took := time.Duration(int64(time.Since(started)) - last); yields != 1 && took < yieldEvery {
		t.Fatalf("calls right after a yield: %d yields in all, want 1", yields)
	}
	s.lastYield.Store(last - int64(yieldEvery))
	s.yield()
	if yields != 2 {
		t.Fatalf("a call yieldEvery after the last yield: %d yields in all, want 2", yields)
	}
}
