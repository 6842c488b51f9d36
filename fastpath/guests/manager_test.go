package guests

import (
	"encoding/json"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/palisade/palisade/fastpath/heap"
)

// repeat runs fn over and over on a goroutine of its own until the returned
// stop is called (stop waits for it).
func repeat(fn func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
				fn()
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// TestSweepDuringPolicyUpdates sweeps while policies are swapped: the sweeper
// must not read a guest's record while UpdatePolicy rewrites it (-race).
func TestSweepDuringPolicyUpdates(t *testing.T) {
	f := newFixture(t, heap.DefaultMax)
	if err := f.activate("g1", "vnic1", webPolicy(5, 1000)); err != nil {
		t.Fatal(err)
	}
	stop := repeat(f.mgr.SweepOnce)
	defer stop()
	for i := 0; i < 20; i++ {
		if err := f.mgr.UpdatePolicy("g1", webPolicy(5+i%3, 1000)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestUnrecordedPolicyChangeIsUndone makes the state file unwritable: the
// change is refused and undone, so what runs, what the API reports and what
// a restart would restore are all the old policy.
func TestUnrecordedPolicyChangeIsUndone(t *testing.T) {
	f := newFixture(t, heap.DefaultMax)
	if err := f.activate("g1", "vnic1", webPolicy(10, 1000)); err != nil {
		t.Fatal(err)
	}
	before, err := f.mgr.Get("g1")
	if err != nil {
		t.Fatal(err)
	}
	tmp := f.mgr.cfg.StateFile + ".tmp"
	if err := os.Mkdir(tmp, 0o700); err != nil { // the state file cannot be replaced
		t.Fatal(err)
	}
	if err := f.mgr.UpdatePolicy("g1", webPolicy(20, 5000)); err == nil {
		t.Fatal("a change that could not be recorded succeeded")
	}
	after, err := f.mgr.Get("g1")
	if err != nil {
		t.Fatal(err)
	}
	if after.PolicyID != before.PolicyID || after.Rules != 10 || after.MaxTCP != 1000 {
		t.Fatalf("after the failed change: policy %d, %d rules, max_tcp %d; before: policy %d", after.PolicyID, after.Rules, after.MaxTCP, before.PolicyID)
	}
	f.checkKernelAgrees("after the undone change")
	var st stateFile
	data, err := os.ReadFile(f.mgr.cfg.StateFile)
	if err == nil {
		err = json.Unmarshal(data, &st)
	}
	if err != nil || len(st.Guests) != 1 || st.Guests[0].Installed.ID != before.PolicyID {
		t.Fatalf("state file: %+v %v", st, err)
	}
	// Once the file can be written, the same change goes through.
	if err := os.Remove(tmp); err != nil {
		t.Fatal(err)
	}
	if err := f.mgr.UpdatePolicy("g1", webPolicy(20, 5000)); err != nil {
		t.Fatal(err)
	}
	f.checkKernelAgrees("after the change")
}

// TestProtectionFailedMayAskTheManager has the protection-failed callback ask
// the manager (as fastpathd's, which publishes over the binding, may block):
// it must not run under the manager's lock.
func TestProtectionFailedMayAskTheManager(t *testing.T) {
	f := newFixture(t, heap.DefaultMax)
	var asked []int
	f.mgr.cfg.OnProtectionFailed = func(*heap.ExhaustedError) { asked = append(asked, f.mgr.Count()) }
	huge := webPolicy(1, 1<<30) // more connections than any budget
	done := make(chan error, 2)
	go func() {
		err := f.activate("g1", "vnic1", huge)
		if err == nil {
			err = errors.New("activated")
		}
		done <- err
		if err := f.activate("g2", "vnic2", webPolicy(1, 100)); err != nil {
			done <- err
			return
		}
		done <- f.mgr.UpdatePolicy("g2", webPolicy(1, 1<<30))
	}()
	for i := 0; i < 2; i++ {
		select {
		case err := <-done:
			var ex *heap.ExhaustedError
			if !errors.As(err, &ex) {
				t.Fatalf("refusal %d: %v", i, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the manager deadlocked calling OnProtectionFailed")
		}
	}
	if len(asked) != 2 || asked[1] != 1 {
		t.Fatalf("callbacks saw %v guests", asked)
	}
}

// TestSlotKnownWhileProtected checks, while a guest comes and goes, that a
// vNIC the datapath protects always has its slot published to the packet
// path (a packet held in between would belong to no guest).
func TestSlotKnownWhileProtected(t *testing.T) {
	f := newFixture(t, heap.DefaultMax)
	const slot = 0 // the guest's, every time
	var seen atomic.Int64
	stop := repeat(func() {
		// Published neither just before nor just after the vNIC is seen
		// configured: it was configured while unpublished.
		_, before := f.mgr.BySlot(slot)
		vnics, err := f.dp.VNICs()
		_, after := f.mgr.BySlot(slot)
		if err == nil && len(vnics) > 0 && !before && !after {
			seen.Add(1)
		}
	})
	for i := 0; i < 30; i++ {
		if err := f.activate("g1", "vnic1", webPolicy(1, 100)); err != nil {
			t.Fatal(err)
		}
		if err := f.mgr.Deactivate("g1"); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	if n := seen.Load(); n > 0 {
		t.Fatalf("the vNIC was protected while its slot was unknown to the packet path (%d times)", n)
	}
}
