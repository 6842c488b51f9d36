package wait

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestUntilReturnsOnceTheCheckHolds(t *testing.T) {
	calls := 0
	err := Until(time.Hour, func() error {
		calls++
		if calls < 4 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || calls != 4 {
		t.Fatalf("Until = %v after %d calls, want nil after 4", err, calls)
	}
}

func TestUntilReportsTheLastError(t *testing.T) {
	n := 0
	err := Until(0, func() error {
		n++
		return errors.New("count is 3, want 4")
	})
	if err == nil || !strings.Contains(err.Error(), "count is 3, want 4") || n != 1 {
		t.Fatalf("Until = %v after %d calls, want the check's error after one call", err, n)
	}
}

// TestForSignalSeesEachSignalledChange: the sender blocks until each signal
// is taken, so ForSignal must keep taking signals (and checking) until the
// condition holds, and returns only then.
func TestForSignalSeesEachSignalledChange(t *testing.T) {
	changed := make(chan struct{})
	var state atomic.Int32
	go func() {
		for i := int32(1); i <= 3; i++ {
			state.Store(i)
			changed <- struct{}{}
		}
	}()
	ForSignal(t, "state 3", changed, func() bool { return state.Load() == 3 })
	if state.Load() != 3 {
		t.Fatalf("returned at state %d", state.Load())
	}
}

func TestPollStopsAtAnAbort(t *testing.T) {
	calls := 0
	exited := errors.New("the daemon exited")
	err := Poll(context.Background(), func(context.Context) error {
		calls++
		if calls == 3 {
			return Abort(exited)
		}
		return errors.New("not up yet")
	})
	if err != exited || calls != 3 {
		t.Fatalf("Poll = %v after %d calls, want the aborting error after 3", err, calls)
	}
}

func TestPollEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Poll(ctx, func(context.Context) error { return errors.New("not bound") })
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "not bound") {
		t.Fatalf("Poll = %v, want the last error and the context's", err)
	}
}
