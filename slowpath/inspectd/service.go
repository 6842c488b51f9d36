package inspectd

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/sirupsen/logrus"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/slowpath/engine"
	"github.com/palisade/palisade/slowpath/eve"
)

// Wire limits of the batches this service writes (docs/protocol.md).
const (
	maxRecords    = 4096     // records per batch
	verdictHeader = 24       // guest, flow id, packet id, action, flow decision, reply length
	maxReply      = 16 << 10 // bytes of a verdict's reply packet
	eventHeader   = 18       // kind, guest, time, body length
	maxEventBody  = 64 << 10 // bytes of an event's JSON body
)

// Config configures a Service. The zero value of every field is a default.
type Config struct {
	// Workers inspect packets; flows are sharded over them by flow id
	// (default GOMAXPROCS).
	Workers int
	// QueuePackets and QueueBytes bound each worker's queue (default 4096
	// packets, 16 MiB).
	QueuePackets int
	QueueBytes   int
	// MaxStall is how long one PUNT_BATCH may block the binding's reader
	// while a worker's queue is full (default 20ms, below the fast path's
	// 50ms verdict timeout). Packets that still find no room are shed
	// unanswered: the fast path fails them by the guest's fail policy.
	MaxStall time.Duration
	// AlertRate is how many alerts per second go to the fast path (default
	// 1000; negative: no limit). The rest are counted; the EVE file gets all.
	AlertRate int
	// EVE, if set, receives every alert; the service flushes it every second
	// and closes it in Close.
	EVE *eve.Writer
	Log logrus.FieldLogger
	// Clock times the stall bound, the alert rate, the flush ticks, the
	// flow decisions' memory and the latency figures (default: the real
	// clock). Tests pass a fake one to drive them exactly.
	Clock clockwork.Clock
}

func (c Config) withDefaults() Config {
	if c.Workers <= 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
	if c.QueuePackets <= 0 {
		c.QueuePackets = 4096
	}
	if c.QueueBytes <= 0 {
		c.QueueBytes = 16 << 20
	}
	if c.MaxStall <= 0 {
		c.MaxStall = 20 * time.Millisecond
	}
	if c.AlertRate == 0 {
		c.AlertRate = 1000
	}
	if c.Log == nil {
		c.Log = logrus.StandardLogger()
	}
	if c.Clock == nil {
		c.Clock = clockwork.NewRealClock()
	}
	return c
}

// binding is one bound session as the service sees it; queued work and
// pending batches carry the binding they came from and are dropped once it
// is no longer the current one.
type binding struct {
	sess    *channel.Session
	offload bool // the fast path takes per-flow decisions (CapOffload)
	events  bool // the fast path takes event batches (CapEvents)
}

