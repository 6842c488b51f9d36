package bindclient

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/palisade/palisade/fastpath/channel"
)

// refusingListener accepts on loopback and closes every connection at once,
// recording when each attempt arrived: a fast path that is up but never
// completes a handshake.
type refusingListener struct {
	ln net.Listener
	mu sync.Mutex
	at []time.Time
}

func newRefusingListener(t *testing.T) *refusingListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &refusingListener{ln: ln}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.at = append(r.at, time.Now())
			r.mu.Unlock()
			_ = c.Close()
		}
	}()
	return r
}

func (r *refusingListener) attempts() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.at...)
}

func newTestClient(t *testing.T, addr string, minB, maxB time.Duration) *Client {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	c, err := New(Config{
		Self:       channel.Identity{Version: channel.Version{Major: 1, Minor: 2, ServicePack: 3, Build: 4}, ID: "appliance-test"},
		Endpoint:   addr,
		Dial:       func(ctx context.Context) (net.Conn, error) { return (&net.Dialer{}).DialContext(ctx, "tcp", addr) },
		Secret:     func() ([]byte, error) { return []byte("0123456789abcdef0123456789abcdef"), nil },
		BackoffMin: minB,
		BackoffMax: maxB,
		Log:        log,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestBackoffDoublesAndCaps: failed attempts are retried after BackoffMin,
// then twice as long each time, never longer than BackoffMax (±20% jitter).
func TestBackoffDoublesAndCaps(t *testing.T) {
	const minB, maxB = 40 * time.Millisecond, 160 * time.Millisecond
	r := newRefusingListener(t)
	c := newTestClient(t, r.ln.Addr().String(), minB, maxB)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- c.Run(ctx) }()

	deadline := time.Now().Add(10 * time.Second)
	for len(r.attempts()) < 7 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	at := r.attempts()
	if len(at) < 7 {
		t.Fatalf("%d attempts in 10 s, want 7", len(at))
	}
	if first := at[0].Sub(start); first > minB/2 {
		t.Errorf("first attempt after %v: it should be immediate", first)
	}
	// Scheduling can only make a wait longer, so the lower bounds are
	// strict and the upper ones leave room for a slow CI machine.
	const slack = 150 * time.Millisecond
	want := []time.Duration{minB, 2 * minB, maxB, maxB, maxB, maxB}
	for i, w := range want {
		gap := at[i+1].Sub(at[i])
		lo, hi := time.Duration(float64(w)*0.8), time.Duration(float64(w)*1.2)+slack
		if gap < lo || gap > hi {
			t.Errorf("wait before attempt %d: %v, want %v ±20%% (%v..%v)", i+2, gap, w, lo, hi)
		}
	}
	st := c.Status()
	if st.State != channel.StateStopped {
		t.Errorf("state after cancel %q, want %q", st.State, channel.StateStopped)
	}
	if st.Bindings != 0 || st.LastError == "" {
		t.Errorf("status after refused attempts: bindings %d, last error %q; want 0 and the reason", st.Bindings, st.LastError)
	}
}

// TestRunStopsDuringLongBackoff: cancelling while waiting to reconnect ends
// Run at once rather than after the wait.
func TestRunStopsDuringLongBackoff(t *testing.T) {
	r := newRefusingListener(t)
	c := newTestClient(t, r.ln.Addr().String(), time.Hour, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for c.Status().State != channel.StateBackoff && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if s := c.Status().State; s != channel.StateBackoff {
		t.Fatalf("state %q after a refused attempt, want %q", s, channel.StateBackoff)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Second):
		t.Fatal("Run still waiting 1 s after cancel")
	}
	if n := len(r.attempts()); n != 1 {
		t.Errorf("%d attempts, want 1", n)
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
