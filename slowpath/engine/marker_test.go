package engine

import (
	"testing"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/slowpath/inspect/craft"
)

func TestDropMarker(t *testing.T) {
	e := NewDropMarker("PALISADE-DROP")
	ep := &craft.Endpoints{Ethernet: true}
	c := ep.NewTCP("10.0.0.1:40000", "10.0.0.2:80")
	hs := c.Handshake()
	hit := c.Send(true, []byte("GET /?q=PALISADE-DROP HTTP/1.1\r\n\r\n"))
	miss := c.Send(false, []byte("HTTP/1.1 200 OK\r\n\r\n"))
	// The marker in a header (the MAC/IP bytes) does not count, only payload.
	for _, f := range append(hs, miss) {
		if v := e.Inspect(&Packet{Link: LinkEthernet, Data: f.Data}); v.Action != channel.ActionAllow || v.Flow != channel.FlowOffload {
			t.Fatalf("clean packet: %s/%s", v.Action, v.Flow)
		}
	}
	if v := e.Inspect(&Packet{Link: LinkEthernet, Data: hit.Data}); v.Action != channel.ActionDrop || v.Flow != channel.FlowBlock {
		t.Fatalf("marked packet: %s/%s", v.Action, v.Flow)
	}
	if v := e.Inspect(&Packet{Link: LinkEthernet, Data: hit.Data, Tap: true}); v.Action != channel.ActionAllow || v.Flow == channel.FlowBlock {
		t.Fatalf("marked tap copy: %s/%s", v.Action, v.Flow)
	}
	// Not IP: the whole frame is searched.
	if v := e.Inspect(&Packet{Link: LinkEthernet, Data: []byte("\x00\x00PALISADE-DROP")}); v.Action != channel.ActionDrop {
		t.Fatalf("undecodable marked frame: %s", v.Action)
	}
	if e.Drops() != 2 {
		t.Fatalf("drops %d", e.Drops())
	}
}
