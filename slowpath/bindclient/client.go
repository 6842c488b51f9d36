package bindclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
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

	channel.Timing
	BackoffMin time.Duration // default 100ms
	BackoffMax time.Duration // default 5s

	Log     logrus.FieldLogger
	Handler channel.Handler
}

// Client keeps a slow path bound to one fast path.
type Client struct {
	cfg     Config
	tracker *channel.Tracker
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
	return &Client{cfg: cfg, tracker: channel.NewTracker("slow path", cfg.Endpoint, cfg.Self, channel.StateConnecting)}, nil
}

// Run binds, serves, and rebinds until ctx ends. The first attempt is
// immediate, so a restarted slow path binds as soon as the fast path answers.
func (c *Client) Run(ctx context.Context) error {
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
		wait := jitter(backoff)
		c.tracker.SetState(channel.StateBackoff)
		c.cfg.Log.WithFields(logrus.Fields{"fast_path": c.cfg.Endpoint, "retry_in": wait.Round(time.Millisecond).String()}).
			Debug("reconnecting to fast path")
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			c.tracker.SetState(channel.StateStopped)
			return nil
		}
		backoff = min(2*backoff, c.cfg.BackoffMax)
	}
}

// jitter spreads retries by ±20% so appliances restarted together do not
// reconnect in lockstep.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// attempt makes one connection and serves it; bound reports whether the
// handshake completed.
func (c *Client) attempt(ctx context.Context) (bound bool, err error) {
	c.tracker.SetState(channel.StateConnecting)
	secret, err := c.cfg.Secret()
	if err != nil {
		c.cfg.Log.WithError(err).Error("cannot read the binding secret")
		return false, err
	}
	dctx, cancel := context.WithTimeout(ctx, c.cfg.HandshakeTimeout)
	nc, err := c.cfg.Dial(dctx)
	cancel()
	if err != nil {
		return false, err
	}
	log := c.cfg.Log.WithFields(logrus.Fields{"fast_path": nc.RemoteAddr().String(), "local": nc.LocalAddr().String()})
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Now()) })
	_ = nc.SetDeadline(time.Now().Add(c.cfg.HandshakeTimeout))
	conn := channel.NewConn(nc)
	res, err := conn.Offer(channel.OfferConfig{Self: c.cfg.Self, Secret: secret})
	stop()
	if err != nil {
		_ = nc.Close()
		c.logRefusal(log, res, err)
		return false, err
	}
	_ = nc.SetDeadline(time.Time{})
	sess := channel.NewSession(conn, channel.SessionConfig{
		Role: channel.RoleSlowPath, Keepalive: c.cfg.Keepalive, DeadAfter: c.cfg.DeadAfter,
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

func (c *Client) logRefusal(log logrus.FieldLogger, res channel.Result, err error) {
	var rej *channel.RejectedError
	entry := log.WithField("reason", err.Error())
	if res.Peer.Version != (channel.Version{}) || errors.As(err, &rej) {
		entry = entry.WithFields(logrus.Fields{"slow_path_version": c.cfg.Self.Version.String(),
			"revision": c.cfg.Self.Revision})
		if res.Peer.Version != (channel.Version{}) {
			entry = entry.WithField("fast_path_version", res.Peer.Version.String())
		}
	}
	key := "error"
	switch {
	case errors.As(err, &rej) && rej.Local:
		key = rej.Code.String()
		entry.Error("fast path refused by slow path: " + rej.Code.String())
	case errors.As(err, &rej):
		key = rej.Code.String()
		entry.Error("binding rejected by fast path: " + rej.Code.String())
	default:
		entry.Warn("cannot bind to fast path")
	}
	c.tracker.Refused(key, err)
}

// Session is the bound session, or nil.
func (c *Client) Session() *channel.Session { return c.tracker.Session() }

// Status reports the binding for `slowpathd status`.
func (c *Client) Status() channel.BindingStatus { return c.tracker.Status() }
