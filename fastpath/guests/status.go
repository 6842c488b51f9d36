package guests

import (
	"fmt"
	"sort"

	"github.com/palisade/palisade/fastpath/control/api"
	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/fastpath/policy"
)

// status is g as the control API reports it.
func (g *guest) status() api.Guest {
	return api.Guest{ID: g.ID, VNIC: g.VNIC, Ifindex: g.Ifindex, Slot: g.Slot, Mode: string(g.Policy.Mode),
		PolicyName: g.Policy.Name, PolicyID: g.Installed.ID, Rules: len(g.Policy.Rules), Inspection: g.Policy.Inspection,
		MaxTCP: g.Policy.MaxTCP, MaxUDP: g.Policy.MaxUDP, ActivatedAt: g.ActivatedAt, UpdatedAt: g.UpdatedAt}
}

// List returns every protected guest, by id.
func (m *Manager) List() []api.Guest {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]api.Guest, 0, len(m.guests))
	for _, g := range m.guests {
		out = append(out, g.status())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Get returns one guest's status.
func (m *Manager) Get(id string) (api.Guest, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	g, ok := m.guests[id]
	if !ok {
		return api.Guest{}, fmt.Errorf("%s: %w", id, ErrNotFound)
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
func (m *Manager) Stats(id string) (api.GuestStats, error) {
	m.mu.Lock()
	g, ok := m.guests[id]
	var st api.GuestStats
	var installed *datapath.InstalledPolicy
	var ordered []policy.Rule
	if ok {
		st.Guest = g.status()
		installed = g.Installed
		ordered = g.Policy.Ordered()
	}
	m.mu.Unlock()
	if !ok {
		return api.GuestStats{}, fmt.Errorf("stats %s: %w", id, ErrNotFound)
	}
	c, err := m.dp.GuestCounters(st.Slot)
	if err != nil {
		return api.GuestStats{}, fmt.Errorf("stats %s: %w", id, err)
	}
	st.Counters, st.Drops = c.Values, c.Drops
	if st.TCPConnections, st.UDPConnections, err = m.dp.LiveCounts(st.Slot); err != nil {
		return api.GuestStats{}, fmt.Errorf("stats %s: %w", id, err)
	}
	hits, err := m.dp.RuleHits(installed)
	if err != nil {
		return api.GuestStats{}, fmt.Errorf("stats %s: %w", id, err)
	}
	for i, r := range ordered {
		st.RuleHits = append(st.RuleHits, api.RuleHit{ID: r.ID, Action: r.Action, Hits: hits[i]})
	}
	return st, nil
}

// Connections returns up to limit of a guest's tracked connections.
func (m *Manager) Connections(id string, limit int) ([]api.Conn, error) {
	st, err := m.Get(id)
	if err != nil {
		return nil, err
	}
	var out []api.Conn
	err = m.dp.Conns(st.Slot, func(c datapath.Conn) bool {
		out = append(out, c)
		return limit <= 0 || len(out) < limit
	})
	return out, err
}
