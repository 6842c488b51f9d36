package guests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"

	"github.com/palisade/palisade/fastpath/control/api"
	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/fastpath/heap"
	"github.com/palisade/palisade/fastpath/policy"
)

// Errors callers branch on (the control API maps them to HTTP statuses).
var (
	ErrNotFound      = errors.New("guest not protected")
	ErrAlreadyActive = errors.New("guest already protected")
	ErrVNICInUse     = errors.New("vNIC protects another guest")
	ErrNoVNIC        = errors.New("vNIC not found")
	ErrNoSlot        = errors.New("every guest slot is in use")
)

// Config configures a Manager.
type Config struct {
	Datapath   *datapath.Datapath
	StateFile  string
	Log        logrus.FieldLogger
	SweepEvery time.Duration // default 5s
	// Links resolves vNIC names in fastpathd's network namespace; nil
	// means the process's own.
	Links *netlink.Handle
	// Budget admits guests by the memory they will use (Costs says how
	// much); nil accounts nothing. Its size when New is called is the
	// configured one (--heap-max): Restore weighs it against a size set at
	// runtime (SetHeapMax) and saved in the state file. OnProtectionFailed
	// hears of every guest refused for lack of memory.
	Budget             *heap.Budget
	Costs              heap.Costs
	OnProtectionFailed func(*heap.ExhaustedError)
}

// Manager tracks the protected guests.
type Manager struct {
	cfg Config
	dp  *datapath.Datapath
	log logrus.FieldLogger

	mu           sync.Mutex
	guests       map[string]*guest
	slots        [datapath.MaxGuests]bool
	nextPolicyID uint32
	heapFlag     uint64     // the budget's configured size
	heap         *savedHeap // the budget's size if set at runtime, saved with the guests

	// bySlot answers the per-packet question "whose slot is this" without
	// m.mu, which an activation holds for milliseconds.
	bySlot sync.Map // uint32 -> SlotInfo
}

// SlotInfo is what the packet path needs to know about a guest.
type SlotInfo struct {
	ID         string
	FailClosed bool // inspection unavailable: drop
	Tap        bool
}

func (m *Manager) publishSlot(g *guest) {
	m.bySlot.Store(g.Slot, SlotInfo{ID: g.ID, FailClosed: g.Policy.InspectionFailure == "closed", Tap: g.Policy.Mode == policy.Tap})
}

// BySlot returns the guest holding slot.
func (m *Manager) BySlot(slot uint32) (SlotInfo, bool) {
	v, ok := m.bySlot.Load(slot)
	if !ok {
		return SlotInfo{}, false
	}
	return v.(SlotInfo), true
}

type guest struct {
	ID          string                    `json:"id"`
	VNIC        string                    `json:"vnic"`
	Ifindex     int                       `json:"ifindex"`
	Slot        uint32                    `json:"slot"`
	Policy      *policy.Policy            `json:"policy"`
	Installed   *datapath.InstalledPolicy `json:"installed"`
	ActivatedAt time.Time                 `json:"activated_at"`
	UpdatedAt   time.Time                 `json:"updated_at"`

	compiled *policy.Compiled
}

type stateFile struct {
	NextPolicyID uint32     `json:"next_policy_id"`
	Guests       []*guest   `json:"guests"`
	Heap         *savedHeap `json:"heap,omitempty"`
}

