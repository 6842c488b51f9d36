package channel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
)

// Role is which end of the binding a session is.
type Role uint8

const (
	RoleFastPath Role = 1
	RoleSlowPath Role = 2
)

func (r Role) String() string {
	if r == RoleFastPath {
		return "fast path"
	}
	return "slow path"
}

// peerMay lists the frame types the peer may send once bound: anything else
// is out of order and ends the session.
func (r Role) peerMay(t FrameType) bool {
	switch t {
	case TypePing, TypePong, TypeEventBatch, TypeGoodbye:
		return true
	case TypeVerdictBatch:
		return r == RoleFastPath // the slow path sends verdicts
	case TypePuntBatch:
		return r == RoleSlowPath // the fast path sends punts
	}
	return false
}

// ErrSessionClosed is returned by Send once the session has ended.
var ErrSessionClosed = errors.New("session closed")

// ErrQueueFull is returned by Send when QueueDepth frames already wait.
var ErrQueueFull = errors.New("send queue full")

// DeadPeerError means nothing arrived from the peer within the dead-peer bound.
type DeadPeerError struct{ Silent time.Duration }

func (e *DeadPeerError) Error() string {
	return fmt.Sprintf("peer dead: nothing received for %s", e.Silent.Round(time.Millisecond))
}

// GoodbyeError is an orderly close announced by the peer.
type GoodbyeError struct{ Reason Reject }

func (e *GoodbyeError) Error() string {
	return fmt.Sprintf("peer said goodbye: %s: %s", e.Reason.Code, e.Reason.Message)
}

// SessionConfig configures a bound session.
type SessionConfig struct {
	Role      Role
	Keepalive time.Duration // how often to PING
	DeadAfter time.Duration // silence after which the peer is declared dead
	// Clock measures Keepalive, DeadAfter and the round trip (default the
	// real clock).
	Clock clockwork.Clock
	// Handle receives every PUNT_BATCH, VERDICT_BATCH and EVENT_BATCH frame on
	// the reader goroutine. The payload is valid only during the call. A
	// ProtocolError from Handle closes the session with that reason.
	Handle func(Frame) error
	// QueueDepth bounds frames waiting to be written (default 1024).
	QueueDepth int
}

type outFrame struct {
	t FrameType
	p []byte
}

// Session is a bound connection: a reader that enforces the frame rules, a
// watchdog that enforces the dead-peer bound, a writer goroutine that
// coalesces queued frames into few writes, and keepalives.
type Session struct {
	conn *Conn
	cfg  SessionConfig
	done chan struct{}

	// Times on cfg.Clock are kept as offsets from epoch: an int64 fits an
	// atomic, and the real clock's offsets are monotonic (a wall-clock step
	// neither kills a healthy peer nor spares a dead one).
	epoch time.Time
	heard atomic.Int64 // offset when the last frame arrived, or handling

	// Frames to write. One goroutine at a time owns the Writer (writing):
	// the writer loop, or a Send that finds the session idle and writes its
	// frame itself, which saves a wakeup on the latency path.
	qmu       sync.Mutex
	queue     []outFrame
	writing   bool
	wake      chan struct{} // cap 1: the writer loop has work
	lastWrite atomic.Int64  // unix nanos when the last write finished

	closeOnce sync.Once
	closeErr  error
	mu        sync.Mutex

	rttNanos   atomic.Int64
	framesIn   atomic.Uint64
	framesOut  atomic.Uint64
	writeCalls atomic.Uint64
	pingSent   atomic.Int64 // offset of the outstanding ping's tick, also its token
}

