package datapath

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/palisade/palisade/fastpath/policy"
	"github.com/palisade/palisade/fastpath/policy/policytest"
)

// frameFor builds a frame for a reference packet: a SYN for TCP, so that
// every packet starts a flow and is classified.
func frameFor(t *testing.T, pkt policy.Packet) []byte {
	src, dst := pkt.Src.String(), pkt.Dst.String()
	switch pkt.Proto {
	case policy.ProtoTCP:
		return tcpFrame(t, src, dst, pkt.Sport, pkt.Dport, SYN)
	case policy.ProtoUDP:
		return udpFrame(t, src, dst, pkt.Sport, pkt.Dport)
	case policy.ProtoICMP, policy.ProtoICMPv6:
		return icmpFrame(t, src, dst, pkt.ICMPType, 0, 9, make([]byte, 28))
	}
	return otherFrame(t, src, dst, uint8(pkt.Proto))
}

// TestKernelAgreesWithReference runs random packets against random policies
// in the kernel and checks every verdict, and the rule that decided each
// admitted flow, against the reference classifier.
func TestKernelAgreesWithReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	f := newFixture(t, &policy.Policy{})
	checked, admitted := 0, 0
	for round := 0; round < 40; round++ {
		p := policytest.RandomPolicy(rng, 1+rng.IntN(300))
		f.setPolicy(p)
		for i := 0; i < 150; i++ {
			pkt := policytest.RandomPacket(rng)
			f.clearTables()
			var got Verdict
			if pkt.Dir == policy.Outbound {
				got = f.out(frameFor(t, pkt))
			} else {
				got = f.in(frameFor(t, pkt))
			}
			want := p.Evaluate(pkt)
			wantV := Next
			if want.Action == policy.Deny {
				wantV = Drop
			}
			// An ICMP error about no tracked flow is judged by the rules
			// too, so every packet here is a rules decision.
			if got != wantV {
				t.Fatalf("round %d: %+v\n kernel %s, reference %+v\npolicy: %+v", round, pkt, got, want, p.Ordered())
			}
			if want.Action == policy.Allow || want.Action == policy.ForceAllow {
				tracked := pkt.Proto != policy.ProtoICMP && pkt.Proto != policy.ProtoICMPv6 ||
					pkt.Proto == policy.ProtoICMP && pkt.ICMPType == 8 || pkt.Proto == policy.ProtoICMPv6 && pkt.ICMPType == 128
				conns := f.conns()
				if tracked && (len(conns) != 1 || conns[0].RuleID != want.RuleID) {
					t.Fatalf("round %d: %+v admitted by rule %d, kernel recorded %+v", round, pkt, want.RuleID, conns)
				}
				if tracked {
					admitted++
				}
			}
			if want.Action == policy.Bypass && len(f.conns()) != 0 {
				t.Fatalf("bypass created state: %+v", f.conns())
			}
			checked++
		}
	}
	t.Logf("%d packets: every kernel verdict matched the reference (%d admitted flows' rules checked)", checked, admitted)
}

func allowAllOut() *policy.Policy {
	return &policy.Policy{DefaultAction: policy.Deny, Rules: []policy.Rule{
		{ID: 10, Action: policy.Allow, Direction: policy.Outbound},
	}}
}