// New returns a Manager; Restore loads what an earlier run left.
func New(cfg Config) (*Manager, error) {
	if cfg.Datapath == nil || cfg.StateFile == "" {
		return nil, errors.New("guests: Datapath and StateFile are required")
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	if cfg.SweepEvery <= 0 {
		cfg.SweepEvery = 5 * time.Second
	}
	if cfg.Links == nil {
		h, err := netlink.NewHandle()
		if err != nil {
			return nil, fmt.Errorf("guests: netlink: %w", err)
		}
		cfg.Links = h
	}
	m := &Manager{cfg: cfg, dp: cfg.Datapath, log: cfg.Log, guests: map[string]*guest{}, nextPolicyID: 1}
	if cfg.Budget != nil {
		m.heapFlag = cfg.Budget.Max()
	}
	return m, nil
}

func (m *Manager) allocSlot() (uint32, error) {
	for i, used := range m.slots {
		if !used {
			m.slots[i] = true
			return uint32(i), nil
		}
	}
	return 0, ErrNoSlot
}

func (m *Manager) save() error {
	st := stateFile{NextPolicyID: m.nextPolicyID, Heap: m.heap}
	for _, g := range m.guests {
		st.Guests = append(st.Guests, g)
	}
	sort.Slice(st.Guests, func(i, j int) bool { return st.Guests[i].ID < st.Guests[j].ID })
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(m.cfg.StateFile), 0o700); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	tmp := m.cfg.StateFile + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	if err := os.Rename(tmp, m.cfg.StateFile); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	return nil
}

// inspect says whether a policy sends flows to the slow path.
func inspect(p *policy.Policy) bool { return len(p.Inspection) > 0 }

// Activate protects guest on vnic with pol. Nothing is attached until every
// structure the guest needs is in place, and any failure undoes the steps
// already taken: a failed activation leaves no trace.
func (m *Manager) Activate(guestID, vnic string, pol *policy.Policy) (err error) {
	if guestID == "" {
		return errors.New("activate: empty guest id")
	}
	if err := pol.Normalize(); err != nil {
		return fmt.Errorf("activate %s: %w", guestID, err)
	}
	link, err := m.cfg.Links.LinkByName(vnic)
	if err != nil {
		return fmt.Errorf("activate %s: %w: %s: %v", guestID, ErrNoVNIC, vnic, err)
	}
	ifindex := link.Attrs().Index

	var refused *heap.ExhaustedError
	defer func() { m.protectionFailed(refused) }() // after the unlock below
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.guests[guestID]; ok {
		return fmt.Errorf("activate %s: %w", guestID, ErrAlreadyActive)
	}
	for _, g := range m.guests {
		if g.Ifindex == ifindex {
			return fmt.Errorf("activate %s: %w: %s protects %s", guestID, ErrVNICInUse, vnic, g.ID)
		}
	}
	compiled, err := policy.Compile(pol)
	if err != nil {
		return fmt.Errorf("activate %s: %w", guestID, err)
	}
	// Memory first: a guest that does not fit is refused before anything
	// of it exists, and no other guest is touched.
	if err := m.reserve(m.cfg.Costs.ForPolicy(guestID, pol, compiled)); err != nil {
		errors.As(err, &refused)
		return fmt.Errorf("activate %s: %w", guestID, err)
	}
	slot, err := m.allocSlot()
	if err != nil {
		m.release(guestID)
		return fmt.Errorf("activate %s: %w", guestID, err)
	}
	var undo []func() error
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				if uerr := undo[i](); uerr != nil {
					m.log.WithError(uerr).WithField("guest", guestID).Error("undoing a failed activation")
				}
			}
			m.slots[slot] = false
			m.release(guestID)
		}
	}()

	id := m.nextPolicyID
	m.nextPolicyID++
	installed, err := m.dp.InstallPolicy(id, compiled)
	if err != nil {
		return fmt.Errorf("activate %s: %w", guestID, err)
	}
	undo = append(undo, func() error { return m.dp.RemovePolicy(installed, compiled) })
	if err := m.dp.CreateTables(slot, pol.MaxTCP, pol.MaxUDP); err != nil {
		return fmt.Errorf("activate %s: %w", guestID, err)
	}
	undo = append(undo, func() error { return m.dp.DeleteTables(slot) })
	if err := m.dp.ResetCounters(slot); err != nil {
		return fmt.Errorf("activate %s: %w", guestID, err)
	}
	now := time.Now()
	g := &guest{ID: guestID, VNIC: vnic, Ifindex: ifindex, Slot: slot, Policy: pol, Installed: installed,
		ActivatedAt: now, UpdatedAt: now, compiled: compiled}
	// The packet path learns whose slot this is before any packet of the
	// guest can be held: one held earlier would belong to no guest.
	m.publishSlot(g)
	undo = append(undo, func() error { m.bySlot.Delete(slot); return nil })
	// Attach first: with no configuration for the vNIC yet the programs
	// pass everything, so traffic flows on untouched until the next step
	// switches protection on in one map update.
	if err := m.dp.Attach(ifindex); err != nil {
		return fmt.Errorf("activate %s: %w", guestID, err)
	}
	undo = append(undo, func() error { return m.dp.Detach(ifindex) })
	if err := m.dp.SetVNIC(ifindex, m.config(g, datapath.Monotonic()+time.Duration(pol.PickupGrace))); err != nil {
		return fmt.Errorf("activate %s: %w", guestID, err)
	}
	undo = append(undo, func() error { return m.dp.DeleteVNIC(ifindex) })
	m.guests[guestID] = g
	if err := m.save(); err != nil {
		delete(m.guests, guestID)
		return fmt.Errorf("activate %s: %w", guestID, err)
	}
	m.log.WithFields(logrus.Fields{"guest": guestID, "vnic": vnic, "ifindex": ifindex, "slot": slot,
		"rules": len(pol.Rules), "mode": pol.Mode, "policy_id": id}).Info("guest protected")
	return nil
}

