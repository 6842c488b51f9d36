package guests

import (
	"fmt"
	"sort"
	"time"

	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/fastpath/policy"
)

// Status describes one protected guest.
type Status struct {
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

// RuleStats is one rule's hit count.
type RuleStats struct {
	ID     uint32        `json:"id"`
	Action policy.Action `json:"action"`
	Hits   uint64        `json:"hits"`
}

// Stats is a guest's status with its counters.
type Stats struct {
	Status
	Counters       map[string]uint64 `json:"counters"`
	Drops          map[string]uint64 `json:"drops"`
	TCPConnections uint64            `json:"tcp_connections"`
	UDPConnections uint64            `json:"udp_connections"` // UDP, ICMP and other pseudo-connections
	RuleHits       []RuleStats       `json:"rule_hits"`
}

func (g *guest) status() Status {
	return Status{ID: g.ID, VNIC: g.VNIC, Ifindex: g.Ifindex, Slot: g.Slot, Mode: string(g.Policy.Mode),
		PolicyName: g.Policy.Name, PolicyID: g.Installed.ID, Rules: len(g.Policy.Rules), Inspection: g.Policy.Inspection,
		MaxTCP: g.Policy.MaxTCP, MaxUDP: g.Policy.MaxUDP, ActivatedAt: g.ActivatedAt, UpdatedAt: g.UpdatedAt}
}

// List returns every protected guest, by id.
func (m *Manager) List() []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Status, 0, len(m.guests))
	for _, g := range m.guests {
		out = append(out, g.status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Get returns one guest's status.
func (m *Manager) Get(id string) (Status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g, ok := m.guests[id]
	if !ok {
		return Status{}, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	return g.status(), nil
}

// Policy returns a guest's policy as normalized.
func (m *Manager) Policy(id string) (*policy.Policy, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g, ok := m.guests[id]
	if !ok {
		return nil, fmt.Errorf("%s: %w", id, ErrNotFound)
	}
	return g.Policy, nil
}

// Stats reads a guest's counters from the kernel.
func (m *Manager) Stats(id string) (Stats, error) {
	m.mu.Lock()
	g, ok := m.guests[id]
	var st Stats
	var installed *datapath.InstalledPolicy
	var ordered []policy.Rule
	if ok {
		st.Status = g.status()
		installed = g.Installed
		ordered = g.Policy.Ordered()
	}
	m.mu.Unlock()
	if !ok {
		return Stats{}, fmt.Errorf("stats %s: %w", id, ErrNotFound)
	}
	c, err := m.dp.GuestCounters(st.Slot)
	if err != nil {
		return Stats{}, fmt.Errorf("stats %s: %w", id, err)
	}
	st.Counters, st.Drops = c.Values, c.Drops
	if st.TCPConnections, st.UDPConnections, err = m.dp.LiveCounts(st.Slot); err != nil {
		return Stats{}, fmt.Errorf("stats %s: %w", id, err)
	}
	hits, err := m.dp.RuleHits(installed)
	if err != nil {
		return Stats{}, fmt.Errorf("stats %s: %w", id, err)
	}
	for i, r := range ordered {
		st.RuleHits = append(st.RuleHits, RuleStats{ID: r.ID, Action: r.Action, Hits: hits[i]})
	}
	return st, nil
}

// Connections returns up to limit of a guest's tracked connections.
func (m *Manager) Connections(id string, limit int) ([]datapath.Conn, error) {
	st, err := m.Get(id)
	if err != nil {
		return nil, err
	}
	var out []datapath.Conn
	err = m.dp.Conns(st.Slot, func(c datapath.Conn) bool {
		out = append(out, c)
		return limit <= 0 || len(out) < limit
	})
	return out, err
}
