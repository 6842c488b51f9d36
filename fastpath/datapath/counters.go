package datapath

import (
	"fmt"
)

// counterNames name the datapath's per-guest counters (enum counter in
// datapath.h, in order); dropReasonNames name its drop reasons.
var counterNames = [...]string{
	"packets_from_guest", "bytes_from_guest", "packets_to_guest", "bytes_to_guest",
	"passed", "dropped", "new_connections", "established_hits", "invalid",
	"pickups", "reclassified", "related_icmp", "bypassed", "tap_would_drop",
	"table_full", "events_suppressed", "punted", "tap_copies", "reinjected", "engine_offline",
	"offloaded_hits", "punt_shed", "fragments", "port_reuse",
}

var dropReasonNames = [...]string{
	"none", "rule_deny", "default_deny", "invalid_state", "invalid_flags",
	"malformed", "fragment", "non_ip", "arp", "flow_blocked", "engine_offline", "punt_failed", "punt_shed",
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
		for i, name := range dropReasonNames[1:] {
			c.Drops[name] += cpu.Drops[i+1]
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
