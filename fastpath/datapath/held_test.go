package datapath

import (
	"testing"

	"github.com/palisade/palisade/fastpath/policy"
)

func (f *fixture) congested(on bool) {
	f.t.Helper()
	if err := f.d.SetCongested(f.slot, on); err != nil {
		f.t.Fatal(err)
	}
}

// redirected is what the datapath returns for a held packet.
const redirected = Verdict(dpTcxVerdictTCX_REDIRECT)

// TestHeldCountOnlyCountsHeldPackets: a flow's first packet counts as held
// only if it really leaves for the slow path. One shed under congestion (or
// that fails to leave) is never waited for, so an offload decision applies;
// one that does leave is, until it comes back or fastpathd drops it.
func TestHeldCountOnlyCountsHeldPackets(t *testing.T) {
	f := newFixture(t, allowAllOut())
	f.inspect = true
	f.setPolicy(allowAllOut())
	f.slowPathReady()

	offloads := func(proto uint8, port uint16, dropped uint32, next func() Verdict) {
		t.Helper()
		c := f.conn(proto, port)
		if c == nil {
			t.Fatalf("no connection on port %d", port)
		}
		if err := f.d.SetFlowDecision(f.slot, c.FlowID, DecideOffload, dropped); err != nil {
			t.Fatal(err)
		}
		if v := next(); v != Next {
			t.Fatalf("port %d: packet after the offload decision: %s", port, v)
		}
		if c := f.conn(proto, port); c == nil || c.Verdict != "offload" {
			t.Fatalf("port %d: offload decision not applied: %+v", port, c)
		}
	}

	// Congested: the first packet of a new flow is shed (fail-open: it
	// passes uninspected) and never reaches fastpathd.
	f.congested(true)
	udp := func() Verdict { return f.out(udpFrame(t, guest4, remote4, 5000, 53)) }
	if v := udp(); v != Next {
		t.Fatalf("shed first packet: %s", v)
	}
	if raw, ok := f.rawConn(17, 5000); !ok || raw.Punted != 0 {
		t.Fatalf("shed first packet counted as held: %+v", raw)
	}
	offloads(17, 5000, 0, udp)

	// The same for a new connection on a reused tuple (TCP, after a RST).
	tcp := func(out bool, fl tcpFlags) Verdict {
		if out {
			return f.out(tcpFrame(t, guest4, remote4, 40000, 80, fl))
		}
		return f.in(tcpFrame(t, remote4, guest4, 80, 40000, fl))
	}
	tcp(true, SYN)
	tcp(false, RST)
	if v := tcp(true, SYN); v != Next {
		t.Fatalf("shed SYN on a reused tuple: %s", v)
	}
	if raw, ok := f.rawConn(6, 40000); !ok || raw.Punted != 0 || raw.State != 1 {
		t.Fatalf("reused tuple's shed SYN counted as held: %+v", raw)
	}
	offloads(6, 40000, 0, func() Verdict { return tcp(false, SYNACK) })
	if got := f.counters().Get("punt_shed"); got != 4 {
		t.Fatalf("punt_shed %d, want 4", got)
	}

	// Not congested: the first packet is held, counted on its new entry,
	// and the offload waits for it (here: fastpathd dropped it).
	f.congested(false)
	held := func() Verdict { return f.out(udpFrame(t, guest4, remote4, 5001, 53)) }
	if v := held(); v != redirected {
		t.Fatalf("first packet of an inspected flow: %s, want held", v)
	}
	if raw, ok := f.rawConn(17, 5001); !ok || raw.Punted != 1 {
		t.Fatalf("held first packet not counted: %+v", raw)
	}
	c := f.conn(17, 5001)
	if err := f.d.SetFlowDecision(f.slot, c.FlowID, DecideOffload, 0); err != nil {
		t.Fatal(err)
	}
	if v := held(); v != redirected {
		t.Fatalf("offload applied while a packet is still held: %s", v)
	}
	offloads(17, 5001, 2, held)
}

// TestFragmentsOfHeldOrDroppedFirstFragments: later fragments follow what
// became of their first fragment after inspection and fail policies. A held
// first fragment's later fragments cannot be inspected, so the guest's
// inspection-failure policy decides them.
func TestFragmentsOfHeldOrDroppedFirstFragments(t *testing.T) {
	pol := func(failure string) *policy.Policy {
		return &policy.Policy{DefaultAction: policy.Deny, InspectionFailure: failure, Rules: []policy.Rule{
			{ID: 1, Action: policy.Allow, Protocol: "udp", DestinationPorts: []string{"4789"}},
		}}
	}
	f := newFixture(t, pol("closed"))
	f.inspect = true
	f.setPolicy(pol("closed"))
	f.slowPathReady()
	frag := func(sport, id uint16, first bool) Verdict {
		return f.in(ipv4Fragment(t, sport, id, first))
	}

	if v := frag(1000, 200, true); v != redirected {
		t.Fatalf("first fragment of an inspected flow: %s, want held", v)
	}
	if v := frag(1000, 200, false); v != Drop {
		t.Fatalf("later fragment of a held first fragment, inspection_failure closed: %s", v)
	}

	f.congested(true)
	if v := frag(1001, 201, true); v != Drop {
		t.Fatalf("first fragment shed, inspection_failure closed: %s", v)
	}
	if v := frag(1001, 201, false); v != Drop {
		t.Fatalf("later fragment of a shed (dropped) first fragment: %s", v)
	}
	f.congested(false)

	f.setPolicy(pol("open"))
	if v := frag(1002, 202, true); v != redirected {
		t.Fatalf("first fragment of an inspected flow: %s, want held", v)
	}
	if v := frag(1002, 202, false); v != Next {
		t.Fatalf("later fragment of a held first fragment, inspection_failure open: %s", v)
	}
	if d := f.counters().Drops; d["fragment"] != 2 || d["punt_shed"] != 1 {
		t.Fatalf("drops %+v", d)
	}
}