// reserve admits a guest's memory, or logs and refuses it (the caller tells
// OnProtectionFailed, once it has released m.mu).
func (m *Manager) reserve(r api.Reservation) error {
	if m.cfg.Budget == nil {
		return nil
	}
	err := m.cfg.Budget.Reserve(r)
	var ex *heap.ExhaustedError
	if errors.As(err, &ex) {
		m.log.WithFields(logrus.Fields{"guest": r.Guest, "need_bytes": ex.Need, "free_bytes": ex.Free, "max_bytes": ex.Max}).
			Error("out of memory, guest protection failed")
	}
	return err
}

// hold sets what a guest holds of the budget without admission: after a
// policy swap, which reserved at least as much while it ran.
func (m *Manager) hold(r api.Reservation) {
	if m.cfg.Budget != nil {
		m.cfg.Budget.Adopt(r)
	}
}

// reservation is what g holds of the budget outside a swap.
func (m *Manager) reservation(g *guest) api.Reservation {
	return m.cfg.Costs.ForPolicy(g.ID, g.Policy, g.compiled)
}

// protectionFailed tells OnProtectionFailed of a refused guest. Never under
// m.mu: the callback may publish over the network, or ask the manager.
func (m *Manager) protectionFailed(ex *heap.ExhaustedError) {
	if ex != nil && m.cfg.OnProtectionFailed != nil {
		m.cfg.OnProtectionFailed(ex)
	}
}

func (m *Manager) release(guestID string) {
	if m.cfg.Budget != nil {
		m.cfg.Budget.Release(guestID)
	}
}

func (m *Manager) config(g *guest, pickupUntil time.Duration) datapath.GuestConfig {
	return datapath.GuestConfig{Slot: g.Slot, Policy: g.Installed, Rules: g.Policy, PickupUntil: pickupUntil, Inspect: inspect(g.Policy)}
}

