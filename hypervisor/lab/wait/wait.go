package wait

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// Limit is how long For waits before it declares the condition never came:
// long enough for a loaded two-core CI machine under -race, never a
// measurement.
const Limit = 30 * time.Second

// poll starts at 1 ms and doubles up to 50 ms: quick conditions are seen at
// once, slow ones do not burn a core.
const (
	firstPoll = time.Millisecond
	maxPoll   = 50 * time.Millisecond
)

// For polls cond until it holds; the test fails with what if it does not
// within Limit.
func For(t testing.TB, what string, cond func() bool) {
	t.Helper()
	ForErr(t, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

var errNotYet = fmt.Errorf("not yet")

// ForErr polls check until it returns nil; the test fails with what and
// check's last error if it does not within Limit.
func ForErr(t testing.TB, what string, check func() error) {
	t.Helper()
	if err := Until(Limit, check); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// ForSignal is For for a condition whose changes are signalled on changed
// (a channel the code under test sends to, without blocking, when its state
// moves): cond is checked again as soon as a signal arrives, and at the
// poll pauses otherwise, so a test that waits many times in a row (or a
// benchmark) is not slowed by the pauses.
func ForSignal(t testing.TB, what string, changed <-chan struct{}, cond func() bool) {
	t.Helper()
	err := until(Limit, changed, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// Until polls check until it returns nil or limit passes, and returns
// check's last error then (wrapped), or nil. For helpers that report
// failure their own way.
func Until(limit time.Duration, check func() error) error {
	return until(limit, nil, check)
}

// until is Until that also checks again whenever changed receives (a nil
// channel never does).
func until(limit time.Duration, changed <-chan struct{}, check func() error) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	err := poll(ctx, changed, func(context.Context) error { return check() })
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("still not so after %s: %w", limit, err)
	}
	return err
}

// Poll calls check until it returns nil, returns an error made by Abort
// (a state that waiting cannot change, such as a process that exited), or
// ctx ends; then it returns nil, the aborting error, or check's last error
// joined with ctx's. For code that waits on a context: the lab, benches.
func Poll(ctx context.Context, check func(ctx context.Context) error) error {
	return poll(ctx, nil, check)
}

// Abort marks err as final for Poll: it stops polling and returns err.
func Abort(err error) error { return &abortError{err} }

type abortError struct{ err error }

func (a *abortError) Error() string { return a.err.Error() }
func (a *abortError) Unwrap() error { return a.err }

func poll(ctx context.Context, changed <-chan struct{}, check func(context.Context) error) error {
	pause := firstPoll
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		if a, ok := err.(*abortError); ok {
			return a.err
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-changed:
		case <-t.C:
			pause = min(2*pause, maxPoll)
		}
		t.Stop()
	}
}
