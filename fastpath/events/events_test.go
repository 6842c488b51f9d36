package events

import (
	"context"
	"io"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/sirupsen/logrus"

	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/hypervisor/lab/wait"
)

func TestFoldsIdenticalEvents(t *testing.T) {
	l := logrus.New()
	l.SetOutput(io.Discard)
	var published []Record
	a := New(Config{Keep: 3, Log: l, Name: func(s uint32) string { return map[uint32]string{1: "web-1", 2: "db-1"}[s] },
		Publish: func(r Record) { published = append(published, r) }})
	t0 := time.Unix(1000, 0)
	deny := datapath.Event{Slot: 1, Kind: datapath.EventDeny, Reason: "rule_deny", RuleID: 7, Proto: 6,
		Src: netip.MustParseAddr("203.0.113.5"), Dst: netip.MustParseAddr("198.51.100.10"), Sport: 1234, Dport: 22}
	for i := 0; i < 500; i++ {
		e := deny
		e.Sport = uint16(1000 + i) // source ports vary in a scan; the record folds them
		a.Add(e, t0.Add(time.Duration(i)*time.Millisecond))
	}
	other := deny
	other.Slot, other.Dport = 2, 23
	a.Add(other, t0)
	a.Flush()
	recs := a.Recent("", 0)
	if len(recs) != 2 || len(published) != 2 {
		t.Fatalf("records %+v, published %d", recs, len(published))
	}
	web := a.Recent("web-1", 0)
	if len(web) != 1 || web[0].Count != 500 || web[0].Dport != 22 || web[0].Last.Sub(web[0].First) != 499*time.Millisecond {
		t.Fatalf("folded: %+v", web)
	}
	if a.Total() != 501 {
		t.Fatalf("total %d", a.Total())
	}
	// History is bounded and keeps the newest.
	for i := 0; i < 5; i++ {
		e := deny
		e.Dport = uint16(100 + i)
		a.Add(e, t0)
		a.Flush()
	}
	recs = a.Recent("", 0)
	if len(recs) != 3 || recs[2].Dport != 104 || recs[0].Dport != 102 {
		t.Fatalf("bounded history: %+v", recs)
	}
	if got := a.Recent("", 2); len(got) != 2 || got[1].Dport != 104 {
		t.Fatalf("limit: %+v", got)
	}
}

// fakeSource hands Run the events pushed to it, as the ring buffer would.
type fakeSource struct {
	events chan datapath.Event
	closed chan struct{}
	once   sync.Once
}

func newFakeSource() *fakeSource {
	return &fakeSource{events: make(chan datapath.Event), closed: make(chan struct{})}
}

func (f *fakeSource) Read() (datapath.Event, error) {
	select {
	case e := <-f.events:
		return e, nil
	case <-f.closed:
		return datapath.Event{}, datapath.ErrClosed
	}
}

func (f *fakeSource) Close() error {
	f.once.Do(func() { close(f.closed) })
	return nil
}

// TestRunFlushesEveryWindow: events read within a window are folded and
// published exactly when the window ends on the clock, not before; the
// rest are flushed when Run stops.
func TestRunFlushesEveryWindow(t *testing.T) {
	l := logrus.New()
	l.SetOutput(io.Discard)
	clock := clockwork.NewFakeClock()
	published := make(chan Record, 10)
	a := New(Config{Log: l, Clock: clock, Window: time.Second, Publish: func(r Record) { published <- r }})
	src := newFakeSource()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, src) }()

	deny := datapath.Event{Slot: 1, Kind: datapath.EventDeny, Reason: "rule_deny", RuleID: 7, Proto: 6,
		Src: netip.MustParseAddr("203.0.113.5"), Dst: netip.MustParseAddr("198.51.100.10"), Dport: 22}
	for i := 0; i < 3; i++ {
		src.events <- deny // unbuffered: Run has taken each one
	}
	if err := clock.BlockUntilContext(ctx, 1); err != nil { // the window's ticker
		t.Fatal(err)
	}
	wait.For(t, "3 events read", func() bool { return a.Total() == 3 })
	clock.Advance(time.Second - time.Nanosecond)
	select {
	case r := <-published:
		t.Fatalf("published before the window ended: %+v", r)
	default:
	}
	clock.Advance(time.Nanosecond)
	if r := <-published; r.Count != 3 || r.Dport != 22 {
		t.Fatalf("the window's record: %+v, want 3 folded denies to port 22", r)
	}

	other := deny
	other.Dport = 23
	src.events <- other
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if r := <-published; r.Count != 1 || r.Dport != 23 {
		t.Fatalf("flushed at stop: %+v, want the one deny to port 23", r)
	}
}
