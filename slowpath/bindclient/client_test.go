package bindclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/hypervisor/lab/wait"
)

// fakeFastPath accepts on loopback, records when each attempt arrived on
// the test's clock, and lets serve answer it.
type fakeFastPath struct {
	ln net.Listener
	mu sync.Mutex
	at []time.Time
}

func newFakeFastPath(t *testing.T, clock clockwork.Clock, serve func(net.Conn)) *fakeFastPath {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeFastPath{ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.at = append(f.at, clock.Now())
			f.mu.Unlock()
			serve(c)
			_ = c.Close()
		}
	}()
	return f
}

// closeAtOnce is a fast path that is up but never completes a handshake.
func closeAtOnce(net.Conn) {}

func (f *fakeFastPath) attempts() []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.at...)
}

var testSelf = channel.Identity{Version: channel.Version{Major: 1, Minor: 2, ServicePack: 3, Build: 4}, ID: "appliance-test"}

// cycle returns a Jitter that yields us in turn.
func cycle(us ...float64) func() float64 {
	i := 0
	return func() float64 { u := us[i%len(us)]; i++; return u }
}

func newTestClient(t *testing.T, addr string, clock clockwork.Clock, minB, maxB time.Duration, jitter func() float64) (*Client, *test.Hook) {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	log.SetLevel(logrus.DebugLevel)
	c, err := New(Config{
		Self:       testSelf,
		Endpoint:   addr,
		Dial:       func(ctx context.Context) (net.Conn, error) { return (&net.Dialer{}).DialContext(ctx, "tcp", addr) },
		Secret:     func() ([]byte, error) { return []byte("0123456789abcdef0123456789abcdef"), nil },
		Timing:     channel.Timing{Clock: clock},
		BackoffMin: minB,
		BackoffMax: maxB,
		Jitter:     jitter,
		Log:        log,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c, test.NewLocal(log)
}

// run runs c until the test ends; stop cancels and returns Run's result.
func run(t *testing.T, c *Client) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error { once.Do(func() { cancel(); err = <-done }); return err }
	t.Cleanup(func() { _ = stop() })
	return stop
}

// backingOff returns once the client has failed attempt n and waits on the
// clock: its backoff timer and its refusal log's.
func backingOff(t *testing.T, c *Client, clock *clockwork.FakeClock, key string, n uint64) {
	t.Helper()
	wait.ForErr(t, fmt.Sprintf("attempt %d to fail", n), func() error {
		if got := c.Status().Refused[key]; got != n {
			return fmt.Errorf("%d %q refusals", got, key)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), wait.Limit)
	defer cancel()
	if err := clock.BlockUntilContext(ctx, 2); err != nil {
		t.Fatalf("no backoff timer after attempt %d: %v", n, err)
	}
}

func TestNextBackoffDoublesAndCaps(t *testing.T) {
	b := 100 * time.Millisecond
	var got []time.Duration
	for i := 0; i < 6; i++ {
		got = append(got, b)
		b = nextBackoff(b, time.Second)
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond,
		800 * time.Millisecond, time.Second, time.Second}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("backoffs %v, want %v", got, want)
	}
}

func TestJitterSpreadsByTwentyPercent(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		u    float64
		want time.Duration
	}{
		{100 * time.Millisecond, 0, 80 * time.Millisecond},
		{100 * time.Millisecond, 0.5, 100 * time.Millisecond},
		{time.Second, 0.25, 900 * time.Millisecond},
		{5 * time.Second, 0.75, 5500 * time.Millisecond},
		{5 * time.Second, 0.9999999999, 6 * time.Second},
	} {
		if got := jittered(c.d, c.u); got != c.want {
			t.Errorf("jittered(%s, %v) = %s, want %s", c.d, c.u, got, c.want)
		}
	}
}

