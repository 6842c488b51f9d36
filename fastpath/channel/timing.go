package channel

import (
	"fmt"
	"time"

	"github.com/jonboulle/clockwork"
)

// Defaults of the binding's liveness bounds.
const (
	DefaultKeepalive        = time.Second
	DefaultDeadAfter        = 3 * time.Second
	DefaultHandshakeTimeout = 5 * time.Second
)

// Timing bounds the binding's liveness on either side.
type Timing struct {
	Keepalive        time.Duration // how often to PING (default 1s)
	DeadAfter        time.Duration // silence after which the peer is dead (default 3s)
	HandshakeTimeout time.Duration // time allowed to connect, and then to handshake (default 5s)
	// Clock is what every bound above is measured on (default the real
	// clock); tests inject a fake one to step through exact sequences.
	Clock clockwork.Clock
}

// WithDefaults fills zero fields and checks that a healthy peer, pinging every
// Keepalive, can never look dead.
func (t Timing) WithDefaults() (Timing, error) {
	if t.Keepalive <= 0 {
		t.Keepalive = DefaultKeepalive
	}
	if t.DeadAfter <= 0 {
		t.DeadAfter = DefaultDeadAfter
	}
	if t.HandshakeTimeout <= 0 {
		t.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if t.Clock == nil {
		t.Clock = clockwork.NewRealClock()
	}
	if t.DeadAfter <= t.Keepalive {
		return t, fmt.Errorf("dead-after %s must exceed keepalive %s", t.DeadAfter, t.Keepalive)
	}
	return t, nil
}