// UpdatePolicy swaps a protected guest's policy atomically: a packet is
// judged by the old rules or the new ones, never a mix. Existing flows are
// judged again under the new rules at their next packet. Until the swap ends
// the old structures and the new ones coexist in the kernel, and the budget
// holds both (heap.DuringSwap): a change for which both do not fit is
// refused, and the guest keeps its policy.
func (m *Manager) UpdatePolicy(guestID string, pol *policy.Policy) error {
	if err := pol.Normalize(); err != nil {
		return fmt.Errorf("update %s: %w", guestID, err)
	}
	compiled, err := policy.Compile(pol)
	if err != nil {
		return fmt.Errorf("update %s: %w", guestID, err)
	}
	var refused *heap.ExhaustedError
	defer func() { m.protectionFailed(refused) }() // after the unlock below
	m.mu.Lock()
	defer m.mu.Unlock()
	g, ok := m.guests[guestID]
	if !ok {
		return fmt.Errorf("update %s: %w", guestID, ErrNotFound)
	}
	resized := pol.MaxTCP != g.Policy.MaxTCP || pol.MaxUDP != g.Policy.MaxUDP
	before := m.reservation(g)
	if err := m.reserve(heap.DuringSwap(before, m.cfg.Costs.ForPolicy(guestID, pol, compiled), resized)); err != nil {
		errors.As(err, &refused)
		return fmt.Errorf("update %s: the old and new policy side by side: %w", guestID, err)
	}
	id := m.nextPolicyID
	m.nextPolicyID++
	installed, err := m.dp.InstallPolicy(id, compiled)
	if err != nil {
		m.hold(before)
		return fmt.Errorf("update %s: %w", guestID, err)
	}
	if resized {
		if err := m.dp.ResizeTables(g.Slot, pol.MaxTCP, pol.MaxUDP); err != nil {
			m.hold(before)
			return errors.Join(fmt.Errorf("update %s: %w", guestID, err), m.dp.RemovePolicy(installed, compiled))
		}
	}
	old, oldCompiled := g.Installed, g.compiled
	next := *g
	next.Policy, next.Installed, next.compiled, next.UpdatedAt = pol, installed, compiled, time.Now()
	pickup := time.Duration(0)
	if resized {
		// Entries made in the old tables while they were copied are
		// adopted mid-stream instead of being judged invalid.
		pickup = datapath.Monotonic() + 10*time.Second
	}
	if err := m.dp.SetVNIC(g.Ifindex, m.config(&next, pickup)); err != nil {
		return errors.Join(fmt.Errorf("update %s: %w", guestID, err), m.undoUpdate(g, &next, resized))
	}
	prev := *g
	*g = next
	m.publishSlot(g)
	// The state file names the new policy before the old one is gone: a
	// swap that cannot be recorded is undone while it still can be, so
	// what runs, what the API says and what a restart restores agree.
	if err := m.save(); err != nil {
		*g = prev
		return errors.Join(fmt.Errorf("update %s: %w", guestID, err), m.undoUpdate(g, &next, resized))
	}
	m.retire(g, old, oldCompiled, before)
	m.log.WithFields(logrus.Fields{"guest": guestID, "rules": len(pol.Rules), "mode": pol.Mode, "policy_id": id}).Info("guest policy updated")
	return nil
}

// retire frees the policy a swap replaced and returns g's reservation to
// its new size. Rules that could not be freed stay counted: the kernel still
// holds them.
func (m *Manager) retire(g *guest, old *datapath.InstalledPolicy, oldCompiled *policy.Compiled, before api.Reservation) {
	// No packet may still be reading the old policy when its space is
	// reused.
	if err := m.dp.Barrier(); err != nil {
		m.log.WithError(err).Error("barrier after policy swap; keeping the old policy's space")
	} else if err := m.dp.RemovePolicy(old, oldCompiled); err != nil {
		m.log.WithError(err).WithField("guest", g.ID).Warn("removing the previous policy")
	} else {
		m.hold(m.reservation(g))
		return
	}
	m.hold(heap.DuringSwap(before, m.reservation(g), false))
}

