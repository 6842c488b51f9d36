package guests

import (
	"encoding/json"
	"errors"
	"os"
	"testing"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/fastpath/heap"
)

// restart opens f's pinned datapath and state file again, as a restarted
// fastpathd whose --heap-max is flag does, and returns the fields of its
// "heap max chosen" line.
func (f *fixture) restart(flag uint64) (*Manager, *heap.Budget, logrus.Fields) {
	f.t.Helper()
	dp, err := datapath.Open(datapath.Config{PinDir: f.pinDir})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { dp.Close() })
	budget, _, err := heap.ForDatapath(dp, flag, heap.DefaultReserve)
	if err != nil {
		f.t.Fatal(err)
	}
	log, hook := logtest.NewNullLogger()
	mgr, err := New(Config{Datapath: dp, StateFile: f.mgr.cfg.StateFile, Links: f.ns.Netlink(), Log: log, Budget: budget, Costs: f.costs})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := mgr.Restore(); err != nil {
		f.t.Fatal(err)
	}
	var chosen []logrus.Fields
	for _, e := range hook.AllEntries() {
		if e.Message == "heap max chosen" {
			chosen = append(chosen, e.Data)
		}
	}
	if len(chosen) != 1 {
		f.t.Fatalf("%d \"heap max chosen\" lines at start, want 1", len(chosen))
	}
	return mgr, budget, chosen[0]
}

func savedHeapOf(t *testing.T, path string) *savedHeap {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st stateFile
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	return st.Heap
}

// TestRuntimeHeapSizeSurvivesRestart sets the budget at runtime, restarts
// with the same --heap-max (the runtime size stays, restored guests are
// adopted into it), then with an edited flag (the flag wins, and the runtime
// size is forgotten: setting the flag back does not revive it). Every start
// logs the flag, the saved size and the choice.
func TestRuntimeHeapSizeSurvivesRestart(t *testing.T) {
	const flag, runtime, edited = 256 << 20, 300 << 20, 400 << 20
	f := newFixture(t, flag)
	if err := f.activate("g1", "vnic1", webPolicy(10, 1000)); err != nil {
		t.Fatal(err)
	}
	if err := f.mgr.SetHeapMax(runtime); err != nil {
		t.Fatal(err)
	}
	var below *heap.BelowReservedError
	if err := f.mgr.SetHeapMax(1 << 20); !errors.As(err, &below) {
		t.Fatalf("a size below what is reserved: %v", err)
	}
	if got := savedHeapOf(t, f.mgr.cfg.StateFile); got == nil || *got != (savedHeap{Max: runtime, Flag: flag}) {
		t.Fatalf("state file holds %+v", got)
	}

	mgr, budget, fields := f.restart(flag)
	if budget.Max() != runtime || fields["chosen"] != "saved" || fields["flag_bytes"] != uint64(flag) ||
		fields["saved_bytes"] != uint64(runtime) || fields["max_bytes"] != uint64(runtime) {
		t.Fatalf("restart with the same flag: max %d, logged %v", budget.Max(), fields)
	}
	if mgr.Count() != 1 || len(budget.Snapshot().Guests) != 1 {
		t.Fatalf("g1 was not restored into the budget: %d guests, %+v", mgr.Count(), budget.Snapshot().Guests)
	}

	_, budget, fields = f.restart(edited)
	if budget.Max() != edited || fields["chosen"] != "flag" || fields["flag_bytes"] != uint64(edited) || fields["saved_bytes"] != uint64(runtime) {
		t.Fatalf("restart with an edited flag: max %d, logged %v", budget.Max(), fields)
	}
	if got := savedHeapOf(t, f.mgr.cfg.StateFile); got != nil {
		t.Fatalf("the overridden runtime size is still saved: %+v", got)
	}
	_, budget, fields = f.restart(flag)
	if _, saved := fields["saved_bytes"]; budget.Max() != flag || fields["chosen"] != "flag" || saved {
		t.Fatalf("the flag set back revived the runtime size: max %d, logged %v", budget.Max(), fields)
	}
}

// TestUnrecordedHeapSizeIsUndone makes the state file unwritable: the new
// size is refused and the budget keeps its size, so what runs and what a
// restart finds agree.
func TestUnrecordedHeapSizeIsUndone(t *testing.T) {
	f := newFixture(t, heap.DefaultMax)
	if err := os.Mkdir(f.mgr.cfg.StateFile+".tmp", 0o700); err != nil { // the state file cannot be replaced
		t.Fatal(err)
	}
	if err := f.mgr.SetHeapMax(300 << 20); err == nil {
		t.Fatal("a size that could not be recorded was set")
	}
	if got := f.budget.Max(); got != heap.DefaultMax {
		t.Fatalf("budget is %d after the failed change", got)
	}
}