// Service is the live inspection service.
type Service struct {
	cfg     Config
	eng     engine.Engine
	engines []string
	workers []*worker
	alerts  *alerts
	cur     atomic.Pointer[binding]
	n       counters

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// New starts a service whose engine build makes; build receives the sink
// the engines must emit their alerts to.
func New(cfg Config, build func(alerts eve.Sink) (engine.Engine, error)) (*Service, error) {
	cfg = cfg.withDefaults()
	s := &Service{cfg: cfg, stop: make(chan struct{})}
	s.alerts = newAlerts(s, cfg.EVE, cfg.AlertRate)
	eng, err := build(s.alerts)
	if err != nil {
		return nil, err
	}
	if eng == nil {
		return nil, errors.New("inspectd: no engine")
	}
	s.eng = eng
	if c, ok := eng.(engine.Chain); ok {
		for _, e := range c {
			s.engines = append(s.engines, e.Name())
		}
	} else {
		s.engines = []string{eng.Name()}
	}
	s.workers = make([]*worker, cfg.Workers)
	for i := range s.workers {
		s.workers[i] = newWorker(s)
	}
	for _, w := range s.workers {
		s.wg.Add(1)
		go w.run()
	}
	return s, nil
}

// Bound starts answering on a new binding.
func (s *Service) Bound(sess *channel.Session, r channel.Result) {
	s.cur.Store(&binding{sess: sess, offload: r.Negotiated.Has(channel.CapOffload), events: r.Negotiated.Has(channel.CapEvents)})
}

// Unbound drops the queued work of the binding that ended; engine state is
// kept, so flows continue after a rebind.
func (s *Service) Unbound(error) { s.cur.Store(nil) }

// HandleFrame takes a PUNT_BATCH; other frame types are ignored. It runs on
// the binding's reader goroutine: the batch is validated completely (a
// malformed one returns the ProtocolError that ends the session), its
// packets copied and queued to their flows' workers. A full queue blocks the
// reader for at most MaxStall per frame.
func (s *Service) HandleFrame(f channel.Frame) error {
	if f.Type != channel.TypePuntBatch {
		return nil
	}
	b := s.cur.Load()
	now := s.cfg.Clock.Now()
	chunks := make([]*chunk, len(s.workers))
	err := channel.DecodePuntBatch(f.Payload, func(r channel.PuntRecord) error {
		i := s.shard(r.Guest, r.FlowID)
		c := chunks[i]
		if c == nil {
			c = getChunk(b, now)
			chunks[i] = c
		}
		c.add(r)
		return nil
	})
	if err != nil {
		for _, c := range chunks {
			if c != nil {
				putChunk(c)
			}
		}
		return err
	}
	s.n.batches.Add(1)
	var deadline time.Time
	for i, c := range chunks {
		if c == nil {
			continue
		}
		s.n.punts.Add(uint64(len(c.items)))
		s.n.taps.Add(uint64(c.taps))
		s.workers[i].enqueue(c, now, &deadline)
	}
	return nil
}

// shard picks the worker of a flow: all its packets go to the same one.
func (s *Service) shard(guest uint32, flowID uint64) int {
	h := (flowID ^ uint64(guest)<<32 ^ uint64(guest)) * 0x9e3779b97f4a7c15
	return int((h >> 32) % uint64(len(s.workers)))
}

// How often Run flushes the alerts no worker flush took along, and the
// EVE file.
const (
	alertFlushEvery = 100 * time.Millisecond
	eveFlushEvery   = time.Second
)

// Run flushes pending alerts and the EVE file periodically until ctx ends,
// then closes the service.
func (s *Service) Run(ctx context.Context) error {
	alertTick := s.cfg.Clock.NewTicker(alertFlushEvery)
	defer alertTick.Stop()
	fileTick := s.cfg.Clock.NewTicker(eveFlushEvery)
	defer fileTick.Stop()
	for {
		select {
		case <-ctx.Done():
			return s.Close()
		case <-s.stop:
			return nil
		case <-alertTick.Chan():
			s.alerts.flush()
		case <-fileTick.Chan():
			if s.cfg.EVE != nil {
				if err := s.cfg.EVE.Flush(); err != nil {
					s.cfg.Log.WithError(err).Error("cannot write EVE alerts")
				}
			}
		}
	}
}

// Close stops the workers (queued work is dropped) and flushes and closes
// the EVE file.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		s.wg.Wait()
		s.alerts.flush()
		if s.cfg.EVE != nil {
			s.closeErr = s.cfg.EVE.Close()
		}
	})
	return s.closeErr
}

// send queues a frame on b's session. The session's queue never blocks; when
// it is full, send retries with a short backoff (holding up the worker is
// the backpressure) until the frame is queued or the binding is gone. The
// backoff is real time, not Config.Clock: it waits for the session's
// writer, a real goroutine draining a real socket.
func (s *Service) send(b *binding, t channel.FrameType, payload []byte) bool {
	delay := 20 * time.Microsecond
	for {
		err := b.sess.Send(t, payload)
		if err == nil {
			return true
		}
		if errors.Is(err, channel.ErrSessionClosed) || s.cur.Load() != b {
			return false
		}
		s.n.sendRetries.Add(1)
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-b.sess.Done():
			timer.Stop()
			return false
		case <-s.stop:
			timer.Stop()
			return false
		}
		delay = min(2*delay, 5*time.Millisecond)
	}
}

// panicked logs an engine failure: the first, then every 1000th.
func (s *Service) panicked(it *item, r any) {
	if n := s.n.engineFailures.Add(1); n == 1 || n%1000 == 0 {
		s.cfg.Log.WithFields(logrus.Fields{"guest": it.guest, "flow_id": it.flowID, "failures": n,
			"panic": fmt.Sprint(r)}).Error("inspection engine failed on a packet; left unanswered")
	}
}
