package engine

import (
	"time"

	"github.com/palisade/palisade/fastpath/channel"
)

// LinkType says where a packet's bytes start.
type LinkType uint8

const (
	LinkEthernet LinkType = 1 // an Ethernet frame, as punted from a vNIC
	LinkRaw      LinkType = 2 // an IPv4 or IPv6 packet (raw-IP captures)
)

// Packet is one packet to judge.
type Packet struct {
	Guest     uint32
	FlowID    uint64 // the fast path's flow id; 0 offline (engines key flows by 5-tuple anyway)
	PacketID  uint64
	Direction channel.Direction // relative to the guest's vNIC; engines derive to_server/to_client themselves
	Tap       bool              // already delivered (tap mode): the verdict only reports
	Time      time.Time
	Link      LinkType
	Data      []byte // valid only during Inspect
}

// Verdict is an engine's answer for one packet and, optionally, its flow.
type Verdict struct {
	Action channel.Action       // ActionAllow, ActionDrop or ActionReject
	Flow   channel.FlowDecision // FlowKeepInspecting, FlowOffload or FlowBlock
	// Reply, if set with ActionReject or a drop, is a packet the fast path
	// should send toward the sender instead of the default reset/unreachable
	// (web reputation's HTTP 403 page). It is an L3 packet.
	Reply []byte
}

// Allow is the verdict of an engine with nothing to say.
var Allow = Verdict{Action: channel.ActionAllow}

// Engine judges packets. Packets of one flow arrive in order and never
// concurrently; different flows may be inspected concurrently, so an engine
// shards its flow state or locks it.
type Engine interface {
	Name() string
	Inspect(p *Packet) Verdict
	// FlowEnd says the fast path has forgotten a flow; the engine may free
	// its state.
	FlowEnd(guest uint32, flowID uint64)
}

// severity orders actions: a chain keeps the most severe.
func severity(a channel.Action) int {
	switch a {
	case channel.ActionReject:
		return 2
	case channel.ActionDrop:
		return 1
	}
	return 0
}

// Chain runs engines in order and merges their verdicts: the most severe
// action wins; a block by any engine blocks the flow; the flow is offloaded
// only when every engine offloads it (one engine still interested keeps it
// inspected).
type Chain []Engine

func (c Chain) Name() string { return "chain" }

func (c Chain) Inspect(p *Packet) Verdict {
	out := Verdict{Action: channel.ActionAllow, Flow: channel.FlowOffload}
	if len(c) == 0 {
		return Allow
	}
	for _, e := range c {
		v := e.Inspect(p)
		switch {
		case severity(v.Action) > severity(out.Action):
			out.Action, out.Reply = v.Action, v.Reply
		case severity(v.Action) == severity(out.Action) && out.Reply == nil:
			out.Reply = v.Reply // a block page beats a bare reset at equal severity
		}
		switch {
		case v.Flow == channel.FlowBlock:
			out.Flow = channel.FlowBlock
		case v.Flow == channel.FlowKeepInspecting && out.Flow == channel.FlowOffload:
			out.Flow = channel.FlowKeepInspecting
		}
	}
	return out
}

func (c Chain) FlowEnd(guest uint32, flowID uint64) {
	for _, e := range c {
		e.FlowEnd(guest, flowID)
	}
}