// NewSession starts nothing; Run does.
func NewSession(c *Conn, cfg SessionConfig) *Session {
	if cfg.QueueDepth <= 0 {
		cfg.QueueDepth = 1024
	}
	if cfg.Keepalive <= 0 {
		cfg.Keepalive = DefaultKeepalive
	}
	if cfg.DeadAfter <= 0 {
		cfg.DeadAfter = DefaultDeadAfter
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	return &Session{conn: c, cfg: cfg, done: make(chan struct{}), wake: make(chan struct{}, 1), epoch: cfg.Clock.Now()}
}

// handling marks heard while Handle runs: the reader is not waiting for the
// peer then, so a slow handler is not the peer's silence (as a read deadline,
// set only around the read, never counted it).
const handling = math.MaxInt64

// now is the time on the session's clock, as an offset from epoch.
func (s *Session) now() int64 { return int64(s.cfg.Clock.Since(s.epoch)) }

// directWriteGap is how long the session must have been quiet for Send to
// write a frame itself: a lone frame (a verdict, a small punt batch) leaves
// without waiting for the writer loop, while a burst is still coalesced
// into few writes.
const directWriteGap = 50 * time.Microsecond

// Send queues a frame, or writes it at once if the session is idle. The
// direct write blocks while the connection takes the frame, up to DeadAfter
// (then the session ends); a queued frame never waits, and a full queue is
// ErrQueueFull, which the caller counts (a punt then falls back to the
// guest's fail policy).
func (s *Session) Send(t FrameType, payload []byte) error {
	select {
	case <-s.done:
		return ErrSessionClosed
	default:
	}
	s.qmu.Lock()
	idle := !s.writing && len(s.queue) == 0 && time.Now().UnixNano()-s.lastWrite.Load() > int64(directWriteGap)
	if idle {
		s.writing = true
		s.qmu.Unlock()
		err := s.writeBatch([]outFrame{{t, payload}})
		s.release()
		if err != nil {
			s.Close(fmt.Errorf("write to peer: %w", err))
			return err
		}
		return nil
	}
	if len(s.queue) >= s.cfg.QueueDepth {
		s.qmu.Unlock()
		return fmt.Errorf("send %s: %w (%d frames)", t, ErrQueueFull, s.cfg.QueueDepth)
	}
	s.queue = append(s.queue, outFrame{t, payload})
	writing := s.writing
	s.qmu.Unlock()
	if !writing {
		s.signal()
	}
	return nil
}

func (s *Session) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// release gives up the Writer; frames queued meanwhile go to the loop.
func (s *Session) release() {
	s.qmu.Lock()
	s.writing = false
	more := len(s.queue) > 0
	s.qmu.Unlock()
	if more {
		s.signal()
	}
}

// writeBatch writes frames and flushes them in one write (the Writer's
// buffer permitting), under the dead-peer bound.
func (s *Session) writeBatch(frames []outFrame) error {
	// The deadline comes first: whatever does not fit the Writer's buffer
	// goes straight to the connection while the frames are written. It is a
	// socket deadline, on the wall clock: only the kernel can end a write
	// that a peer, no longer reading, blocks.
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.cfg.DeadAfter))
	w := s.conn.W
	for _, f := range frames {
		if err := s.write(f.t, f.p); err != nil {
			return err
		}
	}
	err := w.Flush()
	s.writeCalls.Add(1)
	s.lastWrite.Store(time.Now().UnixNano())
	return err
}

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err is why the session ended (nil while it runs).
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeErr
}

// RTT is the last keepalive round-trip time.
func (s *Session) RTT() time.Duration { return time.Duration(s.rttNanos.Load()) }

// Counters reports frames read and written, and how many write system calls
// carried them (frames per write shows the batching).
func (s *Session) Counters() (in, out, writes uint64) {
	return s.framesIn.Load(), s.framesOut.Load(), s.writeCalls.Load()
}

// Close ends the session with reason; the first reason wins.
func (s *Session) Close(reason error) {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closeErr = reason
		s.mu.Unlock()
		close(s.done)
		_ = s.conn.Close()
	})
}

// Run serves the session until the peer goes away, breaks the protocol, falls
// silent, or ctx ends (then a GOODBYE is sent). It returns why it ended.
func (s *Session) Run(ctx context.Context) error {
	s.heard.Store(s.now()) // the handshake was the last thing heard
	// Both timers exist before Run's goroutines start, so a test's fake
	// clock sees them as soon as the session is running.
	dead := s.cfg.Clock.NewTimer(s.cfg.DeadAfter)
	ping := s.cfg.Clock.NewTicker(s.cfg.Keepalive)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); s.readLoop() }()
	go func() { defer wg.Done(); s.writeLoop(ctx, ping) }()
	go func() { defer wg.Done(); s.watchdog(dead) }()
	wg.Wait()
	return s.Err()
}

