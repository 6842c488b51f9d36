package engine

import (
	"bytes"
	"sync/atomic"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/slowpath/inspect/packet"
)

// DropMarker is a test aid (slowpathd --drop-marker): it drops, and blocks
// the flow of, any packet whose payload contains a marker string, so a lab
// or an end-to-end test can provoke a slow-path drop with a plain `nc`
// without writing a rule. It is not a detection engine: it looks at one
// packet at a time (a marker split across segments is missed) and raises no
// alert.
//
// The payload is the transport payload of a decodable IP packet, else the
// whole frame. A tap copy is only allowed. Every other packet is allowed with
// FlowOffload: the engine has nothing more to say about the flow, so it never
// keeps one inspected.
type DropMarker struct {
	marker []byte
	drops  atomic.Uint64
}

var _ Engine = (*DropMarker)(nil)

// NewDropMarker drops packets containing marker (which must not be empty).
func NewDropMarker(marker string) *DropMarker {
	return &DropMarker{marker: []byte(marker)}
}

func (e *DropMarker) Name() string { return "drop-marker" }

func (e *DropMarker) Inspect(p *Packet) Verdict {
	payload := p.Data
	var pk packet.Packet
	if packet.Decode(p.Data, p.Link == LinkEthernet, &pk) == nil {
		payload = pk.Payload
	}
	switch {
	case len(e.marker) == 0 || !bytes.Contains(payload, e.marker):
		return Verdict{Action: channel.ActionAllow, Flow: channel.FlowOffload}
	case p.Tap:
		return keepInspecting
	}
	e.drops.Add(1)
	return Verdict{Action: channel.ActionDrop, Flow: channel.FlowBlock}
}

func (e *DropMarker) FlowEnd(uint32, uint64) {}

// Drops is the number of packets dropped.
func (e *DropMarker) Drops() uint64 { return e.drops.Load() }
