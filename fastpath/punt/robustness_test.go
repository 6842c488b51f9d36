package punt_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/fastpath/policy"
	"github.com/palisade/palisade/fastpath/punt"
	"github.com/palisade/palisade/hypervisor/lab/wait"
)

// receive reads datagrams from c until one contains want; false if none
// does before only a broken path would take.
func receive(c net.PacketConn, want string) bool {
	buf := make([]byte, 2048)
	if err := c.SetReadDeadline(time.Now().Add(mustAnswer)); err != nil {
		return false
	}
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return false
		}
		if bytes.Contains(buf[:n], []byte(want)) {
			return true
		}
	}
}

// TestStaleCongestionClearedAtStart leaves a guest's slot marked congested
// in the pinned map, as a fastpathd stopped while shedding does: the next
// engine must not go on shedding it.
func TestStaleCongestionClearedAtStart(t *testing.T) {
	r := newRigWith(t, rigOpts{failure: "closed", beforeEngine: func(dp *datapath.Datapath) error {
		return dp.SetCongested(0, true) // the slot the guest gets
	}})
	r.httpServer()
	c := r.dialWeb()
	if resp, err := r.request(c, "GET / HTTP/1.1", mustAnswer); err != nil {
		t.Fatalf("a fail-closed guest marked congested by an earlier run: %q %v (drops %v)", resp, err, r.counters().Drops)
	}
	if d := r.counters().Drops["punt_shed"]; d != 0 {
		t.Fatalf("%d packets shed", d)
	}
}

