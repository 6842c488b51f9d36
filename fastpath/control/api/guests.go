package api

import (
	"net/netip"
	"time"

	"github.com/palisade/palisade/fastpath/policy"
)

// Guest describes one protected guest.
type Guest struct {
	ID          string    `json:"id"`
	VNIC        string    `json:"vnic"`
	Ifindex     int       `json:"ifindex"`
	Slot        uint32    `json:"slot"`
	Mode        string    `json:"mode"`
	PolicyName  string    `json:"policy_name,omitempty"`
	PolicyID    uint32    `json:"policy_id"`
	Rules       int       `json:"rules"`
	Inspection  []string  `json:"inspection,omitempty"`
	MaxTCP      uint32    `json:"max_tcp_connections"`
	MaxUDP      uint32    `json:"max_udp_connections"`
	ActivatedAt time.Time `json:"activated_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// RuleHit is one rule's hit count.
type RuleHit struct {
	ID     uint32        `json:"id"`
	Action policy.Action `json:"action"`
	Hits   uint64        `json:"hits"`
}

// GuestStats is a guest's status with its counters.
type GuestStats struct {
	Guest
	Counters       map[string]uint64 `json:"counters"`
	Drops          map[string]uint64 `json:"drops"`
	TCPConnections uint64            `json:"tcp_connections"`
	UDPConnections uint64            `json:"udp_connections"` // UDP, ICMP and other pseudo-connections
	RuleHits       []RuleHit         `json:"rule_hits"`
}

// Conn is one tracked connection, oriented by the guest.
type Conn struct {
	Proto      uint8         `json:"proto"`
	GuestAddr  netip.Addr    `json:"guest_addr"`
	GuestPort  uint16        `json:"guest_port"`
	RemoteAddr netip.Addr    `json:"remote_addr"`
	RemotePort uint16        `json:"remote_port"`
	State      string        `json:"state"`      // TCP state, or NEW/REPLIED for pseudo-connections
	FromGuest  bool          `json:"from_guest"` // the guest opened it
	Verdict    string        `json:"verdict"`
	RuleID     uint32        `json:"rule_id"`
	PolicyID   uint32        `json:"policy_id"`
	FlowID     uint64        `json:"flow_id"`
	ForceAllow bool          `json:"force_allow,omitempty"`
	PickedUp   bool          `json:"picked_up,omitempty"`
	Packets    [2]uint64     `json:"packets"` // from guest, to guest
	Bytes      [2]uint64     `json:"bytes"`
	LastSeen   time.Duration `json:"last_seen_monotonic_ns"`
}

// Event is one folded event: Count packets that were reported alike
// (guest, kind, reason, rule, addresses, destination port, protocol)
// between First and Last.
type Event struct {
	Guest     string    `json:"guest"`
	Message   string    `json:"message,omitempty"` // control-plane events say what happened in words
	Kind      string    `json:"kind"`
	Reason    string    `json:"reason,omitempty"`
	RuleID    uint32    `json:"rule_id"`
	FromGuest bool      `json:"from_guest"`
	Proto     uint8     `json:"proto"`
	Src       string    `json:"src"`
	Dst       string    `json:"dst"`
	Sport     uint16    `json:"src_port,omitempty"`
	Dport     uint16    `json:"dst_port"`
	Tap       bool      `json:"tap,omitempty"`
	State     string    `json:"tcp_state,omitempty"`
	Count     uint64    `json:"count"`
	First     time.Time `json:"first"`
	Last      time.Time `json:"last"`
}

// InspectionStats are the inline inspection path's counters.
type InspectionStats struct {
	Held             uint64            `json:"held"`
	Sent             uint64            `json:"sent_to_slow_path"`
	Batches          uint64            `json:"punt_batches"`
	TapCopies        uint64            `json:"tap_copies"`
	Reinjected       uint64            `json:"reinjected"`
	Rejected         uint64            `json:"rejected"`
	RejectsAnswered  uint64            `json:"rejects_answered"`
	DroppedByVerdict uint64            `json:"dropped_by_verdict"`
	Verdicts         map[string]uint64 `json:"verdicts"`
	Offloads         uint64            `json:"flows_offloaded"`
	Blocks           uint64            `json:"flows_blocked"`
	Late             uint64            `json:"late_verdicts"`
	TapVerdicts      uint64            `json:"tap_verdicts"`
	TapWouldDrop     uint64            `json:"tap_would_drop"`
	FailOpen         map[string]uint64 `json:"fail_open"`   // passed uninspected, by why
	FailClosed       map[string]uint64 `json:"fail_closed"` // dropped uninspected, by why
	Pending          int               `json:"pending"`
	PendingBytes     int               `json:"pending_bytes"`
	Malformed        uint64            `json:"malformed"`
	WriteErrors      uint64            `json:"write_errors"`
	Congestions      uint64            `json:"congestions"` // times a guest reached its bound and the datapath shed
	// Offload or block decisions the datapath could not be told (the flow
	// stays punted until one of its packets tries again).
	FlowDecisionErrors uint64 `json:"flow_decision_errors"`
	MalformedEvents    uint64 `json:"malformed_events"` // slow-path events not understood
	Bound              bool   `json:"slow_path_bound"`
}
