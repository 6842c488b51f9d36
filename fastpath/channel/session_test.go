package channel

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/palisade/palisade/hypervisor/lab/wait"
)

// boundPair binds over loopback and returns the host's session, not yet
// running, and the slow path's bare connection, which says only what the
// test writes to it.
func boundPair(t *testing.T, hostCfg SessionConfig) (*Session, *Conn) {
	t.Helper()
	s, c := pair(t)
	done := make(chan error, 1)
	go func() {
		_, err := s.Accept(AcceptConfig{Self: Identity{Version: Current(), Revision: ProtocolRevision}, Secret: testSecret})
		done <- err
	}()
	if _, err := c.Offer(OfferConfig{Self: Identity{Version: Current(), Revision: ProtocolRevision}, Secret: testSecret}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	hostCfg.Role = RoleFastPath
	return NewSession(s, hostCfg), c
}

func boundSessions(t *testing.T, hostCfg, appCfg SessionConfig) (host, app *Session) {
	t.Helper()
	host, c := boundPair(t, hostCfg)
	appCfg.Role = RoleSlowPath
	return host, NewSession(c, appCfg)
}

// runOnClock runs s until the test ends, and returns once its watchdog and
// keepalive ticker wait on clock.
func runOnClock(t *testing.T, s *Session, clock *clockwork.FakeClock) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { defer close(ran); _ = s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-ran })
	blockUntil(t, clock, 2, s)
}

// blockUntil returns once clock has n timers, and fails if s ends first.
func blockUntil(t *testing.T, clock *clockwork.FakeClock, n int, s *Session) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait.Limit)
	defer cancel()
	blocked := make(chan error, 1)
	go func() { blocked <- clock.BlockUntilContext(ctx, n) }()
	select {
	case err := <-blocked:
		if err != nil {
			t.Fatalf("the clock never had %d timers: %v", n, err)
		}
	case <-s.Done():
		t.Fatalf("the session ended while waiting for %d timers: %v", n, s.Err())
	}
}

// next reads the next frame the session sent to the bare end c.
func next(t *testing.T, c *Conn) Frame {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(wait.Limit)) // I/O safety only: a hung test fails
	f, err := c.R.ReadFrame()
	if err != nil {
		t.Fatalf("read from the session: %v", err)
	}
	return f
}

func sendPing(t *testing.T, c *Conn, typ FrameType, token uint64) {
	t.Helper()
	p, _ := Ping{Token: token}.Marshal()
	if err := c.W.WriteFrame(typ, p); err != nil {
		t.Fatal(err)
	}
	if err := c.W.Flush(); err != nil {
		t.Fatal(err)
	}
}

