package channel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
)

// TimeoutError is a connect or a handshake that did not complete within its
// limit. Timeout reports true, as a net.Error's does.
type TimeoutError struct {
	What  string // "connect" or "handshake"
	After time.Duration
	Err   error // what the interrupted call returned
}

func (e *TimeoutError) Error() string {
	s := fmt.Sprintf("%s not completed within %s", e.What, e.After)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *TimeoutError) Unwrap() error { return e.Err }

// Timeout marks the error as a timeout for callers that test net.Error.
func (e *TimeoutError) Timeout() bool { return true }

// aLongTimeAgo is the deadline that interrupts a blocked read or write at
// once: a socket deadline is wall-clock by nature, so the limit decides on
// its own clock and only uses the deadline to make blocked I/O return.
var aLongTimeAgo = time.Unix(1, 0)

// Limit bounds one step of binding (a connect, a handshake) by a duration
// measured on an injected clock. When the duration passes, or the parent
// context ends, its context is cancelled and every watched connection's
// pending I/O fails at once.
type Limit struct {
	what   string
	after  time.Duration
	ctx    context.Context
	cancel context.CancelFunc
	timer  clockwork.Timer

	fired   atomic.Bool
	expired chan struct{} // closed once the timer's function has run

	mu          sync.Mutex
	conns       []net.Conn
	interrupted bool
	stopAfter   func() bool
	afterDone   chan struct{} // closed once interrupt has run
}

// StartLimit starts a limit of after on clock, within ctx; what names the
// step in the TimeoutError.
func StartLimit(ctx context.Context, clock clockwork.Clock, after time.Duration, what string) *Limit {
	l := &Limit{what: what, after: after, expired: make(chan struct{}), afterDone: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancel(ctx)
	l.stopAfter = context.AfterFunc(l.ctx, l.interrupt)
	l.timer = clock.AfterFunc(after, func() {
		defer close(l.expired)
		l.fired.Store(true)
		l.cancel()
	})
	return l
}

// Context ends when the limit passes: hand it to a dial.
func (l *Limit) Context() context.Context { return l.ctx }

// Watch makes the limit interrupt c's I/O when it passes.
func (l *Limit) Watch(c net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.conns = append(l.conns, c)
	if l.interrupted {
		_ = c.SetDeadline(aLongTimeAgo)
	}
}

func (l *Limit) interrupt() {
	defer close(l.afterDone)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.interrupted = true
	for _, c := range l.conns {
		_ = c.SetDeadline(aLongTimeAgo)
	}
}

// Stop ends the limit and returns err, as a *TimeoutError if the limit
// passed (then the watched connections are unusable, even if err is nil).
// Once Stop returns, nothing touches the watched connections any more.
func (l *Limit) Stop(err error) error {
	if !l.timer.Stop() {
		<-l.expired
	}
	if !l.stopAfter() { // interrupt has started: let it finish
		<-l.afterDone
	}
	l.cancel()
	if !l.fired.Load() {
		return err
	}
	if err == nil {
		err = errors.New("completed after the limit")
	}
	return &TimeoutError{What: l.what, After: l.after, Err: err}
}
