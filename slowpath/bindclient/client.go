package bindclient

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/palisade/palisade/fastpath/channel"
)

// Config configures a Client.
type Config struct {
	Self     channel.Identity
	Endpoint string // as configured, for status and logs
	// Dial opens one connection to the fast path.
	Dial func(ctx context.Context) (net.Conn, error)
	// Secret is read before every attempt, so fixing a wrong secret file
	// heals the binding without a restart.
	Secret func() ([]byte, error)

	// Timing's Clock also paces the backoff and the refusal summaries.
	channel.Timing
	BackoffMin time.Duration // default 100ms
	BackoffMax time.Duration // default 5s
	// Jitter returns numbers uniform in [0, 1) that spread each backoff by
	// ±20% (default math/rand/v2's Float64).
	Jitter func() float64
	// RefusalLogEvery is the interval of the refusal summaries (default
	// 10s): see channel.RefusalLog.
	RefusalLogEvery time.Duration

	Log     logrus.FieldLogger
	Handler channel.Handler
}

// Client keeps a slow path bound to one fast path.
type Client struct {
	cfg      Config
	tracker  *channel.Tracker
	refusals *channel.RefusalLog
}

// New checks cfg and applies defaults.
func New(cfg Config) (*Client, error) {
	if cfg.Dial == nil || cfg.Secret == nil {
		return nil, errors.New("bindclient: Dial and Secret are required")
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	var err error
	if cfg.Timing, err = cfg.Timing.WithDefaults(); err != nil {
		return nil, fmt.Errorf("bindclient: %w", err)
	}
	if cfg.BackoffMin <= 0 {
		cfg.BackoffMin = 100 * time.Millisecond
	}
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = 5 * time.Second
	}
	if cfg.Jitter == nil {
		cfg.Jitter = rand.Float64
	}
	if cfg.RefusalLogEvery <= 0 {
		cfg.RefusalLogEvery = 10 * time.Second
	}
	return &Client{cfg: cfg, tracker: channel.NewTracker("slow path", cfg.Endpoint, cfg.Self, channel.StateConnecting, cfg.Clock),
		refusals: channel.NewRefusalLog(cfg.Clock, cfg.RefusalLogEvery)}, nil
}

// Run binds, serves, and rebinds until ctx ends. The first attempt is
// immediate, so a restarted slow path binds as soon as the fast path answers.
func (c *Client) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { defer wg.Done(); c.refusals.Run(ctx) }()
	backoff := c.cfg.BackoffMin
	failures := 0
	for {
		bound, err := c.attempt(ctx)
		if ctx.Err() != nil {
			c.tracker.SetState(channel.StateStopped)
			return nil
		}
		if bound {
			backoff, failures = c.cfg.BackoffMin, 0 // a binding that worked resets the backoff
		} else if err != nil {
			c.tracker.Failed(err)
			// The first failure of a streak is worth a warning; the rest
			// would flood the log while the fast path is down.
			if failures++; channel.RejectCodeOf(err) == 0 && (failures == 1 || failures%20 == 0) {
				c.cfg.Log.WithFields(logrus.Fields{"fast_path": c.cfg.Endpoint, "attempts": failures}).
					WithError(err).Warn("cannot reach fast path; retrying with backoff")
			}
		}
		wait := jittered(backoff, c.cfg.Jitter())
		c.tracker.SetState(channel.StateBackoff)
		c.cfg.Log.WithFields(logrus.Fields{"fast_path": c.cfg.Endpoint, "retry_in": wait.Round(time.Millisecond).String()}).
			Debug("reconnecting to fast path")
		if !c.sleep(ctx, wait) {
			c.tracker.SetState(channel.StateStopped)
			return nil
		}
		backoff = nextBackoff(backoff, c.cfg.BackoffMax)
	}
}

// sleep waits d on the clock; false if ctx ended first.
func (c *Client) sleep(ctx context.Context, d time.Duration) bool {
	t := c.cfg.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.Chan():
		return true
	case <-ctx.Done():
		return false
	}
}

// nextBackoff is the backoff after one more failed attempt: doubled, and
// never more than max.
func nextBackoff(backoff, max time.Duration) time.Duration {
	return min(2*backoff, max)
}

// jittered spreads backoff by ±20% for u uniform in [0, 1), so appliances
// restarted together do not reconnect in lockstep.
func jittered(backoff time.Duration, u float64) time.Duration {
	return time.Duration(math.Round(float64(backoff) * (0.8 + 0.4*u)))
}