func TestTCPStateMachine(t *testing.T) {
	f := newFixture(t, allowAllOut())
	steps := []struct {
		name  string
		out   bool
		flags tcpFlags
		want  Verdict
		state string
	}{
		{"SYN", true, SYN, Next, "SYN_SENT"},
		{"SYN retransmit", true, SYN, Next, "SYN_SENT"},
		{"SYN-ACK", false, SYNACK, Next, "SYN_RECV"},
		{"ACK", true, ACK, Next, "ESTABLISHED"},
		// The ACK was lost past us: the responder retransmits its
		// SYN-ACK, which must reach the initiator to be acknowledged.
		{"SYN-ACK retransmit", false, SYNACK, Next, "ESTABLISHED"},
		{"SYN-ACK from the initiator", true, SYNACK, Drop, "ESTABLISHED"},
		{"data in", false, PSHACK, Next, "ESTABLISHED"},
		{"SYN mid-connection", false, SYN, Drop, "ESTABLISHED"},
		{"guest FIN", true, FINACK, Next, "FIN_WAIT"},
		{"SYN-ACK retransmit after the initiator's FIN", false, SYNACK, Next, "FIN_WAIT"},
		{"remote ACKs the FIN", false, ACK, Next, "CLOSE_WAIT"},
		{"remote still sends", false, PSHACK, Next, "CLOSE_WAIT"},
		{"remote FIN", false, FINACK, Next, "TIME_WAIT"},
		{"SYN-ACK after both FINs", false, SYNACK, Drop, "TIME_WAIT"},
		{"last ACK", true, ACK, Next, "TIME_WAIT"},
		{"data after close", false, PSHACK, Drop, "TIME_WAIT"},
		{"new SYN on TIME_WAIT", true, SYN, Next, "SYN_SENT"},
		{"RST", false, RST, Next, "CLOSED"},
		{"data after RST", true, PSHACK, Drop, "CLOSED"},
		{"new SYN on CLOSED", true, SYN, Next, "SYN_SENT"},
	}
	for _, s := range steps {
		var v Verdict
		if s.out {
			v = f.out(tcpFrame(t, guest4, remote4, 40000, 80, s.flags))
		} else {
			v = f.in(tcpFrame(t, remote4, guest4, 80, 40000, s.flags))
		}
		c := f.conn(6, 40000)
		if v != s.want || c == nil || c.State != s.state {
			t.Fatalf("%s: verdict %s (want %s), conn %+v (want %s)", s.name, v, s.want, c, s.state)
		}
	}
	cnt := f.counters()
	if cnt.Get("port_reuse") != 2 || cnt.Drops["invalid_state"] != 5 || cnt.Get("new_connections") != 3 {
		t.Fatalf("counters: %+v", cnt)
	}
}

func TestInvalidFlagsAndPolicies(t *testing.T) {
	for _, mode := range []policy.InvalidPolicy{policy.InvalidDrop, policy.InvalidPass, policy.InvalidLog} {
		t.Run(string(mode), func(t *testing.T) {
			p := allowAllOut()
			p.InvalidPackets = mode
			p.Rules = append(p.Rules, policy.Rule{ID: 20, Action: policy.Deny, Protocol: "tcp", DestinationPorts: []string{"23"}})
			f := newFixture(t, p)
			ev, err := f.d.Events()
			if err != nil {
				t.Fatal(err)
			}
			defer ev.Close()
			nullScan := tcpFrame(t, guest4, remote4, 40001, 80, tcpFlags{})
			xmas := tcpFrame(t, guest4, remote4, 40001, 80, tcpFlags{fin: true, psh: true, urg: true})
			synFin := tcpFrame(t, guest4, remote4, 40001, 80, tcpFlags{syn: true, fin: true})
			strayAck := tcpFrame(t, guest4, remote4, 40002, 80, ACK) // no connection
			strayAckDenied := tcpFrame(t, guest4, remote4, 40003, 23, ACK)
			want := Drop
			if mode != policy.InvalidDrop {
				want = Next // judged by the rules, which allow port 80 outbound
			}
			for name, fr := range map[string][]byte{"null": nullScan, "xmas": xmas, "syn+fin": synFin, "stray ack": strayAck} {
				if v := f.out(fr); v != want {
					t.Errorf("%s: %s, want %s", name, v, want)
				}
			}
			// Invalid packets never bypass the rules.
			if v := f.out(strayAckDenied); v != Drop {
				t.Errorf("stray ACK to a denied port: %s", v)
			}
			if len(f.conns()) != 0 {
				t.Errorf("invalid packets created state: %+v", f.conns())
			}
			if got := f.counters().Get("invalid"); got != 5 {
				t.Errorf("invalid counter %d, want 5", got)
			}
			events := 0
			for _, e := range reported(t, ev) {
				if e.Kind == EventInvalid {
					events++
				}
			}
			if wantEv := map[policy.InvalidPolicy]int{policy.InvalidDrop: 5, policy.InvalidPass: 0, policy.InvalidLog: 5}[mode]; events != wantEv {
				t.Errorf("%d invalid events, want %d", events, wantEv)
			}
		})
	}
}