// TestRunBacksOffOnItsClock: the first attempt is immediate; failed
// attempts are retried after BackoffMin, then twice as long each time, never
// more than BackoffMax, each spread by the jitter: on the clock, exactly.
func TestRunBacksOffOnItsClock(t *testing.T) {
	clock := clockwork.NewFakeClock()
	start := clock.Now()
	f := newFakeFastPath(t, clock, closeAtOnce)
	// Backoffs 40, 80, 160, 160, 160, 160 ms; factors 0.8, 1, 0.9, 1.1, 1, 0.8.
	c, logs := newTestClient(t, f.ln.Addr().String(), clock, 40*time.Millisecond, 160*time.Millisecond,
		cycle(0, 0.5, 0.25, 0.75, 0.5, 0))
	waits := []time.Duration{32 * time.Millisecond, 80 * time.Millisecond, 144 * time.Millisecond,
		176 * time.Millisecond, 160 * time.Millisecond, 128 * time.Millisecond}
	stop := run(t, c)

	want := []time.Time{start}
	for i, w := range waits {
		backingOff(t, c, clock, "error", uint64(i+1))
		var last *logrus.Entry
		for _, e := range logs.AllEntries() {
			if e.Message == "reconnecting to fast path" {
				last = e
			}
		}
		if last == nil || last.Data["retry_in"] != w.String() {
			t.Fatalf("wait %d: logged %v, want retry_in %s", i+1, last.Data, w)
		}
		clock.Advance(w)
		want = append(want, clock.Now())
		wait.For(t, fmt.Sprintf("attempt %d", i+2), func() bool { return len(f.attempts()) == i+2 })
	}
	if err := stop(); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if got := f.attempts(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("attempts at %v on the clock, want %v", got, want)
	}
	st := c.Status()
	if st.State != channel.StateStopped {
		t.Errorf("state after cancel %q, want %q", st.State, channel.StateStopped)
	}
	if st.Bindings != 0 || st.LastError == "" || st.Refused["error"] != uint64(len(want)) {
		t.Errorf("status after refused attempts: bindings %d, last error %q, refused %v; want 0, the reason and %d",
			st.Bindings, st.LastError, st.Refused, len(want))
	}
}

// TestRunStopsDuringLongBackoff: cancelling while waiting to reconnect ends
// Run at once: the clock never moves, so Run cannot have waited it out.
func TestRunStopsDuringLongBackoff(t *testing.T) {
	clock := clockwork.NewFakeClock()
	f := newFakeFastPath(t, clock, closeAtOnce)
	c, _ := newTestClient(t, f.ln.Addr().String(), clock, time.Hour, time.Hour, nil)
	stop := run(t, c)
	backingOff(t, c, clock, "error", 1)
	if s := c.Status().State; s != channel.StateBackoff {
		t.Fatalf("state %q after a refused attempt, want %q", s, channel.StateBackoff)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := len(f.attempts()); n != 1 {
		t.Errorf("%d attempts, want 1", n)
	}
}

// TestRefusedApplianceLogsOncePerInterval: an appliance the fast path
// refuses (wrong secret) retries every 3 s; in a 10 s interval that is one
// error at once and one summary of the 3 refusals after it, while the
// status counts all 4.
func TestRefusedApplianceLogsOncePerInterval(t *testing.T) {
	clock := clockwork.NewFakeClock()
	f := newFakeFastPath(t, clock, func(c net.Conn) {
		_, _ = channel.NewConn(c).Accept(channel.AcceptConfig{Self: channel.Identity{Version: channel.Version{Major: 1, Minor: 2, ServicePack: 3, Build: 9}},
			Secret: []byte("fedcba9876543210fedcba9876543210")})
	})
	c, logs := newTestClient(t, f.ln.Addr().String(), clock, 3*time.Second, 3*time.Second, cycle(0.5))
	run(t, c)
	const msg = "binding rejected by fast path: secret mismatch"
	for n := uint64(1); n <= 4; n++ { // attempts at 0, 3, 6 and 9 s
		backingOff(t, c, clock, "secret mismatch", n)
		if n < 4 {
			clock.Advance(3 * time.Second)
		}
	}
	clock.Advance(time.Second) // 10 s: the interval ends, the next attempt is at 12 s
	var got []string
	wait.For(t, "the refusal summary", func() bool {
		got = got[:0]
		for _, e := range logs.AllEntries() {
			if e.Message == msg {
				got = append(got, fmt.Sprintf("%v/%v/%v/%v", e.Level, e.Data["peer"], e.Data["count"], e.Data["interval"]))
			}
		}
		return len(got) == 2
	})
	addr := f.ln.Addr().String()
	want := []string{"error/" + addr + "/1/<nil>", "error/" + addr + "/3/10s"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("refusal lines %v, want %v", got, want)
	}
	if n := c.Status().Refused["secret mismatch"]; n != 4 {
		t.Fatalf("status counts %d refusals, want 4", n)
	}
}

func TestNewRequiresDialAndSecret(t *testing.T) {
	_, err := New(Config{Secret: func() ([]byte, error) { return nil, nil }})
	if err == nil {
		t.Fatal("New without Dial succeeded")
	}
	_, err = New(Config{Dial: func(context.Context) (net.Conn, error) { return nil, errors.New("x") }})
	if err == nil {
		t.Fatal("New without Secret succeeded")
	}
}