// undoUpdate puts guest g, restored to its previous configuration, back in
// force after a swap to next failed or could not be recorded, and frees
// next's space. Until that is done the budget keeps holding both policies:
// if the undo fails, what the kernel holds is not known.
func (m *Manager) undoUpdate(g, next *guest, resized bool) error {
	m.publishSlot(g)
	pickup := time.Duration(0)
	if resized {
		if err := m.dp.ResizeTables(g.Slot, g.Policy.MaxTCP, g.Policy.MaxUDP); err != nil {
			return fmt.Errorf("undo: %w", err)
		}
		pickup = datapath.Monotonic() + 10*time.Second
	}
	if err := m.dp.SetVNIC(g.Ifindex, m.config(g, pickup)); err != nil {
		return fmt.Errorf("undo: %w", err)
	}
	if err := m.dp.Barrier(); err != nil {
		return fmt.Errorf("undo: %w", err)
	}
	if err := m.dp.RemovePolicy(next.Installed, next.compiled); err != nil {
		return fmt.Errorf("undo: %w", err)
	}
	m.hold(m.reservation(g))
	return nil
}

// Deactivate stops protecting a guest. Its vNIC's configuration goes first,
// so from that instant its packets pass untouched; the rest is cleanup.
func (m *Manager) Deactivate(guestID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	g, ok := m.guests[guestID]
	if !ok {
		return fmt.Errorf("deactivate %s: %w", guestID, ErrNotFound)
	}
	var errs []error
	if err := m.dp.DeleteVNIC(g.Ifindex); err != nil {
		return fmt.Errorf("deactivate %s: %w", guestID, err)
	}
	errs = append(errs, m.dp.Detach(g.Ifindex))
	if err := m.dp.Barrier(); err != nil {
		errs = append(errs, err)
	} else {
		errs = append(errs, m.dp.RemovePolicy(g.Installed, g.compiled))
	}
	errs = append(errs, m.dp.DeleteTables(g.Slot))
	delete(m.guests, guestID)
	m.bySlot.Delete(g.Slot)
	m.slots[g.Slot] = false
	m.release(guestID)
	errs = append(errs, m.save())
	m.log.WithFields(logrus.Fields{"guest": guestID, "vnic": g.VNIC}).Info("guest unprotected")
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("deactivate %s: %w", guestID, err)
	}
	return nil
}

// Restore takes over what an earlier fastpathd left: its guests (from the
// state file), their kernel structures (pinned), and its links, which are
// pointed at this process's programs. Kernel objects no guest accounts for
// are removed.
func (m *Manager) Restore() error {
	var errs []error
	data, err := os.ReadFile(m.cfg.StateFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
		errs = append(errs, m.restoreHeap(nil))
	case err != nil:
		return fmt.Errorf("restore: %w", err)
	default:
		var st stateFile
		if err := json.Unmarshal(data, &st); err != nil {
			return fmt.Errorf("restore: state file %s: %w", m.cfg.StateFile, err)
		}
		// The size first: restored guests are adopted into it.
		heapErr := m.restoreHeap(st.Heap)
		guestsErr := m.restoreGuests(&st)
		errs = append(errs, heapErr, guestsErr)
		if st.Heap != nil && guestsErr == nil {
			errs = append(errs, m.forgetOverriddenHeap())
		}
	}
	errs = append(errs, m.dp.Reattach(), m.removeOrphans())
	m.log.WithField("guests", m.Count()).Info("restored protected guests")
	return errors.Join(errs...)
}

func (m *Manager) restoreGuests(st *stateFile) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if st.NextPolicyID > m.nextPolicyID {
		m.nextPolicyID = st.NextPolicyID
	}
	var errs []error
	for _, g := range st.Guests {
		if err := m.restoreGuest(g); err != nil {
			errs = append(errs, fmt.Errorf("restore %s: %w", g.ID, err))
			continue
		}
		m.guests[g.ID] = g
		m.slots[g.Slot] = true
		m.publishSlot(g)
		if m.cfg.Budget != nil {
			// A restored guest keeps its protection even if a smaller
			// budget is configured now: it is adopted, not re-admitted.
			m.cfg.Budget.Adopt(m.cfg.Costs.ForPolicy(g.ID, g.Policy, g.compiled))
		}
	}
	return errors.Join(errs...)
}

// Count is the number of protected guests.
func (m *Manager) Count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.guests)
}

