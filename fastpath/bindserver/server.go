package bindserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/palisade/palisade/fastpath/channel"
)

// Config configures a Server.
type Config struct {
	Self     channel.Identity
	Secret   []byte
	Endpoint string // as configured, for status

	// Timing's Clock also paces the two warnings below.
	channel.Timing
	UnboundWarnEvery time.Duration // default 10s, as the original's "DSVA not bound"
	// RefusalLogEvery is the interval of the refused-connection summaries
	// (default 10s): see channel.RefusalLog.
	RefusalLogEvery time.Duration
	// DeepInspection lists the engines that live in the slow path and are
	// offline while none is bound (default ips, wrs).
	DeepInspection channel.Capabilities

	Log     logrus.FieldLogger
	Handler channel.Handler
}

// Server accepts slow paths and keeps at most one bound.
type Server struct {
	cfg      Config
	tracker  *channel.Tracker
	refusals *channel.RefusalLog

	mu      sync.Mutex
	claimed bool // an authenticated slow path holds (or is completing) the binding

	sessionID      atomic.Uint64
	noEventsLogged atomic.Pointer[channel.Session] // the binding Publish last said takes no events
}

// New checks cfg and applies defaults.
func New(cfg Config) (*Server, error) {
	if len(cfg.Secret) == 0 {
		return nil, errors.New("bindserver: no secret")
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	var err error
	if cfg.Timing, err = cfg.Timing.WithDefaults(); err != nil {
		return nil, fmt.Errorf("bindserver: %w", err)
	}
	if cfg.UnboundWarnEvery <= 0 {
		cfg.UnboundWarnEvery = 10 * time.Second
	}
	if cfg.RefusalLogEvery <= 0 {
		cfg.RefusalLogEvery = 10 * time.Second
	}
	if cfg.DeepInspection == 0 {
		cfg.DeepInspection = channel.CapIPS | channel.CapWRS
	}
	s := &Server{cfg: cfg, tracker: channel.NewTracker("fast path", cfg.Endpoint, cfg.Self, channel.StateListening, cfg.Clock),
		refusals: channel.NewRefusalLog(cfg.Clock, cfg.RefusalLogEvery)}
	s.sessionID.Store(uint64(time.Now().UnixNano()))
	return s, nil
}

// Serve accepts connections on ln until ctx ends, then closes the listener and
// every connection (a bound slow path gets a GOODBYE) and returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	wg.Add(1)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		_ = ln.Close()
	}()
	wg.Add(2)
	go func() { defer wg.Done(); s.warnWhileUnbound(ctx) }()
	go func() { defer wg.Done(); s.refusals.Run(ctx) }()

	s.cfg.Log.WithFields(logrus.Fields{"bind_address": ln.Addr().String(), "version": s.cfg.Self.Version.String(),
		"revision": s.cfg.Self.Revision}).Info("fast path listening for slow path")
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
			}
			s.cfg.Log.WithError(err).Warn("accept failed; retrying")
			// A throttle on a failing accept (out of descriptors), on the
			// wall clock: nothing waits for it.
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, c)
		}()
	}
}

func (s *Server) serveConn(ctx context.Context, nc net.Conn) {
	log := s.cfg.Log.WithField("peer", nc.RemoteAddr().String())
	limit := channel.StartLimit(ctx, s.cfg.Clock, s.cfg.HandshakeTimeout, "handshake")
	limit.Watch(nc)
	c := channel.NewConn(nc)
	claimedHere := false
	res, err := c.Accept(channel.AcceptConfig{
		Self: s.cfg.Self, Secret: s.cfg.Secret, SessionID: s.sessionID.Add(1),
		Keepalive: s.cfg.Keepalive, DeadAfter: s.cfg.DeadAfter,
		Admit: func(peer channel.Identity) error {
			if err := s.claim(); err != nil {
				return err
			}
			claimedHere = true
			return nil
		},
	})
	if err = limit.Stop(err); err != nil {
		if claimedHere {
			s.unclaim()
		}
		s.refuse(nc.RemoteAddr(), res, err)
		_ = nc.Close()
		return
	}

	sess := channel.NewSession(c, channel.SessionConfig{
		Role: channel.RoleFastPath, Keepalive: s.cfg.Keepalive, DeadAfter: s.cfg.DeadAfter, Clock: s.cfg.Clock,
		Handle: s.handleFrame,
	})
	s.tracker.Bound(sess, res)
	log.WithFields(logrus.Fields{
		"appliance": res.Peer.ID, "slow_path_version": res.Peer.Version.String(),
		"fast_path_version": s.cfg.Self.Version.String(), "revision": res.Peer.Revision,
		"capabilities": res.Negotiated.String(), "session": res.SessionID,
	}).Info("slow path bound")
	if h := s.cfg.Handler; h != nil {
		h.Bound(sess, res)
	}
	reason := sess.Run(ctx)
	s.tracker.Unbound(sess, reason, channel.StateListening)
	log.WithFields(logrus.Fields{"appliance": res.Peer.ID, "reason": errString(reason)}).Warn("slow path binding lost")
	// The handler lets go of this binding before the next slow path may be
	// admitted: otherwise its Unbound could undo the next one's Bound.
	if h := s.cfg.Handler; h != nil {
		h.Unbound(reason)
	}
	s.unclaim()
}