// truncatedTCP is an IPv4 header announcing TCP, and no TCP header after it.
// (The kernel's test runner refuses frames too short for an IP header.)
func truncatedTCP(t *testing.T, src, dst string) []byte {
	fr := tcpFrame(t, src, dst, 1, 2, SYN)[:34]
	fr[16], fr[17] = 0, 20 // total length: the header alone
	return fr
}

// TestPassedInvalidPacketsAreStillJudged: with invalid_packets pass or log,
// an out-of-state segment of a tracked connection is judged by the rules as
// a packet of its own, and a malformed one (no ports to judge) gets the
// policy's default action.
func TestPassedInvalidPacketsAreStillJudged(t *testing.T) {
	for _, mode := range []policy.InvalidPolicy{policy.InvalidPass, policy.InvalidLog} {
		t.Run(string(mode), func(t *testing.T) {
			p := allowAllOut()
			p.InvalidPackets = mode
			f := newFixture(t, p)
			if v := f.in(truncatedTCP(t, remote4, guest4)); v != Drop {
				t.Errorf("malformed packet under default deny: %s", v)
			}
			if c := f.counters(); c.Get("invalid") != 1 || c.Drops["default_deny"] != 1 {
				t.Errorf("malformed under default deny: counters %+v", c)
			}
			// A connection closed by both sides: what comes after is
			// out of state, and judged by the rules (inbound denied,
			// outbound allowed).
			for _, s := range []struct {
				out   bool
				flags tcpFlags
			}{{true, SYN}, {false, SYNACK}, {true, ACK}, {true, FINACK}, {false, FINACK}} {
				if s.out {
					f.out(tcpFrame(t, guest4, remote4, 40000, 80, s.flags))
				} else {
					f.in(tcpFrame(t, remote4, guest4, 80, 40000, s.flags))
				}
			}
			if c := f.conn(6, 40000); c == nil || c.State != "TIME_WAIT" {
				t.Fatalf("closed connection: %+v", c)
			}
			if v := f.in(tcpFrame(t, remote4, guest4, 80, 40000, PSHACK)); v != Drop {
				t.Errorf("out-of-state segment the rules deny: %s", v)
			}
			if v := f.out(tcpFrame(t, guest4, remote4, 40000, 80, PSHACK)); v != Next {
				t.Errorf("out-of-state segment the rules allow: %s", v)
			}
			if got := f.counters().Get("invalid"); got != 3 {
				t.Errorf("invalid counter %d, want 3", got)
			}

			allow := &policy.Policy{DefaultAction: policy.Allow, InvalidPackets: mode}
			f.setPolicy(allow)
			if v := f.in(truncatedTCP(t, remote4, guest4)); v != Next {
				t.Errorf("malformed packet under default allow: %s", v)
			}
		})
	}
}

func TestPickupWindowMakesActivationHitless(t *testing.T) {
	web := func() *policy.Policy {
		return &policy.Policy{DefaultAction: policy.Deny, Rules: []policy.Rule{
			{ID: 10, Action: policy.Allow, Direction: policy.Outbound, Protocol: "tcp", DestinationPorts: []string{"80"}},
		}}
	}
	f := newFixture(t, web())
	// Outside the window a mid-stream segment is invalid...
	if v := f.out(tcpFrame(t, guest4, remote4, 40010, 80, PSHACK)); v != Drop {
		t.Fatalf("mid-stream without pickup: %s", v)
	}
	// ...inside it, the flow is adopted as established, by the rules.
	f.pickup = true
	f.setPolicy(web())
	// The first segment seen may be the reply: adopted the right way round.
	if v := f.in(tcpFrame(t, remote4, guest4, 80, 40012, PSHACK)); v != Next {
		t.Fatalf("mid-stream reply in the pickup window: %s", v)
	}
	if c := f.conn(6, 40012); c == nil || !c.FromGuest {
		t.Fatalf("reply-first pickup: %+v", c)
	}
	if v := f.out(tcpFrame(t, guest4, remote4, 40011, 80, PSHACK)); v != Next {
		t.Fatalf("mid-stream in the pickup window: %s", v)
	}
	c := f.conn(6, 40011)
	if c == nil || c.State != "ESTABLISHED" || !c.PickedUp {
		t.Fatalf("picked-up conn: %+v", c)
	}
	if v := f.in(tcpFrame(t, remote4, guest4, 80, 40011, PSHACK)); v != Next {
		t.Fatalf("reply to a picked-up flow: %s", v)
	}
	// A mid-stream flow the rules deny either way round is not adopted.
	if v := f.in(tcpFrame(t, remote4, guest4, 5555, 22, PSHACK)); v != Drop {
		t.Fatalf("denied mid-stream flow: %s", v)
	}
}

