package events

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/sirupsen/logrus"

	"github.com/palisade/palisade/fastpath/control/api"
	"github.com/palisade/palisade/fastpath/datapath"
)

// Record is one folded event: Count packets that were reported alike
// (guest, kind, reason, rule, addresses, destination port, protocol)
// between First and Last. Its shape is the control API's (defined once, in
// fastpath/control/api).
type Record = api.Event

type foldKey struct {
	slot      uint32
	kind      datapath.EventKind
	reason    string
	rule      uint32
	fromGuest bool
	proto     uint8
	src, dst  netip.Addr
	dport     uint16
	tap       bool
}

// Namer maps a datapath slot to its guest's name.
type Namer func(slot uint32) string

// Source is where Run reads the datapath's events: the datapath's ring
// buffer reader in fastpathd. Close makes a blocked Read return
// datapath.ErrClosed.
type Source interface {
	Read() (datapath.Event, error)
	Close() error
}

var _ Source = (*datapath.EventReader)(nil)

// Aggregator folds events and keeps the most recent records.
type Aggregator struct {
	clock   clockwork.Clock
	window  time.Duration
	keep    int
	name    Namer
	log     logrus.FieldLogger
	publish func(Record)

	mu      sync.Mutex
	pending map[foldKey]*Record
	history []Record // ring, oldest first once full
	next    int
	total   uint64
}

// Config configures an Aggregator.
type Config struct {
	Window  time.Duration // fold identical events within this window (default 1s)
	Keep    int           // records kept for the API (default 1000)
	Name    Namer
	Log     logrus.FieldLogger
	Publish func(Record)    // optional: every folded record, e.g. for the slow path
	Clock   clockwork.Clock // times the windows (default: the real clock)
}

// New returns an Aggregator.
func New(cfg Config) *Aggregator {
	if cfg.Window <= 0 {
		cfg.Window = time.Second
	}
	if cfg.Keep <= 0 {
		cfg.Keep = 1000
	}
	if cfg.Name == nil {
		cfg.Name = func(slot uint32) string { return fmt.Sprintf("slot%d", slot) }
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	return &Aggregator{clock: cfg.Clock, window: cfg.Window, keep: cfg.Keep, name: cfg.Name, log: cfg.Log, publish: cfg.Publish,
		pending: map[foldKey]*Record{}}
}

// Add folds one event; wall is its wall-clock time.
func (a *Aggregator) Add(e datapath.Event, wall time.Time) {
	k := foldKey{e.Slot, e.Kind, e.Reason, e.RuleID, e.FromGuest, e.Proto, e.Src, e.Dst, e.Dport, e.Tap}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total++
	if r, ok := a.pending[k]; ok {
		r.Count++
		r.Last = wall
		return
	}
	a.pending[k] = &Record{Guest: a.name(e.Slot), Kind: string(e.Kind), Reason: e.Reason, RuleID: e.RuleID,
		FromGuest: e.FromGuest, Proto: e.Proto, Src: e.Src.String(), Dst: e.Dst.String(), Sport: e.Sport,
		Dport: e.Dport, Tap: e.Tap, State: e.State, Count: 1, First: wall, Last: wall}
}

// Note records a control-plane event (a guest refused for lack of memory,
// say) in the history at once, logged like the datapath's.
func (a *Aggregator) Note(r Record) {
	a.mu.Lock()
	a.total++
	a.mu.Unlock()
	a.keepAndPublish([]Record{r})
}

// Flush ends the current window: every folded record is logged once, kept,
// and published.
func (a *Aggregator) Flush() {
	a.mu.Lock()
	recs := make([]Record, 0, len(a.pending))
	for _, r := range a.pending {
		recs = append(recs, *r)
	}
	a.pending = map[foldKey]*Record{}
	a.mu.Unlock()
	a.keepAndPublish(recs)
}

func (a *Aggregator) keepAndPublish(recs []Record) {
	a.mu.Lock()
	for _, r := range recs {
		if len(a.history) < a.keep {
			a.history = append(a.history, r)
		} else {
			a.history[a.next] = r
			a.next = (a.next + 1) % a.keep
		}
	}
	a.mu.Unlock()
	for _, r := range recs {
		entry := a.log.WithFields(logrus.Fields{
			"guest": r.Guest, "kind": r.Kind, "reason": r.Reason, "rule": r.RuleID, "from_guest": r.FromGuest,
			"proto": r.Proto, "src": r.Src, "dst": r.Dst, "dst_port": r.Dport, "count": r.Count, "tap": r.Tap,
		})
		if r.Message != "" {
			entry = entry.WithField("message", r.Message)
		}
		entry.Info("firewall event")
		if a.publish != nil {
			a.publish(r)
		}
	}
}

// Recent returns up to limit of the newest records, oldest first, optionally
// for one guest.
func (a *Aggregator) Recent(guest string, limit int) []Record {
	a.mu.Lock()
	defer a.mu.Unlock()
	ordered := append(append([]Record(nil), a.history[a.next:]...), a.history[:a.next]...)
	var out []Record
	for i := len(ordered) - 1; i >= 0 && (limit <= 0 || len(out) < limit); i-- {
		if guest == "" || ordered[i].Guest == guest {
			out = append(out, ordered[i])
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// Total is how many events have been folded since start.
func (a *Aggregator) Total() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.total
}

// Run reads the datapath's events until ctx ends, flushing every window.
// An event's wall-clock time is its kernel timestamp (CLOCK_MONOTONIC)
// placed against the clock as Run starts.
func (a *Aggregator) Run(ctx context.Context, rd Source) error {
	bootOffset := a.clock.Now().Add(-datapath.Monotonic())
	errc := make(chan error, 1)
	go func() {
		for {
			e, err := rd.Read()
			if err != nil {
				errc <- err
				return
			}
			a.Add(e, bootOffset.Add(e.Time))
		}
	}()
	t := a.clock.NewTicker(a.window)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// Close's error is the reader's own: Read returns it too, and
			// that error (or ErrClosed) is what ends the reading goroutine.
			_ = rd.Close()
			<-errc
			a.Flush()
			return nil
		case err := <-errc:
			a.Flush()
			if errors.Is(err, datapath.ErrClosed) {
				return nil
			}
			return fmt.Errorf("events: %w", err)
		case <-t.Chan():
			a.Flush()
		}
	}
}