// attempt makes one connection and serves it; bound reports whether the
// handshake completed.
func (c *Client) attempt(ctx context.Context) (bound bool, err error) {
	c.tracker.SetState(channel.StateConnecting)
	secret, err := c.cfg.Secret()
	if err != nil {
		c.refusals.Note(c.cfg.Log.WithError(err), logrus.ErrorLevel, "cannot read the binding secret", c.cfg.Endpoint)
		return false, err
	}
	dial := channel.StartLimit(ctx, c.cfg.Clock, c.cfg.HandshakeTimeout, "connect")
	nc, err := c.cfg.Dial(dial.Context())
	if err = dial.Stop(err); err != nil {
		if nc != nil {
			_ = nc.Close()
		}
		return false, err
	}
	log := c.cfg.Log.WithFields(logrus.Fields{"fast_path": nc.RemoteAddr().String(), "local": nc.LocalAddr().String()})
	handshake := channel.StartLimit(ctx, c.cfg.Clock, c.cfg.HandshakeTimeout, "handshake")
	handshake.Watch(nc)
	conn := channel.NewConn(nc)
	res, err := conn.Offer(channel.OfferConfig{Self: c.cfg.Self, Secret: secret})
	if err = handshake.Stop(err); err != nil {
		_ = nc.Close()
		c.logRefusal(log, res, err)
		return false, err
	}
	sess := channel.NewSession(conn, channel.SessionConfig{
		Role: channel.RoleSlowPath, Keepalive: c.cfg.Keepalive, DeadAfter: c.cfg.DeadAfter, Clock: c.cfg.Clock,
		Handle: c.handleFrame,
	})
	if n := c.tracker.Bound(sess, res); n > 1 {
		log = log.WithField("reconnects", n-1)
	}
	log.WithFields(logrus.Fields{"host": res.Peer.ID, "fast_path_version": res.Peer.Version.String(),
		"slow_path_version": c.cfg.Self.Version.String(), "revision": res.Peer.Revision,
		"capabilities": res.Negotiated.String(), "session": res.SessionID}).Info("bound to fast path")
	if h := c.cfg.Handler; h != nil {
		h.Bound(sess, res)
	}
	reason := sess.Run(ctx)
	c.tracker.Unbound(sess, reason, channel.StateBackoff)
	if ctx.Err() == nil {
		log.WithField("reason", reason.Error()).Warn("binding to fast path lost")
	}
	if h := c.cfg.Handler; h != nil {
		h.Unbound(reason)
	}
	return true, reason
}

func (c *Client) handleFrame(f channel.Frame) error {
	if h := c.cfg.Handler; h != nil {
		return h.HandleFrame(f)
	}
	return nil
}

// logRefusal counts a failed handshake in the status and logs it through the
// refusal log: a refused appliance retries every few seconds, and one line
// per interval says as much as one per retry.
func (c *Client) logRefusal(log *logrus.Entry, res channel.Result, err error) {
	var rej *channel.RejectedError
	entry := log.WithField("reason", err.Error())
	if res.Peer.Version != (channel.Version{}) || errors.As(err, &rej) {
		entry = entry.WithFields(logrus.Fields{"slow_path_version": c.cfg.Self.Version.String(),
			"revision": c.cfg.Self.Revision})
		if res.Peer.Version != (channel.Version{}) {
			entry = entry.WithField("fast_path_version", res.Peer.Version.String())
		}
	}
	key, level, msg := "error", logrus.WarnLevel, "cannot bind to fast path"
	switch {
	case errors.As(err, &rej) && rej.Local:
		key, level, msg = rej.Code.String(), logrus.ErrorLevel, "fast path refused by slow path: "+rej.Code.String()
	case errors.As(err, &rej):
		key, level, msg = rej.Code.String(), logrus.ErrorLevel, "binding rejected by fast path: "+rej.Code.String()
	}
	c.tracker.Refused(key, err)
	c.refusals.Note(entry, level, msg, c.cfg.Endpoint)
}

// Session is the bound session, or nil.
func (c *Client) Session() *channel.Session { return c.tracker.Session() }

// Status reports the binding for `slowpathd status`.
func (c *Client) Status() channel.BindingStatus { return c.tracker.Status() }