func TestForceAllowBypassAndTap(t *testing.T) {
	p := &policy.Policy{DefaultAction: policy.Deny, Rules: []policy.Rule{
		{ID: 1, Action: policy.ForceAllow, Protocol: "tcp", DestinationPorts: []string{"3389"}},
		{ID: 2, Action: policy.Bypass, Protocol: "udp", DestinationPorts: []string{"3343"}}, // cluster heartbeat
		{ID: 3, Action: policy.Allow, Direction: policy.Outbound},
	}}
	f := newFixture(t, p)
	f.out(tcpFrame(t, guest4, remote4, 40020, 3389, SYN))
	// Out-of-state in a force-allowed flow passes.
	if v := f.out(tcpFrame(t, guest4, remote4, 40020, 3389, PSHACK)); v != Next {
		t.Fatalf("force-allow flow, out-of-state segment: %s", v)
	}
	if c := f.conn(6, 40020); c == nil || !c.ForceAllow {
		t.Fatalf("force-allow conn: %+v", c)
	}
	for i := 0; i < 3; i++ {
		if v := f.in(udpFrame(t, remote4, guest4, 3343, 3343)); v != Next {
			t.Fatalf("bypass: %s", v)
		}
	}
	if c := f.conn(17, 3343); c != nil {
		t.Fatalf("bypass created state: %+v", c)
	}
	if got := f.counters().Get("bypassed"); got != 3 {
		t.Fatalf("bypassed %d", got)
	}

	// Tap mode: the same deny, evaluated and reported, never dropped.
	tap := &policy.Policy{Mode: policy.Tap, DefaultAction: policy.Deny}
	f.setPolicy(tap)
	ev, err := f.d.Events()
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	if v := f.in(tcpFrame(t, remote4, guest4, 5000, 22, SYN)); v != Next {
		t.Fatalf("tap mode dropped: %s", v)
	}
	events := reported(t, ev)
	if len(events) == 0 {
		t.Fatal("tap mode reported no event")
	}
	if e := events[0]; e.Kind != EventDeny || !e.Tap || e.Dport != 22 || e.Reason != "default_deny" {
		t.Fatalf("tap event: %+v", e)
	}
	if c := f.counters(); c.Get("tap_would_drop") != 1 || c.Get("dropped") != 0 {
		t.Fatalf("tap counters: %+v", c)
	}
}