func (s *Server) handleFrame(f channel.Frame) error {
	if h := s.cfg.Handler; h != nil {
		return h.HandleFrame(f)
	}
	// Nothing consumes verdicts or events yet; they are still decoded so a
	// malformed batch ends the session exactly as it will with a handler.
	switch f.Type {
	case channel.TypeVerdictBatch:
		_, err := channel.DecodeVerdictBatch(f.Payload, nil)
		return err
	case channel.TypeEventBatch:
		_, err := channel.DecodeEventBatch(f.Payload, nil)
		return err
	}
	return nil
}

// AlreadyBoundError refuses a second slow path while one is bound.
type AlreadyBoundError struct {
	Peer  string
	ID    string
	Since time.Time
}

func (e *AlreadyBoundError) Error() string {
	if e.ID == "" && e.Since.IsZero() {
		return "already bound: another slow path is completing its binding or being let go; one slow path per host"
	}
	return fmt.Sprintf("already bound: slow path %q from %s holds this host's binding since %s; one slow path per host",
		e.ID, e.Peer, e.Since.UTC().Format(time.RFC3339))
}

func (s *Server) claim() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.claimed {
		e := &AlreadyBoundError{Peer: "(binding in progress or ending)"}
		if sess, res, since := s.tracker.Binding(); sess != nil {
			e.Peer, e.ID, e.Since = sess.Conn().RemoteAddr().String(), res.Peer.ID, since
		}
		return e
	}
	s.claimed = true
	return nil
}

func (s *Server) unclaim() {
	s.mu.Lock()
	s.claimed = false
	s.mu.Unlock()
}

// refuse counts a refused or failed handshake in the status and logs it
// through the refusal log, which summarizes repeats per reason and peer.
func (s *Server) refuse(peer net.Addr, res channel.Result, err error) {
	var rej *channel.RejectedError
	key, msg := "error", "closing connection: handshake failed"
	entry := s.cfg.Log.WithField("reason", err.Error())
	if res.Peer.Version != (channel.Version{}) {
		entry = entry.WithFields(logrus.Fields{"slow_path_version": res.Peer.Version.String(),
			"fast_path_version": s.cfg.Self.Version.String(), "revision": s.cfg.Self.Revision,
			"slow_path_revision": res.Peer.Revision, "appliance": res.Peer.ID})
	}
	switch {
	case errors.As(err, &rej) && rej.Local:
		key, msg = rej.Code.String(), "HELLO rejected: "+rej.Code.String()
	case errors.As(err, &rej):
		key, msg = "refused by slow path: "+rej.Code.String(), "binding refused by slow path: "+rej.Code.String()
	case channel.IsProtocolError(err):
		key = "protocol error"
	}
	s.tracker.Refused(key, err)
	s.refusals.Note(entry, logrus.WarnLevel, msg, peerHost(peer))
}

// peerHost is a peer's address without its port, which a scanner changes
// on every connection: "169.254.1.10", or "vm(3)" over AF_VSOCK.
func peerHost(a net.Addr) string {
	if host, _, err := net.SplitHostPort(a.String()); err == nil {
		return host
	}
	return a.String()
}

// warnWhileUnbound warns every UnboundWarnEvery on the clock while no slow
// path is bound (first at UnboundWarnEvery: a restarted fastpathd does not
// warn before its appliance had a moment to reconnect).
func (s *Server) warnWhileUnbound(ctx context.Context) {
	t := s.cfg.Clock.NewTimer(s.cfg.UnboundWarnEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		if since := s.tracker.UnboundSince(); !since.IsZero() {
			s.cfg.Log.WithFields(logrus.Fields{
				"engines_offline": s.cfg.DeepInspection.String(),
				"unbound_for":     s.cfg.Clock.Since(since).Round(time.Second).String(),
				"bind_address":    s.cfg.Endpoint,
			}).Warn("slow path not bound: deep-inspection engines offline")
		}
		// Re-armed once the check is done, so a test's fake clock sees the
		// timer again exactly when this tick has been handled.
		t.Reset(s.cfg.UnboundWarnEvery)
	}
}

// Session is the bound session, or nil.
func (s *Server) Session() *channel.Session { return s.tracker.Session() }

// ErrNotBound is returned by Publish while no slow path is bound.
var ErrNotBound = errors.New("no slow path bound")

// ErrNoEvents is returned by Publish when the bound slow path did not
// negotiate the events capability: it is sent no EVENT_BATCH.
var ErrNoEvents = errors.New("the bound slow path did not negotiate events")

// Publish sends events to the bound slow path, if it negotiated events.
func (s *Server) Publish(recs ...channel.EventRecord) error {
	sess, res, _ := s.tracker.Binding()
	if sess == nil {
		return ErrNotBound
	}
	if !res.Negotiated.Has(channel.CapEvents) {
		if s.noEventsLogged.Swap(sess) != sess { // once per binding
			s.cfg.Log.WithFields(logrus.Fields{"appliance": res.Peer.ID, "capabilities": res.Negotiated.String()}).
				Warn("slow path did not negotiate events: events are not sent to it")
		}
		return ErrNoEvents
	}
	p, err := channel.AppendEventBatch(nil, recs)
	if err != nil {
		return err
	}
	return sess.Send(channel.TypeEventBatch, p)
}

// Status reports the binding for `fastpathd status`; the deep-inspection
// engines the binding does not provide are reported offline.
func (s *Server) Status() channel.BindingStatus {
	st := s.tracker.Status()
	offline := s.cfg.DeepInspection
	if _, res, _ := s.tracker.Binding(); st.State == channel.StateBound {
		offline &^= res.Negotiated
	}
	st.EnginesOff = offline.Names()
	return st
}

func errString(err error) string {
	if err == nil {
		return "none"
	}
	return err.Error()
}
