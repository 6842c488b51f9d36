package datapath

import (
	"fmt"
)

// counterNames name the datapath's per-guest counters (enum counter in
// datapath.h); dropReasonNames name its drop reasons (enum drop_reason).
// TestNamesFollowTheC checks every enumerator has its name.
var counterNames = [dpCounterC_COUNT]string{
	dpCounterC_PKTS_FROM_GUEST: "packets_from_guest", dpCounterC_BYTES_FROM_GUEST: "bytes_from_guest",
	dpCounterC_PKTS_TO_GUEST: "packets_to_guest", dpCounterC_BYTES_TO_GUEST: "bytes_to_guest",
	dpCounterC_PASSED: "passed", dpCounterC_DROPPED: "dropped", dpCounterC_NEW_CONNS: "new_connections",
	dpCounterC_ESTABLISHED_HITS: "established_hits", dpCounterC_INVALID: "invalid", dpCounterC_PICKUPS: "pickups",
	dpCounterC_RECLASSIFIED: "reclassified", dpCounterC_RELATED: "related_icmp", dpCounterC_BYPASSED: "bypassed",
	dpCounterC_TAP_WOULD_DROP: "tap_would_drop", dpCounterC_TABLE_FULL: "table_full",
	dpCounterC_EVENTS_SUPPRESSED: "events_suppressed", dpCounterC_PUNTED: "punted",
	dpCounterC_TAP_COPIES: "tap_copies", dpCounterC_REINJECTED: "reinjected",
	dpCounterC_ENGINE_OFFLINE: "engine_offline", dpCounterC_OFFLOADED_HITS: "offloaded_hits",
	dpCounterC_PUNT_SHED: "punt_shed", dpCounterC_FRAGMENTS: "fragments", dpCounterC_PORT_REUSE: "port_reuse",
}

var dropReasonNames = [dpDropReasonDR_COUNT]string{
	dpDropReasonDR_NONE: "none", dpDropReasonDR_RULE_DENY: "rule_deny", dpDropReasonDR_DEFAULT_DENY: "default_deny",
	dpDropReasonDR_INVALID_STATE: "invalid_state", dpDropReasonDR_INVALID_FLAGS: "invalid_flags",
	dpDropReasonDR_MALFORMED: "malformed", dpDropReasonDR_FRAGMENT: "fragment", dpDropReasonDR_NON_IP: "non_ip",
	dpDropReasonDR_ARP: "arp", dpDropReasonDR_FLOW_BLOCKED: "flow_blocked",
	dpDropReasonDR_ENGINE_OFFLINE: "engine_offline", dpDropReasonDR_PUNT_FAILED: "punt_failed",
	dpDropReasonDR_PUNT_SHED: "punt_shed",
}

// Counters are a guest's datapath counters, summed over CPUs.
type Counters struct {
	Values map[string]uint64 `json:"counters"`
	Drops  map[string]uint64 `json:"drops"`
}

// Get returns the named counter.
func (c Counters) Get(name string) uint64 { return c.Values[name] }

// GuestCounters reads guest slot's counters.
func (d *Datapath) GuestCounters(slot uint32) (Counters, error) {
	var per []dpGuestCounters
	if err := d.objs.GuestStats.Lookup(slot, &per); err != nil {
		return Counters{}, fmt.Errorf("guest slot %d counters: %w", slot, err)
	}
	c := Counters{Values: map[string]uint64{}, Drops: map[string]uint64{}}
	for _, cpu := range per {
		for i, name := range counterNames {
			c.Values[name] += cpu.C[i]
		}
		for i, name := range dropReasonNames {
			if dpDropReason(i) != dpDropReasonDR_NONE {
				c.Drops[name] += cpu.Drops[i]
			}
		}
	}
	return c, nil
}

// ResetCounters zeroes guest slot's counters and event budget, for a slot
// that is being given to a new guest.
func (d *Datapath) ResetCounters(slot uint32) error {
	n := numCPU()
	if err := d.objs.GuestStats.Put(slot, make([]dpGuestCounters, n)); err != nil {
		return fmt.Errorf("guest slot %d: reset counters: %w", slot, err)
	}
	if err := d.objs.EventBudgets.Put(slot, make([]dpEventBudget, n)); err != nil {
		return fmt.Errorf("guest slot %d: reset event budget: %w", slot, err)
	}
	return nil
}