func TestUDPAndICMPPseudoConnections(t *testing.T) {
	f := newFixture(t, allowAllOut())
	// UDP: a reply to the guest's datagram passes; an unsolicited one not.
	if v := f.out(udpFrame(t, guest4, remote4, 5353, 53)); v != Next {
		t.Fatal(v)
	}
	if v := f.in(udpFrame(t, remote4, guest4, 53, 5353)); v != Next {
		t.Fatalf("UDP reply: %s", v)
	}
	if c := f.conn(17, 5353); c == nil || c.State != "REPLIED" || c.Packets != [2]uint64{1, 1} {
		t.Fatalf("UDP conn: %+v", c)
	}
	if v := f.in(udpFrame(t, remote4, guest4, 53, 5354)); v != Drop {
		t.Fatalf("unsolicited UDP: %s", v)
	}
	// ICMP echo, v4 and v6.
	for _, c := range []struct {
		g, r      string
		req, resp uint8
	}{{guest4, remote4, 8, 0}, {guest6, remote6, 128, 129}} {
		if v := f.out(icmpFrame(t, c.g, c.r, c.req, 0, 77, nil)); v != Next {
			t.Fatal(v)
		}
		if v := f.in(icmpFrame(t, c.r, c.g, c.resp, 0, 77, nil)); v != Next {
			t.Fatalf("echo reply %s: %s", c.r, v)
		}
		if v := f.in(icmpFrame(t, c.r, c.g, c.resp, 0, 78, nil)); v != Drop {
			t.Fatalf("echo reply without request: %s", v)
		}
	}
	// An ICMP error quoting the guest's UDP flow is related and passes;
	// one quoting nothing we track is judged by the rules (denied).
	quoted := udpFrame(t, guest4, remote4, 5353, 53)[14:42] // IP header + 8 bytes
	if v := f.in(icmpFrame(t, "192.0.2.1", guest4, 3, 3, 0, quoted)); v != Next {
		t.Fatalf("related ICMP error: %s", v)
	}
	other := udpFrame(t, guest4, remote4, 6000, 53)[14:42]
	if v := f.in(icmpFrame(t, "192.0.2.1", guest4, 3, 3, 0, other)); v != Drop {
		t.Fatalf("unrelated ICMP error: %s", v)
	}
	if got := f.counters().Get("related_icmp"); got != 1 {
		t.Fatalf("related counter %d", got)
	}
}

func TestPolicyUpdateReclassifiesFlows(t *testing.T) {
	f := newFixture(t, &policy.Policy{DefaultAction: policy.Deny, Rules: []policy.Rule{
		{ID: 1, Action: policy.Allow, Direction: policy.Outbound, Protocol: "tcp", DestinationPorts: []string{"80", "443"}},
	}})
	for _, port := range []uint16{80, 443} {
		f.out(tcpFrame(t, guest4, remote4, 40000+port, port, SYN))
		f.in(tcpFrame(t, remote4, guest4, port, 40000+port, SYNACK))
		f.out(tcpFrame(t, guest4, remote4, 40000+port, port, ACK))
	}
	// New policy: 443 still allowed (by another rule), 80 now denied.
	f.setPolicy(&policy.Policy{DefaultAction: policy.Deny, Rules: []policy.Rule{
		{ID: 2, Action: policy.Allow, Direction: policy.Outbound, Protocol: "tcp", DestinationPorts: []string{"443"}},
	}})
	if v := f.in(tcpFrame(t, remote4, guest4, 443, 40443, PSHACK)); v != Next {
		t.Fatalf("still-allowed flow after update: %s", v)
	}
	if c := f.conn(6, 40443); c == nil || c.RuleID != 2 || c.PolicyID != f.ip.ID || c.State != "ESTABLISHED" {
		t.Fatalf("re-admitted conn: %+v", c)
	}
	if v := f.in(tcpFrame(t, remote4, guest4, 80, 40080, PSHACK)); v != Drop {
		t.Fatalf("newly denied flow: %s", v)
	}
	if c := f.conn(6, 40080); c != nil {
		t.Fatalf("denied flow kept state: %+v", c)
	}
	if got := f.counters().Get("reclassified"); got != 2 {
		t.Fatalf("reclassified %d", got)
	}
}

