package guests

import (
	"errors"
	"fmt"

	"github.com/sirupsen/logrus"
)

// savedHeap is a budget size set at runtime (`fastpathd heap set`), with the
// configured size (--heap-max) it replaced. A restart keeps the runtime
// size while the flag is unchanged; a flag edited since is the newer
// decision and wins.
type savedHeap struct {
	Max  uint64 `json:"max_bytes"`
	Flag uint64 `json:"flag_bytes"`
}

// SetHeapMax changes the budget's size and records it in the state file, so
// a restart keeps it. It refuses to go below what is reserved
// (*heap.BelowReservedError); a size that cannot be recorded is undone.
func (m *Manager) SetHeapMax(max uint64) error {
	b := m.cfg.Budget
	if b == nil {
		return errors.New("heap set: this manager has no budget")
	}
	// Reservations change only under m.mu: the previous size still fits
	// if the change has to be undone.
	m.mu.Lock()
	defer m.mu.Unlock()
	prevMax, prevSaved := b.Max(), m.heap
	if err := b.SetMax(max); err != nil {
		return err
	}
	m.heap = &savedHeap{Max: max, Flag: m.heapFlag}
	if err := m.save(); err != nil {
		m.heap = prevSaved
		return errors.Join(fmt.Errorf("heap set: %w", err), b.SetMax(prevMax))
	}
	m.log.WithFields(logrus.Fields{"max_bytes": max, "previous_bytes": prevMax, "flag_bytes": m.heapFlag}).
		Info("heap max set at runtime")
	return nil
}

// restoreHeap chooses the budget's size at start: the runtime size saved in
// the state file while --heap-max is what it was when that size was set,
// else the flag's. The choice is logged with both values.
func (m *Manager) restoreHeap(saved *savedHeap) error {
	b := m.cfg.Budget
	if b == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	fields := logrus.Fields{"flag_bytes": m.heapFlag, "chosen": "flag", "max_bytes": m.heapFlag}
	var err error
	switch {
	case saved == nil:
		fields["reason"] = "no size set at runtime"
	case saved.Flag != m.heapFlag:
		fields["saved_bytes"] = saved.Max
		fields["reason"] = fmt.Sprintf("--heap-max changed since the runtime size was set (was %d bytes): the newer decision wins", saved.Flag)
	default:
		fields["saved_bytes"] = saved.Max
		if err = b.SetMax(saved.Max); err != nil {
			fields["reason"] = fmt.Sprintf("the runtime size no longer holds the datapath: %v", err)
			break
		}
		m.heap = saved
		fields["chosen"], fields["max_bytes"] = "saved", saved.Max
		fields["reason"] = "--heap-max unchanged since `fastpathd heap set`: the runtime size stays"
	}
	m.log.WithFields(fields).Info("heap max chosen")
	if err != nil {
		return fmt.Errorf("restore heap max: %w", err)
	}
	return nil
}

// forgetOverriddenHeap rewrites the state file without a runtime size the
// flag has overridden (restoreHeap dropped it), so that setting the flag
// back later does not revive it. Only once every guest is restored: the
// file is written from what is.
func (m *Manager) forgetOverriddenHeap() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.heap != nil {
		return nil
	}
	if err := m.save(); err != nil {
		return fmt.Errorf("restore: forget the overridden heap size: %w", err)
	}
	return nil
}