func (m *Manager) restoreGuest(g *guest) error {
	if g.Policy == nil || g.Installed == nil || g.Slot >= datapath.MaxGuests {
		return errors.New("incomplete record")
	}
	if err := g.Policy.Normalize(); err != nil {
		return err
	}
	c, err := policy.Compile(g.Policy)
	if err != nil {
		return err
	}
	if c.EntryCount() != g.Installed.Entries {
		return fmt.Errorf("policy %d compiles to %d entries, %d installed: built by another version", g.Installed.ID, c.EntryCount(), g.Installed.Entries)
	}
	g.compiled = c
	return m.dp.ReservePolicy(g.Installed)
}

// removeOrphans detaches links and deletes vNIC entries and tables that no
// restored guest owns (a crash between steps of an activation).
func (m *Manager) removeOrphans() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	owned := map[int]bool{}
	slots := map[uint32]bool{}
	for _, g := range m.guests {
		owned[g.Ifindex] = true
		slots[g.Slot] = true
	}
	var errs []error
	vnics, err := m.dp.VNICs()
	if err != nil {
		errs = append(errs, err)
	}
	for ifindex := range vnics {
		if !owned[ifindex] {
			errs = append(errs, m.dp.DeleteVNIC(ifindex))
		}
	}
	links, err := m.dp.PinnedLinks()
	if err != nil {
		errs = append(errs, err)
	}
	for _, l := range links {
		if !owned[l.Ifindex] {
			errs = append(errs, m.dp.Detach(l.Ifindex))
		}
	}
	for slot := uint32(0); slot < datapath.MaxGuests; slot++ {
		if !slots[slot] {
			errs = append(errs, m.dp.DeleteTables(slot))
		}
	}
	return errors.Join(errs...)
}

// Run sweeps idle connections every SweepEvery until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(m.cfg.SweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.SweepOnce()
		}
	}
}

// SweepOnce expires idle connections of every guest now.
func (m *Manager) SweepOnce() {
	// What the sweep needs is copied under the lock: UpdatePolicy replaces
	// a guest's record in place.
	type sweep struct {
		id   string
		slot uint32
		to   datapath.Timeouts
	}
	m.mu.Lock()
	gs := make([]sweep, 0, len(m.guests))
	for _, g := range m.guests {
		gs = append(gs, sweep{g.ID, g.Slot, timeouts(g.Policy)})
	}
	m.mu.Unlock()
	for _, g := range gs {
		if _, _, removed, err := m.dp.Sweep(g.slot, g.to, datapath.Monotonic()); err != nil {
			m.log.WithError(err).WithField("guest", g.id).Warn("connection sweep failed")
		} else if removed > 0 {
			m.log.WithFields(logrus.Fields{"guest": g.id, "expired": removed}).Debug("expired idle connections")
		}
	}
}

func timeouts(p *policy.Policy) datapath.Timeouts {
	t := p.Timeouts
	return func(proto uint8, state string) time.Duration {
		switch proto {
		case 6:
			switch state {
			case "SYN_SENT", "SYN_RECV":
				return time.Duration(t.TCPSyn)
			case "ESTABLISHED":
				return time.Duration(t.TCPEstablished)
			case "FIN_WAIT":
				return time.Duration(t.TCPFinWait)
			case "CLOSE_WAIT":
				return time.Duration(t.TCPCloseWait)
			case "TIME_WAIT":
				return time.Duration(t.TCPTimeWait)
			}
			return time.Duration(t.TCPClosed)
		case 17:
			if state == "REPLIED" {
				return time.Duration(t.UDPReplied)
			}
			return time.Duration(t.UDP)
		case 1, 58:
			return time.Duration(t.ICMP)
		}
		return time.Duration(t.Other)
	}
}

// SlotName returns the guest holding slot, for events.
func (m *Manager) SlotName(slot uint32) string {
	if info, ok := m.BySlot(slot); ok {
		return info.ID
	}
	return fmt.Sprintf("slot%d", slot)
}