func TestFragments(t *testing.T) {
	f := newFixture(t, &policy.Policy{DefaultAction: policy.Deny, Rules: []policy.Rule{
		{ID: 1, Action: policy.Allow, Protocol: "udp", DestinationPorts: []string{"4789"}},
	}})
	frag := func(dport uint16, id uint16, offset uint16, more bool) []byte {
		fr := udpFrame(t, remote4, guest4, 999, dport)
		ip := fr[14:]
		ip[4], ip[5] = byte(id>>8), byte(id)
		fo := offset / 8
		if more {
			fo |= 0x2000
		}
		ip[6], ip[7] = byte(fo>>8), byte(fo)
		ip[10], ip[11] = 0, 0 // checksums are not the datapath's business
		return fr
	}
	if v := f.in(frag(4789, 100, 0, true)); v != Next {
		t.Fatalf("allowed first fragment: %s", v)
	}
	if v := f.in(frag(0, 100, 1480, false)); v != Next {
		t.Fatalf("later fragment of an allowed first: %s", v)
	}
	if v := f.in(frag(9999, 101, 0, true)); v != Drop {
		t.Fatalf("denied first fragment: %s", v)
	}
	if v := f.in(frag(0, 101, 1480, false)); v != Drop {
		t.Fatalf("later fragment of a denied first: %s", v)
	}
	if v := f.in(frag(0, 102, 1480, false)); v != Drop {
		t.Fatalf("orphan fragment: %s", v)
	}
	p := &policy.Policy{DefaultAction: policy.Allow, Fragments: policy.FragmentsDrop}
	f.setPolicy(p)
	if v := f.in(frag(4789, 103, 0, true)); v != Drop {
		t.Fatalf("fragments: drop: %s", v)
	}
	// The denied first fragment counts as a rule drop, not a fragment drop.
	if got := f.counters().Drops["fragment"]; got != 3 {
		t.Fatalf("fragment drops %d", got)
	}
}

func TestNonIPAndARP(t *testing.T) {
	arp := make([]byte, 42)
	copy(arp, macRemote)
	copy(arp[6:], macGuest)
	arp[12], arp[13] = 0x08, 0x06
	lldp := make([]byte, 60)
	lldp[12], lldp[13] = 0x88, 0xcc
	f := newFixture(t, &policy.Policy{DefaultAction: policy.Deny})
	if v := f.in(arp); v != Next {
		t.Fatalf("ARP with pass_arp default: %s", v)
	}
	if v := f.in(lldp); v != Drop {
		t.Fatalf("non-IP with pass_non_ip default: %s", v)
	}
	no, yes := false, true
	f.setPolicy(&policy.Policy{DefaultAction: policy.Deny, PassARP: &no, PassNonIP: yes})
	if v := f.in(arp); v != Drop {
		t.Fatalf("ARP with pass_arp false: %s", v)
	}
	if v := f.in(lldp); v != Next {
		t.Fatalf("non-IP with pass_non_ip: %s", v)
	}
	// Neighbour discovery passes by default even under default deny.
	ns := icmpFrame(t, remote6, guest6, 135, 0, 0, make([]byte, 20))
	if v := f.in(ns); v != Next {
		t.Fatalf("neighbour solicitation: %s", v)
	}
	// An IPv4 header announcing TCP, and no TCP header after it. (The
	// kernel's test runner refuses frames too short for an IP header.)
	truncated := tcpFrame(t, remote4, guest4, 1, 2, SYN)[:34]
	truncated[16], truncated[17] = 0, 20 // total length: the header alone
	if v := f.in(truncated); v != Drop {
		t.Fatalf("IPv4 without its TCP header: %s", v)
	}
	if got := f.counters().Drops["malformed"]; got != 1 {
		t.Fatalf("malformed drops %d", got)
	}
}