// watchdog declares the peer dead once DeadAfter has passed on the clock
// since the last frame arrived, and closes the connection, which is what
// ends the reader's blocked read. The decision is the clock's: the reader
// sets no read deadline.
func (s *Session) watchdog(t clockwork.Timer) {
	defer t.Stop()
	bound := int64(s.cfg.DeadAfter)
	for {
		select {
		case <-s.done:
			return
		case <-t.Chan():
		}
		heard := s.heard.Load()
		if heard == handling {
			t.Reset(s.cfg.DeadAfter)
			continue
		}
		silent := s.now() - heard
		if silent >= bound {
			s.Close(&DeadPeerError{Silent: s.cfg.DeadAfter})
			return
		}
		t.Reset(time.Duration(bound - silent))
	}
}

// Conn is the underlying connection (addresses, for status and logs).
func (s *Session) Conn() *Conn { return s.conn }

func (s *Session) readLoop() {
	for {
		f, err := s.conn.R.ReadFrame()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("peer closed the connection")
			}
			s.Close(err) // a dead peer's reason, closing first, stands
			return
		}
		s.heard.Store(s.now())
		s.framesIn.Add(1)
		if !s.cfg.Role.peerMay(f.Type) {
			s.Close(protoErr("out-of-order frame: %s after binding", f.Type))
			return
		}
		switch f.Type {
		case TypePing:
			ping, err := UnmarshalPing(f.Payload)
			if err != nil {
				s.Close(err)
				return
			}
			pong, _ := ping.Marshal()
			if err := s.Send(TypePong, pong); err != nil && !errors.Is(err, ErrSessionClosed) {
				s.Close(fmt.Errorf("answer keepalive: %w", err))
				return
			}
		case TypePong:
			pong, err := UnmarshalPing(f.Payload)
			if err != nil {
				s.Close(err)
				return
			}
			if sent := s.pingSent.Load(); sent != 0 && uint64(sent) == pong.Token {
				s.rttNanos.Store(s.now() - sent)
			}
		case TypeGoodbye:
			bye, err := UnmarshalReject(f.Payload)
			if err != nil {
				s.Close(err)
				return
			}
			s.Close(&GoodbyeError{Reason: bye})
			return
		default:
			if s.cfg.Handle == nil {
				continue
			}
			s.heard.Store(handling)
			err := s.cfg.Handle(f)
			s.heard.Store(s.now())
			if err != nil {
				s.Close(err)
				return
			}
		}
	}
}

// writeLoop writes what Send queued, draining the whole queue into one
// buffer so a burst of frames costs one write system call, and sends the
// keepalives.
func (s *Session) writeLoop(ctx context.Context, ping clockwork.Ticker) {
	defer ping.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-ctx.Done():
			s.goodbye()
			s.Close(fmt.Errorf("local shutdown: %w", ctx.Err()))
			return
		case tick := <-ping.Chan():
			// The token is the tick's own time: unique per ping, and on a
			// fake clock exactly k×Keepalive, whenever this loop wakes.
			at := int64(tick.Sub(s.epoch))
			s.pingSent.Store(at)
			p, _ := Ping{Token: uint64(at)}.Marshal()
			if err := s.Send(TypePing, p); err != nil && !errors.Is(err, ErrSessionClosed) {
				s.Close(fmt.Errorf("keepalive: %w", err))
				return
			}
			continue
		case <-s.wake:
		}
		s.qmu.Lock()
		if s.writing || len(s.queue) == 0 {
			s.qmu.Unlock() // the writer in charge signals when it is done
			continue
		}
		batch := s.queue
		s.queue = nil
		s.writing = true
		s.qmu.Unlock()
		err := s.writeBatch(batch)
		s.release()
		if err != nil {
			s.Close(fmt.Errorf("write to peer: %w", err))
			return
		}
	}
}

// goodbye tells the peer we are stopping, if the Writer is free within a
// moment (a shutdown does not wait on a stuck peer).
func (s *Session) goodbye() {
	deadline := time.Now().Add(200 * time.Millisecond)
	for {
		s.qmu.Lock()
		if !s.writing {
			s.writing = true
			s.qmu.Unlock()
			break
		}
		s.qmu.Unlock()
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(time.Millisecond)
	}
	p, err := (Reject{Code: RejectShuttingDown, Message: "shutting down"}).Marshal()
	if err == nil {
		_ = s.conn.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		if s.conn.W.WriteFrame(TypeGoodbye, p) == nil {
			_ = s.conn.W.Flush()
		}
	}
}

func (s *Session) write(t FrameType, p []byte) error {
	s.framesOut.Add(1)
	return s.conn.W.WriteFrame(t, p)
}
