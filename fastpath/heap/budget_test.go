package heap

import (
	"errors"
	"strings"
	"testing"

	"github.com/palisade/palisade/fastpath/control/api"
)

func TestParseAndFormatSize(t *testing.T) {
	for in, want := range map[string]uint64{
		"256MiB": 256 << 20, "512MB": 512e6, "1GiB": 1 << 30, "300k": 300 << 10, "4096": 4096,
		"1.5GiB": 3 << 29, " 64 MiB ": 64 << 20, "10B": 10, "2g": 2 << 30,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "lots", "-5MiB", "5XB", "inf", "NaN", "+Inf GiB", "1e30", "16777216TiB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
	if s := FormatSize(256 << 20); s != "256.00 MiB" {
		t.Errorf("FormatSize: %s", s)
	}
}

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