func TestIPv6ExtensionHeadersAreSkipped(t *testing.T) {
	f := newFixture(t, &policy.Policy{DefaultAction: policy.Deny, Rules: []policy.Rule{
		{ID: 1, Action: policy.Allow, Direction: policy.Inbound, Protocol: "tcp", DestinationPorts: []string{"443"}},
	}})
	build := func(dport uint16) []byte {
		fr := tcpFrame(t, remote6, guest6, 5000, dport, SYN)
		ip, tcp := fr[14:54], fr[54:]
		// Insert hop-by-hop (8 bytes) and destination options (8 bytes).
		hbh := []byte{60, 0, 1, 4, 0, 0, 0, 0}
		dst := []byte{6, 0, 1, 4, 0, 0, 0, 0}
		ip[6] = 0 // next header: hop-by-hop
		plen := int(ip[4])<<8 | int(ip[5]) + 16
		ip[4], ip[5] = byte(plen>>8), byte(plen)
		out := append(append(append(append([]byte{}, fr[:14]...), ip...), hbh...), dst...)
		return append(out, tcp...)
	}
	if v := f.in(build(443)); v != Next {
		t.Fatalf("allowed port behind extension headers: %s", v)
	}
	if v := f.in(build(22)); v != Drop {
		t.Fatalf("denied port behind extension headers: %s", v)
	}
	if c := f.conn(6, 443); c == nil || c.RemoteAddr != netip.MustParseAddr(remote6) {
		t.Fatalf("v6 conn: %+v", c)
	}
	// Six extension headers are followed; a seventh is malformed.
	chain := func(n int, sport uint16) []byte {
		fr := tcpFrame(t, remote6, guest6, sport, 443, SYN)
		ip, tcp := append([]byte{}, fr[14:54]...), fr[54:]
		ip[6] = 0 // hop-by-hop first, then destination options
		var ext []byte
		for i := 0; i < n; i++ {
			next := byte(60)
			if i == n-1 {
				next = 6
			}
			ext = append(ext, next, 0, 1, 4, 0, 0, 0, 0)
		}
		plen := int(ip[4])<<8 | int(ip[5]) + len(ext)
		ip[4], ip[5] = byte(plen>>8), byte(plen)
		return append(append(append(append([]byte{}, fr[:14]...), ip...), ext...), tcp...)
	}
	if v := f.in(chain(6, 5006)); v != Next {
		t.Fatalf("TCP behind six extension headers: %s", v)
	}
	if c := f.conn(6, 443); c == nil {
		t.Fatal("no connection for TCP behind six extension headers")
	}
	if v := f.in(chain(7, 5007)); v != Drop {
		t.Fatalf("TCP behind seven extension headers: %s", v)
	}
	if got := f.counters().Drops["malformed"]; got != 1 {
		t.Fatalf("malformed drops %d, want 1 (the seven-header packet)", got)
	}
}

func TestTableFullEvictsOnlyThatGuest(t *testing.T) {
	f := newFixture(t, &policy.Policy{DefaultAction: policy.Allow})
	// A second guest on the other vNIC with its own tables and a small cap.
	small := &policy.Policy{DefaultAction: policy.Allow, MaxUDP: 100}
	if err := small.Normalize(); err != nil {
		t.Fatal(err)
	}
	c, _ := policy.Compile(small)
	ip, err := f.d.InstallPolicy(99, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.d.CreateTables(4, 100, 100); err != nil {
		t.Fatal(err)
	}
	if err := f.d.SetVNIC(f.vnics[1], GuestConfig{Slot: 4, Policy: ip, Rules: small}); err != nil {
		t.Fatal(err)
	}
	// Guest 3 (first vNIC) holds 50 flows.
	for i := 0; i < 50; i++ {
		f.out(udpFrame(t, guest4, remote4, uint16(20000+i), 53))
	}
	// Guest 4 floods far past its table.
	f.ifindex = f.vnics[1]
	for i := 0; i < 2000; i++ {
		f.out(udpFrame(t, "198.51.100.44", remote4, uint16(30000+i%30000), uint16(1+i/30000)))
	}
	f.ifindex = f.vnics[0]
	n3 := 0
	if err := f.d.Conns(3, func(c Conn) bool { n3++; return true }); err != nil {
		t.Fatal(err)
	}
	n4 := 0
	if err := f.d.Conns(4, func(c Conn) bool { n4++; return true }); err != nil {
		t.Fatal(err)
	}
	if n3 != 50 {
		t.Fatalf("guest 3 holds %d of its 50 flows after guest 4's flood", n3)
	}
	if n4 < 100 || n4 > int(TableCapacity(100)) {
		t.Fatalf("guest 4 holds %d entries: want its 100 at least, capacity %d at most", n4, TableCapacity(100))
	}
	cnt, err := f.d.GuestCounters(4)
	if err != nil {
		t.Fatal(err)
	}
	if cnt.Get("table_full") < 1800 {
		t.Fatalf("table_full counted %d times for 2000 inserts into a 100-flow table", cnt.Get("table_full"))
	}
	t.Logf("guest 4: %d entries after 2000 flows (cap 100 + %d slack); guest 3 kept all 50", n4, lruSlack())
}
