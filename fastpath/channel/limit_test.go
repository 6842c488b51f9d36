package channel

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/palisade/palisade/hypervisor/lab/wait"
)

// TestHandshakeLimitIsMeasuredOnTheClock: a handshake under a 5 s limit is
// still answered at 4.999999999 s on the clock and interrupted at 5 s,
// however long either takes on the wall clock.
func TestHandshakeLimitIsMeasuredOnTheClock(t *testing.T) {
	clock := clockwork.NewFakeClock()
	host, app := pair(t)
	limit := StartLimit(context.Background(), clock, 5*time.Second, "handshake")
	limit.Watch(host)
	result := make(chan error, 1)
	go func() {
		_, err := host.Accept(AcceptConfig{Self: Identity{Version: Current(), Revision: ProtocolRevision}, Secret: testSecret})
		result <- limit.Stop(err)
	}()
	clock.Advance(5*time.Second - time.Nanosecond) // StartLimit armed its timer at 0
	hello, _ := Hello{Version: Current(), Revision: ProtocolRevision}.Marshal()
	if err := app.W.WriteFrame(TypeHello, hello); err != nil {
		t.Fatal(err)
	}
	if err := app.W.Flush(); err != nil {
		t.Fatal(err)
	}
	if f := next(t, app); f.Type != TypeChallenge {
		t.Fatalf("at 4.999999999 s the host answered %s, want CHALLENGE", f.Type)
	}
	clock.Advance(time.Nanosecond) // the slow path never sends AUTH
	err := <-result
	var te *TimeoutError
	var ne net.Error
	if !errors.As(err, &te) || te.What != "handshake" || te.After != 5*time.Second || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("got %v, want the handshake's TimeoutError after 5s", err)
	}
	if want := "handshake not completed within 5s: read AUTH: "; !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("error %q, want it to start with %q", err, want)
	}
}

// TestLimitStoppedInTimeLeavesTheConnection: a limit stopped before it
// passes returns the step's own result and never touches the connection.
func TestLimitStoppedInTimeLeavesTheConnection(t *testing.T) {
	clock := clockwork.NewFakeClock()
	host, app := pair(t)
	limit := StartLimit(context.Background(), clock, 5*time.Second, "handshake")
	limit.Watch(host)
	if err := limit.Stop(nil); err != nil {
		t.Fatalf("stopped in time: %v", err)
	}
	clock.Advance(time.Hour)
	sendPing(t, app, TypePing, 9)
	if got := token(t, next(t, host), TypePing); got != 9 {
		t.Fatalf("token %d after the limit was stopped, want 9", got)
	}
}

// TestConnectLimitEndsItsContext: a dial's context ends when the limit
// passes on the clock, and the dial's error becomes a connect timeout.
func TestConnectLimitEndsItsContext(t *testing.T) {
	clock := clockwork.NewFakeClock()
	limit := StartLimit(context.Background(), clock, 5*time.Second, "connect")
	clock.Advance(5*time.Second - time.Nanosecond)
	if err := limit.Context().Err(); err != nil {
		t.Fatalf("context ended at 4.999999999 s: %v", err)
	}
	clock.Advance(time.Nanosecond)
	wait.For(t, "the connect context to end", func() bool { return limit.Context().Err() != nil })
	err := limit.Stop(limit.Context().Err())
	var te *TimeoutError
	if !errors.As(err, &te) || te.What != "connect" || !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want a connect TimeoutError wrapping the dial's error", err)
	}
}
