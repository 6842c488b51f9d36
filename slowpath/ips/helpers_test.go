package ips

import (
	"testing"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/slowpath/engine"
	"github.com/palisade/palisade/slowpath/eve"
	"github.com/palisade/palisade/slowpath/inspect/craft"
)

// harness runs frames through an engine loaded with rules.
type harness struct {
	t        testing.TB
	e        *Engine
	sink     *eve.Memory
	verdicts []engine.Verdict
	tap      bool
}

func newHarness(t testing.TB, rules string, opts ...Option) *harness {
	t.Helper()
	rs := LoadString(nil, rules)
	if len(rs.Refused()) > 0 {
		t.Fatalf("refused: %v", rs.Refused()[0])
	}
	h := &harness{t: t, sink: &eve.Memory{}}
	h.e = New(rs, nil, append([]Option{WithSink(h.sink)}, opts...)...)
	return h
}

func (h *harness) run(frames ...craft.Frame) *harness {
	for i, f := range frames {
		v := h.e.Inspect(&engine.Packet{Guest: 1, PacketID: uint64(i + 1), Time: f.Time, Link: engine.LinkRaw, Data: f.Data, Tap: h.tap,
			Direction: channel.FromGuest})
		h.verdicts = append(h.verdicts, v)
	}
	return h
}

// sids lists the signature ids alerted, in order.
func (h *harness) sids() []uint32 {
	var out []uint32
	for _, r := range h.sink.Records() {
		out = append(out, r.Alert.SignatureID)
	}
	return out
}

// httpSession is a client request (and optional response) over a fresh
// connection.
func httpSession(req, resp string) []craft.Frame {
	e := &craft.Endpoints{}
	c := e.NewTCP("10.0.0.5:40000", "192.0.2.10:80")
	fs := craft.Seq(c.Handshake(), c.Send(true, []byte(req)))
	if resp != "" {
		fs = append(fs, c.Send(false, []byte(resp)))
	}
	return fs
}
