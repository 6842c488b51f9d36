package flow

import (
	"testing"
	"time"

	"github.com/palisade/palisade/slowpath/inspect/craft"
	"github.com/palisade/palisade/slowpath/inspect/stream"
)

func TestSidesAndEstablished(t *testing.T) {
	tab := NewTable[int]()
	e := &craft.Endpoints{}
	c := e.NewTCP("10.0.0.5:40000", "192.0.2.10:80")
	hs := c.Handshake()
	var sides []Side
	var est []bool
	var f *Flow[int]
	for _, fr := range append(hs, c.Send(false, []byte("220 hello"))) {
		p := fr.Decoded()
		var s Side
		f, s = tab.Get(1, 0, p, fr.Time)
		f.Track(p, s, stream.Limits{})
		sides, est = append(sides, s), append(est, f.Established())
	}
	if sides[0] != ToServer || sides[1] != ToClient || sides[2] != ToServer || sides[3] != ToClient {
		t.Fatalf("sides %v", sides)
	}
	if est[0] || est[1] || !est[2] {
		t.Fatalf("established after each packet: %v", est)
	}
	if string(f.Stream(ToClient).Data()) != "220 hello" || f.Client.String() != "10.0.0.5:40000" {
		t.Fatalf("client %v, server stream %q", f.Client, f.Stream(ToClient).Data())
	}
}

// A SYN/ACK seen first still makes its receiver the client.
func TestSynAckFirst(t *testing.T) {
	tab := NewTable[int]()
	e := &craft.Endpoints{}
	c := e.NewTCP("10.0.0.5:40000", "192.0.2.10:80")
	hs := c.Handshake()
	f, s := tab.Get(1, 0, hs[1].Decoded(), hs[1].Time)
	if s != ToClient || f.Client.String() != "10.0.0.5:40000" {
		t.Fatalf("side %v client %v", s, f.Client)
	}
	// Midstream data from the server side is to_client; never established.
	f.Track(hs[1].Decoded(), s, stream.Limits{})
	if f.Established() {
		t.Fatal("established without the client's SYN")
	}
}

func TestIdleFlowsAndEnd(t *testing.T) {
	tab := NewTable[int]()
	released := 0
	tab.Release = func(*Flow[int]) { released++ }
	e := &craft.Endpoints{}
	a := e.UDP(mustAP("10.0.0.1:1"), mustAP("10.0.0.2:2"), []byte("x"))
	b := e.UDP(mustAP("10.0.0.3:1"), mustAP("10.0.0.4:2"), []byte("x"))
	t0 := time.Unix(1000, 0)
	tab.Get(1, 77, a.Decoded(), t0)
	tab.Get(1, 0, b.Decoded(), t0.Add(DefaultIdleTimeout/2))
	if tab.Len() != 2 {
		t.Fatalf("%d flows", tab.Len())
	}
	tab.End(1, 77)
	tab.End(1, 78) // unknown: nothing
	if tab.Len() != 1 || released != 1 {
		t.Fatalf("after End: %d flows, %d released", tab.Len(), released)
	}
	// Touching any flow in the same shard later sweeps the idle one; walk
	// all shards by creating flows until b's shard is swept.
	late := t0.Add(2 * DefaultIdleTimeout)
	for i := 0; i < 2000 && tab.Len() > 0; i++ {
		f := e.UDP(mustAP("10.1.0.1:1"), mustAP("10.1.0.2:"+itoa(i+1)), []byte("x"))
		tab.Get(2, 0, f.Decoded(), late)
	}
	if released < 2 {
		t.Fatalf("idle flow never swept (%d released)", released)
	}
}

// A bare SYN with a new initial sequence number on the 5-tuple of a known
// flow opens a new connection: the old flow is forgotten, not continued.
func TestNewConnectionOnSameTuple(t *testing.T) {
	tab := NewTable[int]()
	var released []*Flow[int]
	tab.Release = func(f *Flow[int]) { released = append(released, f) }
	e := &craft.Endpoints{}
	c := e.NewTCP("10.0.0.5:40000", "192.0.2.10:80")
	track := func(fr craft.Frame) *Flow[int] {
		p := fr.Decoded()
		f, s := tab.Get(1, 77, p, fr.Time)
		f.Track(p, s, stream.Limits{})
		return f
	}
	var first *Flow[int]
	for _, fr := range append(c.Handshake(), c.Send(true, []byte("old"))) {
		first = track(fr)
	}
	first.State = 1
	again := e.NewTCP("10.0.0.5:40000", "192.0.2.10:80")
	again.CSeq = 9000
	hs := again.Handshake()
	second := track(hs[0])
	if second == first || second.State != 0 || len(released) != 1 || released[0] != first {
		t.Fatalf("new SYN continued the old flow (same %v, state %d, released %d)", second == first, second.State, len(released))
	}
	if track(hs[0]) != second { // retransmitted SYN
		t.Fatal("a retransmitted SYN started another flow")
	}
	for _, fr := range append(hs[1:], again.Send(true, []byte("new"))) {
		track(fr)
	}
	if got := string(second.Stream(ToServer).Data()); got != "new" || tab.Len() != 1 {
		t.Fatalf("stream %q, %d flows", got, tab.Len())
	}
	tab.End(1, 77) // the alias now names the new flow
	if tab.Len() != 0 {
		t.Fatal("End by the fast path's id missed the new flow")
	}
}