func token(t *testing.T, f Frame, want FrameType) time.Duration {
	t.Helper()
	if f.Type != want {
		t.Fatalf("got %s, want %s", f.Type, want)
	}
	p, err := UnmarshalPing(f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return time.Duration(p.Token)
}

func TestSessionBatchesWrites(t *testing.T) {
	var n atomic.Int64
	host, app := boundSessions(t,
		SessionConfig{Keepalive: time.Hour, DeadAfter: 2 * time.Hour, QueueDepth: 4096},
		SessionConfig{Keepalive: time.Hour, DeadAfter: 2 * time.Hour, Handle: func(f Frame) error {
			n.Add(1)
			return nil
		}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go host.Run(ctx)
	go app.Run(ctx)
	ev, _ := AppendEventBatch(nil, []EventRecord{{Kind: EventEngineStatus, Body: []byte(`{}`)}})
	for i := 0; i < 2000; i++ {
		if err := host.Send(TypeEventBatch, ev); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, "all 2000 frames to arrive", func() bool { return n.Load() == 2000 })
	_, out, writes := host.Counters()
	t.Logf("2000 frames in %d writes (%.0f frames per write)", writes, float64(out)/float64(writes))
	if writes*10 > out {
		t.Fatalf("%d frames took %d writes: not batched", out, writes)
	}
}

// TestSessionDeclaresSilentPeerDeadExactlyAtDeadAfter: silence is counted
// on the session's clock from the last frame heard. A peer that spoke at
// 2 s is alive at 4.999999999 s and dead at 5 s, with DeadAfter 3 s.
func TestSessionDeclaresSilentPeerDeadExactlyAtDeadAfter(t *testing.T) {
	clock := clockwork.NewFakeClock()
	host, peer := boundPair(t, SessionConfig{Keepalive: time.Hour, DeadAfter: 3 * time.Second, Clock: clock})
	runOnClock(t, host, clock)

	clock.Advance(2 * time.Second)
	sendPing(t, peer, TypePing, 1)
	if got := token(t, next(t, peer), TypePong); got != 1 {
		t.Fatalf("PONG token %d, want 1", got)
	}
	// The watchdog wakes at 3 s, its first bound, finds 1 s of silence and
	// waits for the rest: it must re-arm, not close.
	deadExactlyAfter(t, clock, host, 3*time.Second)
}

// deadExactlyAfter moves the clock to 1 ns before silence reaches bound,
// checks that s still runs, then to bound, and checks that s declared its
// peer dead.
func deadExactlyAfter(t *testing.T, clock *clockwork.FakeClock, s *Session, bound time.Duration) {
	t.Helper()
	clock.Advance(bound - time.Nanosecond)
	blockUntil(t, clock, 2, s)
	if err := s.Err(); err != nil {
		t.Fatalf("declared dead after %s of silence: %v", bound-time.Nanosecond, err)
	}
	clock.Advance(time.Nanosecond)
	wait.For(t, "the session to end", func() bool { return s.Err() != nil })
	var dead *DeadPeerError
	if err := s.Err(); !errors.As(err, &dead) || dead.Silent != bound || err.Error() != "peer dead: nothing received for "+bound.String() {
		t.Fatalf("got %v, want a DeadPeerError after %s", err, bound)
	}
}

// TestSessionSlowHandlerIsNotSilence: while Handle runs the reader is not
// waiting for the peer, so a handler that takes longer than DeadAfter does
// not make the peer look dead; once it returns, silence counts again and
// ends the session exactly DeadAfter after the last frame.
func TestSessionSlowHandlerIsNotSilence(t *testing.T) {
	clock := clockwork.NewFakeClock()
	entered, release := make(chan struct{}), make(chan struct{})
	host, peer := boundPair(t, SessionConfig{Keepalive: time.Hour, DeadAfter: 3 * time.Second, Clock: clock,
		Handle: func(Frame) error { close(entered); <-release; return nil }})
	runOnClock(t, host, clock)
	var once sync.Once
	let := func() { once.Do(func() { close(release) }) }
	t.Cleanup(let) // before the session stops: a failed test must not leave Handle blocked
	ev, _ := AppendEventBatch(nil, nil)
	if err := peer.W.WriteFrame(TypeEventBatch, ev); err != nil {
		t.Fatal(err)
	}
	if err := peer.W.Flush(); err != nil {
		t.Fatal(err)
	}
	<-entered
	clock.Advance(10 * time.Second)
	blockUntil(t, clock, 2, host) // the watchdog looked, and waits again
	if err := host.Err(); err != nil {
		t.Fatalf("a handler busy for 10 s made the peer look dead: %v", err)
	}
	let()
	sendPing(t, peer, TypePing, 1) // heard at 10 s, after the handler
	if got := token(t, next(t, peer), TypePong); got != 1 {
		t.Fatalf("PONG token %d, want 1", got)
	}
	deadExactlyAfter(t, clock, host, 3*time.Second)
}

// TestSessionPingsEveryKeepalive: PINGs leave at exactly 1, 2, … 5 s on the
// session's clock with Keepalive 1 s, none in between, each carrying its
// tick's time as token.
func TestSessionPingsEveryKeepalive(t *testing.T) {
	clock := clockwork.NewFakeClock()
	host, peer := boundPair(t, SessionConfig{Keepalive: time.Second, DeadAfter: time.Hour, Clock: clock})
	runOnClock(t, host, clock)
	for k := 1; k <= 5; k++ {
		clock.Advance(time.Second)
		if got, want := token(t, next(t, peer), TypePing), time.Duration(k)*time.Second; got != want {
			t.Fatalf("PING %d sent at %s on the clock, want %s", k, got, want)
		}
	}
}

// TestSessionRTTOnItsClock: a PONG 7 ms after the PING, on the session's
// clock, is a round trip of exactly 7 ms.
func TestSessionRTTOnItsClock(t *testing.T) {
	clock := clockwork.NewFakeClock()
	host, peer := boundPair(t, SessionConfig{Keepalive: time.Second, DeadAfter: time.Hour, Clock: clock})
	runOnClock(t, host, clock)
	clock.Advance(time.Second)
	tok := token(t, next(t, peer), TypePing)
	clock.Advance(7 * time.Millisecond)
	sendPing(t, peer, TypePong, uint64(tok))
	wait.For(t, "the host to measure the round trip", func() bool { return host.RTT() != 0 })
	if rtt := host.RTT(); rtt != 7*time.Millisecond {
		t.Fatalf("keepalive RTT %s, want 7ms", rtt)
	}
}

// TestSessionRTT: on the real clock, two sessions measure their round trip.
func TestSessionRTT(t *testing.T) {
	host, app := boundSessions(t, SessionConfig{Keepalive: 20 * time.Millisecond}, SessionConfig{Keepalive: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go host.Run(ctx)
	go app.Run(ctx)
	wait.For(t, "a keepalive round trip", func() bool { return host.RTT() > 0 })
}

func TestSessionClosesOnOutOfOrderFrame(t *testing.T) {
	host, app := boundSessions(t, SessionConfig{}, SessionConfig{})
	go func() {
		// The slow path never sends punts: a PUNT_BATCH from it is out of order.
		p, _ := AppendPuntBatch(nil, nil)
		_ = app.conn.W.WriteFrame(TypePuntBatch, p)
		_ = app.conn.W.Flush()
	}()
	err := host.Run(context.Background())
	if !IsProtocolError(err) || !strings.Contains(err.Error(), "out-of-order frame: PUNT_BATCH after binding") {
		t.Fatalf("got %v", err)
	}
}

// TestSessionGoodbyeOnShutdown stops a running host (it has handled a frame
// from the slow path): the slow path hears GOODBYE(shutting down).
func TestSessionGoodbyeOnShutdown(t *testing.T) {
	running := make(chan struct{})
	var once sync.Once
	host, app := boundSessions(t, SessionConfig{Handle: func(Frame) error {
		once.Do(func() { close(running) })
		return nil
	}}, SessionConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	appErr := make(chan error, 1)
	go func() { appErr <- app.Run(context.Background()) }()
	hostDone := make(chan struct{})
	go func() { defer close(hostDone); _ = host.Run(ctx) }()
	ev, _ := AppendEventBatch(nil, nil)
	if err := app.Send(TypeEventBatch, ev); err != nil {
		t.Fatal(err)
	}
	<-running
	cancel()
	<-hostDone
	var bye *GoodbyeError
	if err := <-appErr; !errors.As(err, &bye) || bye.Reason.Code != RejectShuttingDown {
		t.Fatalf("appliance saw %v, want GOODBYE(shutting down)", err)
	}
}

// TestLargeFrameAfterQuietSpellIsWritten sends a frame larger than the
// Writer's buffer long after the last write: the part that goes straight to
// the connection must be written under a fresh deadline, not the last one.
func TestLargeFrameAfterQuietSpellIsWritten(t *testing.T) {
	host, app := boundSessions(t, SessionConfig{DeadAfter: 100 * time.Millisecond}, SessionConfig{})
	go func() { _, _ = io.Copy(io.Discard, app.conn) }()
	small, _ := AppendEventBatch(nil, []EventRecord{{Kind: EventEngineStatus, Body: []byte(`{}`)}})
	if err := host.writeBatch([]outFrame{{TypeEventBatch, small}}); err != nil {
		t.Fatal(err)
	}
	// After a quiet spell, the deadline that write set has passed.
	if err := host.conn.SetWriteDeadline(aLongTimeAgo); err != nil {
		t.Fatal(err)
	}
	big, err := AppendEventBatch(nil, []EventRecord{{Kind: EventAlert, Body: make([]byte, 60<<10)},
		{Kind: EventAlert, Body: make([]byte, 60<<10)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := host.writeBatch([]outFrame{{TypeEventBatch, big}}); err != nil {
		t.Fatalf("a %d-byte frame after a quiet spell: %v", len(big), err)
	}
}

func TestSendReportsAFullQueue(t *testing.T) {
	host, _ := boundSessions(t, SessionConfig{QueueDepth: 1}, SessionConfig{})
	host.qmu.Lock()
	host.writing = true // a write is in progress: frames queue
	host.qmu.Unlock()
	p, _ := Ping{Token: 1}.Marshal()
	if err := host.Send(TypePing, p); err != nil {
		t.Fatal(err)
	}
	if err := host.Send(TypePing, p); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("second frame into a queue of one: %v", err)
	}
	host.Close(errors.New("test over"))
	if err := host.Send(TypePing, p); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("after close: %v", err)
	}
}