// TestHostPressureDoesNotLeaveAGuestShed fills the host's bound with guest
// B's held packets, makes guest A's packet the one that reaches it (A is
// marked congested), lets A's packets go while B's still hold the host over
// half its bound, then B's: once the host is calm, A must be inspected again,
// not shed for good.
func TestHostPressureDoesNotLeaveAGuestShed(t *testing.T) {
	r := newRigWith(t, rigOpts{failure: "closed", verdictTimeout: time.Minute, totalBytes: 64 << 10})
	r.slow.mu.Lock()
	r.slow.park = []string{"PARK-A", "PARK-B"}
	r.slow.mu.Unlock()
	web2, err := r.lab.Endpoint(r.site, "web2", "vnic-web2", 11, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &policy.Policy{DefaultAction: policy.Deny, Inspection: []string{"ips"}, InspectionFailure: "closed",
		Rules: []policy.Rule{{ID: 1, Action: policy.Allow, Direction: policy.Inbound, Protocol: "udp", DestinationPorts: []string{"7000"}}}}
	if err := r.site.Host.Do(func() error { return r.mgr.Activate("web2", "vnic-web2", p) }); err != nil {
		t.Fatal(err)
	}
	rxA, err := r.web.NS.ListenPacket("udp", "198.51.100.10:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer rxA.Close()
	rxB, err := web2.NS.ListenPacket("udp", "198.51.100.11:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer rxB.Close()
	tx, err := r.peer.NS.ListenPacket("udp", "198.51.100.20:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	a := &net.UDPAddr{IP: net.ParseIP("198.51.100.10"), Port: 7000}
	b := &net.UDPAddr{IP: net.ParseIP("198.51.100.11"), Port: 7000}
	send := func(to *net.UDPAddr, m string, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			d := make([]byte, 1400) // 1,452 bytes held each
			copy(d, fmt.Sprintf("%s %d", m, i))
			if _, err := tx.WriteTo(d, to); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(a, "warm", 1)
	send(b, "warm", 1)
	if !receive(rxA, "warm") || !receive(rxB, "warm") {
		t.Fatal("guests do not receive")
	}
	// 30 of B's: 43,560 bytes, over half the 64 KiB bound.
	send(b, "PARK-B", 30)
	wait.For(t, "B's packets held at the slow path", func() bool {
		return r.engine.Stats().Pending == 30 && r.slow.parkedFor("PARK-B") == 30
	})
	// A's 16th reaches the bound: A is shed from then on.
	send(a, "PARK-A", 20)
	// Every one of A's 20 is accounted for before any is let go: held (and
	// at the slow path, whose verdict is let go next), shed by the
	// datapath, or failed by the engine at the bound.
	wait.ForErr(t, "A congested, its packets at the slow path or shed", func() error {
		st, shed, parked := r.engine.Stats(), r.counters().Drops["punt_shed"], r.slow.parkedFor("PARK-A")
		if heldA := st.Pending - 30; st.Congestions == 0 || heldA != parked || heldA+int(shed+st.FailClosed["queue full"]) != 20 {
			return fmt.Errorf("engine %+v, punt_shed %d, parked %d", st, shed, parked)
		}
		return nil
	})
	if err := r.slow.unpark("PARK-A"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "A's packets released", func() bool { return r.engine.Stats().Pending == 30 })
	if err := r.slow.unpark("PARK-B"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "B's packets released", func() bool { return r.engine.Stats().Pending == 0 })
	shed := r.counters().Drops["punt_shed"]
	send(a, "after", 1)
	if !receive(rxA, "after") {
		t.Fatalf("guest A is still shed once nothing is held: punt_shed %d -> %d", shed, r.counters().Drops["punt_shed"])
	}
}

// TestLateUnboundLeavesTheNextBinding tells the engine a binding was lost
// while a live one is in use (an earlier binding's late word): inspection
// must go on.
func TestLateUnboundLeavesTheNextBinding(t *testing.T) {
	r := newRig(t, 0, "open")
	r.httpServer()
	c := r.dialWeb()
	r.engine.Unbound(errors.New("an earlier binding ended"))
	if !r.engine.Stats().Bound {
		t.Fatal("a late Unbound dropped the live binding")
	}
	punted := r.counters().Get("punted")
	if _, err := r.request(c, "GET / HTTP/1.1", mustAnswer); err != nil {
		t.Fatal(err)
	}
	if r.counters().Get("punted") <= punted {
		t.Fatal("inspection stopped")
	}
}

// TestStuckPuntDeviceDoesNotFreezeTheEngine makes every write into the punt
// device fail with ENOBUFS (a qdisc that refuses them): the engine must give
// up on those packets, count them, and stay responsive, and recover when the
// device drains again.
func TestStuckPuntDeviceDoesNotFreezeTheEngine(t *testing.T) {
	r := newRig(t, 0, "open")
	r.httpServer()
	c := r.dialWeb()
	if _, err := r.request(c, "GET /before HTTP/1.1", mustAnswer); err != nil {
		t.Fatal(err)
	}
	nl := r.site.Host.Netlink()
	in, err := nl.LinkByName(datapath.PuntIn)
	if err != nil {
		t.Fatal(err)
	}
	// A token bucket whose burst is 60 bytes at 1,000 B/s: it refuses
	// every larger frame (NET_XMIT_DROP, which the socket reports as
	// ENOBUFS). A buffer is in 64 ns ticks.
	q := &netlink.Tbf{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: in.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT},
		Rate: 1000, Buffer: 60_000_000 / 64, Limit: 10000}
	if err := nl.QdiscAdd(q); err != nil {
		t.Fatal(err)
	}
	stuck := true
	unstick := func() {
		if stuck {
			stuck = false
			if err := nl.QdiscDel(q); err != nil {
				t.Errorf("unstick the punt device: %v", err)
			}
		}
	}
	t.Cleanup(unstick) // before the rig's cleanups: an engine stuck in a write must be let out
	if _, err := fmt.Fprintf(c, "GET /stuck HTTP/1.1\n"); err != nil {
		t.Fatal(err)
	}
	// Stats takes the engine's lock: it answers only if no write into the
	// stuck device holds it.
	stats := func() punt.Stats {
		t.Helper()
		got := make(chan punt.Stats, 1)
		go func() { got <- r.engine.Stats() }()
		return received(t, "the engine answers while the punt device is stuck", got)
	}
	var first uint64
	wait.For(t, "a write error counted", func() bool { first = stats().WriteErrors; return first > 0 })
	// TCP sends the request again, the slow path allows it again, and the
	// write fails again: verdicts still come over the binding.
	wait.ForErr(t, "verdicts arrive while the punt device is stuck", func() error {
		if st := stats(); !st.Bound || st.WriteErrors <= first {
			return fmt.Errorf("engine %+v", st)
		}
		return nil
	})
	unstick()
	c2 := r.dialWeb()
	if _, err := r.request(c2, "GET /after HTTP/1.1", mustAnswer); err != nil {
		t.Fatalf("after the device drained: %v", err)
	}
}

// TestUnknownSlotFailsClosed holds packets of a slot the engine cannot name
// (as in the moment before a guest's slot is published): whatever the guest's
// policy, nothing says they may pass.
func TestUnknownSlotFailsClosed(t *testing.T) {
	r := newRig(t, 0, "open")
	r.httpServer()
	c := r.dialWeb()
	if _, err := r.request(c, "GET /before HTTP/1.1", mustAnswer); err != nil {
		t.Fatal(err)
	}
	r.hideSlots.Store(true)
	if resp, err := r.request(c, "GET /nobody HTTP/1.1", noAnswer); err == nil {
		t.Fatalf("a packet of an unknown slot was delivered: %q", resp)
	}
	if st := r.engine.Stats(); st.FailClosed["unknown guest"] == 0 {
		t.Fatalf("fail_closed: %v", st.FailClosed)
	}
}
