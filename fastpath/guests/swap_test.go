package guests

import (
	"errors"
	"testing"

	"github.com/palisade/palisade/fastpath/control/api"
	"github.com/palisade/palisade/fastpath/heap"
	"github.com/palisade/palisade/fastpath/policy"
)

// reservationFor is what a guest with p holds outside a swap.
func (f *fixture) reservationFor(guest string, p *policy.Policy) api.Reservation {
	f.t.Helper()
	c, err := policy.Compile(mustNormalize(f.t, p))
	if err != nil {
		f.t.Fatal(err)
	}
	return f.costs.ForPolicy(guest, p, c)
}

func (f *fixture) held(guest string) api.Reservation {
	for _, r := range f.budget.Snapshot().Guests {
		if r.Guest == guest {
			return r
		}
	}
	f.t.Fatalf("%s holds nothing", guest)
	return api.Reservation{}
}

// TestPolicySwapAtTheBudgetsEdge changes a guest's policy where the new
// policy alone fits the budget but old and new side by side, as the kernel
// holds them during the swap, do not: the change is refused and the guest
// keeps its policy. With exactly enough for both it goes through, and the
// guest then holds the new size only, which the kernel confirms. Both a
// resize (new tables beside the old) and a change of rules only (new rules
// beside the old) are checked.
func TestPolicySwapAtTheBudgetsEdge(t *testing.T) {
	for _, tc := range []struct {
		name     string
		old, new *policy.Policy
		resized  bool
	}{
		{"resize", webPolicy(10, 2000), webPolicy(10, 6000), true},
		{"rules only", webPolicy(10, 2000), webPolicy(300, 2000), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			probe := newFixture(t, heap.DefaultMax)
			before, after := probe.reservationFor("g1", tc.old), probe.reservationFor("g1", tc.new)
			swap := heap.DuringSwap(before, after, tc.resized)
			fixed := probe.budget.Snapshot().Base + heap.DefaultReserve

			f := newFixture(t, fixed+swap.Total-1)
			if err := f.activate("g1", "vnic1", tc.old); err != nil {
				t.Fatal(err)
			}
			if after.Total > f.budget.Snapshot().Free+before.Total {
				t.Fatalf("the edge is wrong: the new policy alone (%d B) must fit", after.Total)
			}
			err := f.mgr.UpdatePolicy("g1", tc.new)
			var ex *heap.ExhaustedError
			if !errors.As(err, &ex) || ex.Need != swap.Total || ex.Free != swap.Total-1 {
				t.Fatalf("a change one byte short of old and new side by side: %v", err)
			}
			if st, _ := f.mgr.Get("g1"); st.MaxTCP != tc.old.MaxTCP || st.Rules != len(tc.old.Rules) {
				t.Fatalf("the refused change applied: %+v", st)
			}
			if got := f.held("g1"); got != before {
				t.Fatalf("after the refusal g1 holds %+v, want %+v", got, before)
			}
			f.checkKernelAgrees("after the refused change")

			if err := f.budget.SetMax(fixed + swap.Total); err != nil {
				t.Fatal(err)
			}
			if err := f.mgr.UpdatePolicy("g1", tc.new); err != nil {
				t.Fatalf("with room for old and new side by side: %v", err)
			}
			if got := f.held("g1"); got != after {
				t.Fatalf("after the swap g1 holds %+v, want the new size %+v", got, after)
			}
			f.checkKernelAgrees("after the swap")
		})
	}
}
