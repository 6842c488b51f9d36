package heap

import (
	"errors"
	"strings"
	"testing"

	"github.com/palisade/palisade/fastpath/control/api"
)

func TestBudgetAdmitsRefusesAndReleases(t *testing.T) {
	b, err := NewBudget(100, 10, 30) // 60 left for guests
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"a", "b", "c"} {
		if err := b.Reserve(api.Reservation{Guest: g, Total: 20, KernelShare: 20}); err != nil {
			t.Fatalf("%s: %v", g, err)
		}
	}
	err = b.Reserve(api.Reservation{Guest: "d", Total: 20})
	var ex *ExhaustedError
	if !errors.As(err, &ex) || ex.Guest != "d" || ex.Need != 20 || ex.Free != 0 || ex.Max != 100 {
		t.Fatalf("full budget: %v", err)
	}
	if !strings.Contains(err.Error(), "out of memory, guest protection failed: guest d needs 20 B, 0 B free of 100 B") {
		t.Fatalf("message: %v", err)
	}
	r := b.Snapshot()
	if r.Failures != 1 || r.LastFailure.Guest != "d" || r.Reserved != 100 || r.Free != 0 || len(r.Guests) != 3 || r.KernelReserved != 90 {
		t.Fatalf("snapshot: %+v", r)
	}
	// A policy change replaces what the guest held: growing by 5 does
	// not fit, shrinking does.
	if err := b.Reserve(api.Reservation{Guest: "a", Total: 25}); err == nil {
		t.Fatal("growth past the budget admitted")
	}
	if got := b.Snapshot().Reserved; got != 100 {
		t.Fatalf("a refused change altered the budget: %d", got)
	}
	if err := b.Reserve(api.Reservation{Guest: "a", Total: 10}); err != nil {
		t.Fatal(err)
	}
	b.Release("b")
	if err := b.Reserve(api.Reservation{Guest: "d", Total: 20}); err != nil {
		t.Fatalf("after release: %v", err)
	}
	var below *BelowReservedError
	if err := b.SetMax(50); !errors.As(err, &below) || below.Reserved != 90 {
		t.Fatalf("shrink below reserved: %v", err)
	}
	if err := b.SetMax(200); err != nil || b.Snapshot().Free != 110 {
		t.Fatalf("grow: %v %+v", err, b.Snapshot())
	}
	if _, err := NewBudget(30, 10, 25); err == nil {
		t.Fatal("a budget smaller than base + reserve was accepted")
	}
}

// TestSwapIsAdmittedWithOldAndNewSideBySide checks the budget's edge for a
// policy change: the new reservation alone fits, old and new together do
// not, so the change is refused; one byte more admits it, and the guest
// returns to the new size when the swap ends.
func TestSwapIsAdmittedWithOldAndNewSideBySide(t *testing.T) {
	old := api.Reservation{Guest: "g", TCPTable: 100, UDPTable: 50, Rules: 20, TrieEntries: 2, VNICEntry: 5, KernelShare: 175, Total: 175}
	next := api.Reservation{Guest: "g", TCPTable: 200, UDPTable: 100, Rules: 30, TrieEntries: 3, VNICEntry: 5, PuntBuffers: 40, KernelShare: 335, Total: 375}
	swap := DuringSwap(old, next, true)
	want := api.Reservation{Guest: "g", TCPTable: 300, UDPTable: 150, Rules: 50, TrieEntries: 5, VNICEntry: 5, PuntBuffers: 40, KernelShare: 505, Total: 545}
	if swap != want {
		t.Fatalf("resizing swap holds %+v, want %+v", swap, want)
	}
	// Without new tables only the rules are doubled; the vNIC entry is
	// rewritten in place, and the punt queue is one, at the larger bound.
	sameTables := next
	sameTables.TCPTable, sameTables.UDPTable, sameTables.KernelShare, sameTables.Total = 100, 50, 185, 225
	if got := DuringSwap(old, sameTables, false); got.Rules != 50 || got.TCPTable != 100 || got.KernelShare != 205 || got.Total != 245 {
		t.Fatalf("swap of rules only holds %+v", got)
	}

	const base, reserve = 30, 10
	b, err := NewBudget(base+reserve+swap.Total-1, reserve, base)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Reserve(old); err != nil {
		t.Fatal(err)
	}
	if next.Total > b.Snapshot().Free+old.Total {
		t.Fatal("the edge is wrong: the new reservation alone must fit")
	}
	err = b.Reserve(swap)
	var ex *ExhaustedError
	if !errors.As(err, &ex) || ex.Need != swap.Total || ex.Free != swap.Total-1 {
		t.Fatalf("a swap one byte too big: %v", err)
	}
	if r := b.Snapshot(); len(r.Guests) != 1 || r.Guests[0] != old {
		t.Fatalf("a refused swap changed what the guest holds: %+v", r.Guests)
	}
	if err := b.SetMax(base + reserve + swap.Total); err != nil {
		t.Fatal(err)
	}
	if err := b.Reserve(swap); err != nil {
		t.Fatalf("a swap that fits exactly: %v", err)
	}
	// While the swap runs the budget cannot shrink under it.
	var below *BelowReservedError
	if err := b.SetMax(base + reserve + next.Total); !errors.As(err, &below) {
		t.Fatalf("shrinking under a running swap: %v", err)
	}
	b.Adopt(next) // the swap ended: the old structures are gone
	if r := b.Snapshot(); r.Guests[0] != next || r.Free != swap.Total-next.Total {
		t.Fatalf("after the swap: %+v", r)
	}
}
