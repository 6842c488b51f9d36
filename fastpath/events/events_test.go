package events

import (
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/palisade/palisade/fastpath/datapath"
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
