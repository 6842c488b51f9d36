package bindserver_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/hypervisor/lab/wait"
)

// TestDeadPeerDetectedExactlyAtDefaultBound cuts the appliance's cable with
// both daemons on one fake clock: nothing is in flight (neither has pinged
// yet), so each is silent from the moment the test starts moving the clock.
// Both still hold the binding at 2.999999999 s and declare the other dead
// at 3 s, the default bound; with the cable back, the slow path rebinds.
func TestDeadPeerDetectedExactlyAtDefaultBound(t *testing.T) {
	s := site(t, 1)
	clock := clockwork.NewFakeClock()
	h := startHost(t, s, hostOpts{timing: channel.Timing{Clock: clock}})
	a := startAppliance(t, s.Appliances[0], appOpts{clock: clock})
	waitState(t, "fast path", h.srv.Status, channel.StateBound)
	waitState(t, "slow path", a.client.Status, channel.StateBound)
	// The host's two warnings, the appliance's refusal log, and a keepalive
	// and a watchdog per session.
	blockUntil(t, clock, 7)

	// Cut the appliance's cable: no FIN, no RST, just silence both ways.
	nl := s.Appliances[0].Netlink()
	eth0, err := nl.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetDown(eth0); err != nil {
		t.Fatal(err)
	}
	clock.Advance(channel.DefaultDeadAfter - time.Nanosecond)
	if hs, as := h.srv.Status(), a.client.Status(); hs.State != channel.StateBound || as.State != channel.StateBound {
		t.Fatalf("a side gave up before %s of silence: host %q, appliance %q", channel.DefaultDeadAfter, hs.State, as.State)
	}
	clock.Advance(time.Nanosecond)
	lost := h.logs.wait(t, "slow path binding lost")
	if reason := fmt.Sprint(lost.Data["reason"]); reason != "peer dead: nothing received for 3s" {
		t.Errorf("reason %q", reason)
	}
	if st := h.srv.Status(); st.State == channel.StateBound || strings.Join(st.EnginesOff, ",") != "ips,wrs" {
		t.Errorf("after loss: state %q, engines offline %v", st.State, st.EnginesOff)
	}
	a.logs.wait(t, "binding to fast path lost")

	// Reconnect the cable: the slow path rebinds by itself once its backoff
	// has passed on the clock, which moves only while it waits to retry.
	if err := nl.LinkSetUp(eth0); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "the slow path to bind again", func() bool {
		if a.client.Status().State == channel.StateBackoff {
			clock.Advance(100 * time.Millisecond)
		}
		return h.srv.Status().State == channel.StateBound
	})
	if st := h.srv.Status(); st.Reconnects != 1 {
		t.Errorf("reconnects %d, want 1", st.Reconnects)
	}
}

// TestUnboundWarningEveryIntervalOnTheClock: while no slow path is bound the
// host warns at exactly 10, 20 and 30 s on its clock, none in between, each
// saying for how long; bound, it does not warn.
func TestUnboundWarningEveryIntervalOnTheClock(t *testing.T) {
	s := site(t, 1)
	clock := clockwork.NewFakeClock()
	// The binding's own bounds are far beyond what the test moves the clock.
	h := startHost(t, s, hostOpts{timing: channel.Timing{Keepalive: time.Hour, DeadAfter: 2 * time.Hour, Clock: clock}})
	st := h.srv.Status()
	if got := strings.Join(st.EnginesOff, ","); got != "ips,wrs" || st.State != channel.StateListening {
		t.Fatalf("unbound status: state %q, engines offline %q", st.State, got)
	}
	blockUntil(t, clock, 2)
	for k := 1; k <= 3; k++ {
		clock.Advance(10*time.Second - time.Nanosecond)
		if n := len(h.logs.find("slow path not bound")); n != k-1 {
			t.Fatalf("%d warnings 1ns before warning %d was due", n, k)
		}
		clock.Advance(time.Nanosecond)
		wait.For(t, fmt.Sprintf("warning %d", k), func() bool { return len(h.logs.find("slow path not bound")) == k })
		blockUntil(t, clock, 2) // handled, and armed for the next
	}
	var unboundFor []string
	for _, w := range h.logs.find("slow path not bound") {
		unboundFor = append(unboundFor, fmt.Sprint(w.Data["unbound_for"]))
		if w.Data["engines_offline"] != "ips,wrs" {
			t.Errorf("warning fields: %v", w.Data)
		}
	}
	if got := strings.Join(unboundFor, " "); got != "10s 20s 30s" {
		t.Fatalf("warnings said unbound for %s, want 10s 20s 30s", got)
	}

	startAppliance(t, s.Appliances[0], appOpts{})
	waitState(t, "fast path", h.srv.Status, channel.StateBound)
	blockUntil(t, clock, 4) // and the session's keepalive and watchdog
	for k := 0; k < 3; k++ {
		clock.Advance(10 * time.Second)
		blockUntil(t, clock, 4)
	}
	if n := len(h.logs.find("slow path not bound")); n != 3 {
		t.Fatalf("%d 'not bound' warnings while bound", n-3)
	}
	if st := h.srv.Status(); len(st.EnginesOff) != 0 {
		t.Fatalf("engines offline while bound with ips,wrs: %v", st.EnginesOff)
	}
}
