package guests

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/palisade/palisade/fastpath/control/api"
	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/fastpath/heap"
	"github.com/palisade/palisade/fastpath/policy"
	"github.com/palisade/palisade/hypervisor/lab"
)

type fixture struct {
	t      *testing.T
	ns     *lab.Namespace
	dp     *datapath.Datapath
	pinDir string
	mgr    *Manager
	budget *heap.Budget
	costs  heap.Costs
	failed []*heap.ExhaustedError
	logs   *strings.Builder
}

// newFixture runs a Manager with a budget of max bytes on a host namespace
// with vNICs vnic1..vnic4.
func newFixture(t *testing.T, max uint64) *fixture {
	t.Helper()
	l := lab.ForTest(t)
	ns, err := l.Namespace("host")
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 4; i++ {
		if _, _, err := l.Link(lab.End{NS: ns, Name: fmt.Sprintf("vnic%d", i)}, lab.End{NS: ns, Name: fmt.Sprintf("peer%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	pinDir := filepath.Join(lab.BPFFSForTest(t), "palisade")
	dp, err := datapath.Open(datapath.Config{PinDir: pinDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	budget, costs, err := heap.ForDatapath(dp, max, heap.DefaultReserve)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, ns: ns, dp: dp, pinDir: pinDir, budget: budget, costs: costs, logs: &strings.Builder{}}
	log := logrus.New()
	log.SetOutput(io.MultiWriter(f.logs))
	f.mgr, err = New(Config{Datapath: dp, StateFile: filepath.Join(t.TempDir(), "guests.json"), Links: ns.Netlink(),
		Log: log, Budget: budget, Costs: costs, OnProtectionFailed: func(e *heap.ExhaustedError) { f.failed = append(f.failed, e) }})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) activate(guest, vnic string, p *policy.Policy) error {
	return f.ns.Do(func() error { return f.mgr.Activate(guest, vnic, p) })
}

// checkKernelAgrees asserts that what the budget reserved for the kernel is
// exactly what the kernel reports the datapath uses.
func (f *fixture) checkKernelAgrees(when string) {
	f.t.Helper()
	measured, err := f.dp.KernelMemory()
	if err != nil {
		f.t.Fatal(err)
	}
	r := f.budget.Snapshot()
	if r.KernelReserved != measured {
		f.t.Fatalf("%s: reserved for the kernel %d B, kernel reports %d B (off by %d)", when, r.KernelReserved, measured, int64(measured)-int64(r.KernelReserved))
	}
	if r.Reserved > r.Max {
		f.t.Fatalf("%s: reserved %d exceeds max %d", when, r.Reserved, r.Max)
	}
}

func webPolicy(rules int, maxConns uint32) *policy.Policy {
	p := &policy.Policy{MaxTCP: maxConns, MaxUDP: maxConns}
	for i := 0; i < rules; i++ {
		p.Rules = append(p.Rules, policy.Rule{ID: uint32(i + 1), Action: policy.Allow, Direction: policy.Inbound, Protocol: "tcp",
			Source: []string{fmt.Sprintf("203.0.113.%d", i%250), "2001:db8::/48"}, DestinationPorts: []string{fmt.Sprint(1000 + i), "8000-8099"}})
	}
	return p
}

func TestReservationsMatchTheKernelsAccounting(t *testing.T) {
	f := newFixture(t, heap.DefaultMax)
	f.checkKernelAgrees("empty")
	policies := []*policy.Policy{webPolicy(10, 1000), webPolicy(500, 5000), webPolicy(1, 100)}
	policies[2].Inspection = []string{"ips"} // adds punt buffers, outside the kernel
	for i, p := range policies {
		if err := f.activate(fmt.Sprintf("g%d", i+1), fmt.Sprintf("vnic%d", i+1), p); err != nil {
			t.Fatal(err)
		}
		f.checkKernelAgrees(fmt.Sprintf("after activating g%d", i+1))
	}
	// Re-policying changes tables and rules; the accounting follows.
	if err := f.mgr.UpdatePolicy("g1", webPolicy(200, 20000)); err != nil {
		t.Fatal(err)
	}
	f.checkKernelAgrees("after re-policying g1")
	if err := f.mgr.Deactivate("g2"); err != nil {
		t.Fatal(err)
	}
	f.checkKernelAgrees("after deactivating g2")
	r := f.budget.Snapshot()
	for _, g := range r.Guests {
		if g.Guest == "g3" && g.PuntBuffers == 0 {
			t.Fatal("an inspected guest reserved no punt buffers")
		}
	}
	t.Logf("reserved %s of which %s in the kernel, exactly what the kernel reports; base %s",
		api.FormatSize(r.Reserved), api.FormatSize(r.KernelReserved), api.FormatSize(r.Base))
}

func TestFullBudgetFailsOnlyTheNewGuest(t *testing.T) {
	probe := newFixture(t, heap.DefaultMax)
	p := webPolicy(20, 2000)
	c, err := policy.Compile(mustNormalize(t, p))
	if err != nil {
		t.Fatal(err)
	}
	per := probe.costs.ForPolicy("x", p, c).Total
	base := probe.budget.Snapshot().Base

	// Room for exactly two such guests, and most of a third.
	f := newFixture(t, base+heap.DefaultReserve+2*per+per*9/10)
	for _, g := range []string{"g1", "g2"} {
		if err := f.activate(g, "vnic"+g[1:], webPolicy(20, 2000)); err != nil {
			t.Fatal(err)
		}
	}
	slotsBefore, _ := f.dp.VNICs()
	err = f.activate("g3", "vnic3", webPolicy(20, 2000))
	var ex *heap.ExhaustedError
	if !errors.As(err, &ex) || ex.Guest != "g3" || ex.Need != per || ex.Free >= per {
		t.Fatalf("third guest: %v", err)
	}
	if !strings.Contains(err.Error(), "out of memory, guest protection failed: guest g3 needs") {
		t.Fatalf("message: %v", err)
	}
	if len(f.failed) != 1 || f.failed[0].Guest != "g3" {
		t.Fatalf("protection-failed callbacks: %+v", f.failed)
	}
	if !strings.Contains(f.logs.String(), "out of memory, guest protection failed") || !strings.Contains(f.logs.String(), "guest=g3") {
		t.Fatalf("log:\n%s", f.logs.String())
	}
	// Nothing of g3 exists; g1 and g2 are as they were.
	slotsAfter, _ := f.dp.VNICs()
	if len(slotsAfter) != 2 || len(slotsBefore) != 2 {
		t.Fatalf("vNICs before %v after %v", slotsBefore, slotsAfter)
	}
	if links, _ := f.dp.PinnedLinks(); len(links) != 4 {
		t.Fatalf("pinned links: %+v", links)
	}
	if _, err := f.mgr.Get("g3"); err == nil {
		t.Fatal("g3 is listed")
	}
	f.checkKernelAgrees("after the refusal")
	if r := f.budget.Snapshot(); r.Failures != 1 || r.LastFailure.Guest != "g3" {
		t.Fatalf("report: %+v", r)
	}
	// Freeing a guest makes room.
	if err := f.mgr.Deactivate("g1"); err != nil {
		t.Fatal(err)
	}
	if err := f.activate("g3", "vnic3", webPolicy(20, 2000)); err != nil {
		t.Fatalf("after freeing g1: %v", err)
	}
	f.checkKernelAgrees("after g3 fit")
	// A policy change that does not fit is refused and the old one stays.
	err = f.mgr.UpdatePolicy("g3", webPolicy(20, 200000))
	if !errors.As(err, &ex) {
		t.Fatalf("oversized policy change: %v", err)
	}
	if p, _ := f.mgr.Policy("g3"); p.MaxTCP != 2000 {
		t.Fatalf("refused change applied: max_tcp %d", p.MaxTCP)
	}
	f.checkKernelAgrees("after the refused change")
}

func mustNormalize(t *testing.T, p *policy.Policy) *policy.Policy {
	t.Helper()
	if err := p.Normalize(); err != nil {
		t.Fatal(err)
	}
	return p
}
