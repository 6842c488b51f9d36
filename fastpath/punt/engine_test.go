package punt

import (
	"bytes"
	"errors"
	"maps"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/hypervisor/lab/wait"
)

// These tests run the engine on the in-memory datapath and device
// (mem_test.go), without root; punt_test.go and robustness_test.go run it
// on the kernel's.

func TestAllowedPacketsLeaveInTheirFlowsOrder(t *testing.T) {
	r := newMemRig(t, Config{})
	r.bind()
	p1, p2, p3 := pkt{flow: 7, id: 1, payload: "one"}, pkt{flow: 7, id: 2, payload: "two"}, pkt{flow: 7, id: 3, payload: "three"}
	r.hold(p1, p2, p3)
	for _, want := range []pkt{p1, p2, p3} {
		if got := r.punted(); got.PacketID != want.id || got.FlowID != 7 || got.Direction != channel.ToGuest ||
			!bytes.Equal(got.Data, want.frame(t)) {
			t.Fatalf("punted %+v, want packet %d as the vNIC saw it", got, want.id)
		}
	}
	r.verdict(allow(p3)) // its turn has not come
	r.verdict(allow(p1))
	r.waitWritten(1)
	r.verdict(allow(p2))
	got := r.waitWritten(3)
	if want := []written{p1.back(t), p2.back(t), p3.back(t)}; !slices.EqualFunc(got, want, sameWritten) {
		t.Fatalf("written back out of order or changed:\n got %v\nwant %v", got, want)
	}
	st := r.waitStats("reinjected counted", func(st Stats) bool { return st.Reinjected == 3 })
	if st.Held != 3 || st.Sent != 3 || st.Verdicts["allow"] != 3 || st.Pending != 0 || st.PendingBytes != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func sameWritten(a, b written) bool { return a.mark == b.mark && bytes.Equal(a.b, b.b) }

func TestDropVerdictLeavesAtOnce(t *testing.T) {
	r := newMemRig(t, Config{})
	r.bind()
	f := flowOf(7, 2)
	p1, p2 := f[0], f[1]
	r.holdPunted(p1, p2)
	r.verdict(drop(p2)) // behind p1, still undecided: order does not matter for a drop
	st := r.e.Stats()
	if st.Pending != 1 || st.DroppedByVerdict != 1 || len(r.dev.written()) != 0 {
		t.Fatalf("after dropping the second: %+v, written %d", st, len(r.dev.written()))
	}
	r.verdict(allow(p1))
	if got := r.waitWritten(1); !sameWritten(got[0], p1.back(t)) {
		t.Fatalf("written %v", got)
	}
}

// TestOffloadHandsTheFlowOverInOrder: after the offload verdict, packets
// already held still wait for their own verdicts, later ones pass without
// asking (behind them), and the datapath learns how many of the flow's
// held packets will not come back.
func TestOffloadHandsTheFlowOverInOrder(t *testing.T) {
	r := newMemRig(t, Config{})
	r.bind()
	f := flowOf(9, 3)
	a1, a2, a3 := f[0], f[1], f[2]
	r.holdPunted(a1, a2)
	r.verdict(offload(a1))
	if d, ok := r.dp.decision(0, 9); !ok || d != (decision{datapath.DecideOffload, 0}) {
		t.Fatalf("datapath decision %+v %v, want offload with none dropped", d, ok)
	}
	r.hold(a3)
	r.waitStats("a3 held", func(st Stats) bool { return st.Held == 3 })
	if st := r.e.Stats(); st.Sent != 2 || st.Pending != 2 {
		t.Fatalf("an offloaded flow's packet went to the slow path, or passed a held one: %+v", st)
	}
	r.verdict(drop(a2))
	if got := r.waitWritten(2); !sameWritten(got[0], a1.back(t)) || !sameWritten(got[1], a3.back(t)) {
		t.Fatalf("written %v", got)
	}
	if d, _ := r.dp.decision(0, 9); d != (decision{datapath.DecideOffload, 1}) {
		t.Fatalf("datapath decision %+v, want offload with one dropped", d)
	}
	if st := r.e.Stats(); st.Offloads != 1 || st.DroppedByVerdict != 1 || st.FlowDecisionErrors != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestBlockDropsTheRestOfTheFlow(t *testing.T) {
	r := newMemRig(t, Config{})
	r.bind()
	f := flowOf(8, 3)
	b1, b2, b3 := f[0], f[1], f[2]
	r.holdPunted(b1, b2)
	r.verdict(block(b1))
	if d, ok := r.dp.decision(0, 8); !ok || d.verdict != datapath.DecideBlock {
		t.Fatalf("datapath decision %+v %v, want block", d, ok)
	}
	r.hold(b3) // on its way before the datapath blocked the flow
	st := r.waitStats("b3 dropped", func(st Stats) bool { return st.Held == 3 && st.Pending == 0 })
	if st.Blocks != 1 || st.DroppedByVerdict != 3 || st.Sent != 2 || len(r.dev.written()) != 0 {
		t.Fatalf("stats %+v, written %d", st, len(r.dev.written()))
	}
}

// TestFlowDecisionFailureIsCountedLoggedAndRetried makes the datapath refuse
// a flow's decision once, at each place the engine tells it one: the failure
// is counted and logged, the engine goes on deciding the flow itself, and
// the flow's next packet tells the datapath again.
func TestFlowDecisionFailureIsCountedLoggedAndRetried(t *testing.T) {
	for _, c := range []struct {
		name     string
		before   func(r *memRig, x1, x2 pkt) // the flow's decision, told without failing
		failing  func(r *memRig, x1, x2 pkt) // what the datapath refuses to hear
		decision string
		want     decision // once the third packet came
	}{
		{"offload", nil, func(r *memRig, x1, _ pkt) { r.verdict(offload(x1)) }, "offload", decision{datapath.DecideOffload, 0}},
		{"block", nil, func(r *memRig, x1, _ pkt) { r.verdict(block(x1)) }, "block", decision{datapath.DecideBlock, 0}},
		{"dropped after offload", func(r *memRig, x1, _ pkt) { r.verdict(offload(x1)) },
			func(r *memRig, _, x2 pkt) { r.verdict(drop(x2)) }, "offload", decision{datapath.DecideOffload, 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newMemRig(t, Config{})
			r.bind()
			f := flowOf(5, 3)
			x1, x2, x3 := f[0], f[1], f[2]
			r.holdPunted(x1, x2)
			if c.before != nil {
				c.before(r, x1, x2)
			}
			before, _ := r.dp.decision(0, 5)
			r.dp.mu.Lock()
			r.dp.failDecision = 1
			r.dp.mu.Unlock()
			c.failing(r, x1, x2)
			if st := r.e.Stats(); st.FlowDecisionErrors != 1 {
				t.Fatalf("flow_decision_errors %d, want 1", st.FlowDecisionErrors)
			}
			if d, _ := r.dp.decision(0, 5); d != before {
				t.Fatalf("the datapath holds %+v after refusing the decision", d)
			}
			logs := r.logged("cannot tell the datapath a flow's decision: the flow stays punted until it can")
			if len(logs) != 1 || logs[0].Data["flow_id"] != uint64(5) || logs[0].Data["slot"] != uint32(0) ||
				logs[0].Data["decision"] != c.decision || !errors.Is(logs[0].Data["error"].(error), errMapFull) {
				t.Fatalf("logged %v", logs)
			}
			r.hold(x3) // the datapath still punts the flow: x3 tells it again
			wait.For(t, "the decision told again", func() bool { d, _ := r.dp.decision(0, 5); return d == c.want })
			r.waitStats("x3 taken", func(st Stats) bool { return st.Held == 3 })
			if st := r.e.Stats(); st.FlowDecisionErrors != 1 {
				t.Fatalf("flow_decision_errors %d after the retry, want 1", st.FlowDecisionErrors)
			}
		})
	}
}

// TestTapOffloadFailureIsCounted: a tap flow has nothing held to retry
// from; its failure is counted and logged, and the next copy's verdict
// tells the datapath again.
func TestTapOffloadFailureIsCounted(t *testing.T) {
	r := newMemRig(t, Config{})
	r.setGuest(0, Guest{ID: "web", Tap: true}, true)
	r.bind()
	r.dp.mu.Lock()
	r.dp.failDecision = 1
	r.dp.mu.Unlock()
	for _, p := range flowOf(6, 2) {
		r.verdict(offload(p))
	}
	if d, ok := r.dp.decision(0, 6); !ok || d != (decision{datapath.DecideOffload, 0}) {
		t.Fatalf("datapath decision %+v %v", d, ok)
	}
	st := r.e.Stats()
	if st.FlowDecisionErrors != 1 || st.TapVerdicts != 2 || st.Late != 0 {
		t.Fatalf("stats %+v", st)
	}
	if n := len(r.logged("cannot tell the datapath a flow's decision: the flow stays punted until it can")); n != 1 {
		t.Fatalf("%d warnings", n)
	}
}

// TestFlowDecisionWarningsAreRateLimited: a datapath that refuses every
// decision is counted every time, and said once a second.
func TestFlowDecisionWarningsAreRateLimited(t *testing.T) {
	r := newMemRig(t, Config{})
	r.bind()
	r.dp.mu.Lock()
	r.dp.failDecision = 1 << 30
	r.dp.mu.Unlock()
	blockFlow := func(flow uint64) {
		p := pkt{flow: flow, id: flow}
		r.holdPunted(p)
		r.verdict(block(p))
	}
	const msg = "cannot tell the datapath a flow's decision: the flow stays punted until it can"
	for flow := uint64(1); flow <= 50; flow++ {
		blockFlow(flow)
	}
	if st, n := r.e.Stats(), len(r.logged(msg)); st.FlowDecisionErrors != 50 || n != 1 {
		t.Fatalf("%d errors, %d warnings; want 50 and 1", st.FlowDecisionErrors, n)
	}
	r.clock.Advance(time.Second)
	blockFlow(51)
	if n := len(r.logged(msg)); n != 2 {
		t.Fatalf("%d warnings a second later, want 2", n)
	}
	if got := r.logged(msg)[1].Data["flow_decision_errors"]; got != uint64(51) {
		t.Fatalf("the warning says %v errors, want 51", got)
	}
}

// TestVerdictTimeoutAppliesTheFailPolicy: a packet whose verdict does not
// come is decided by its guest's policy exactly when its time is up.
func TestVerdictTimeoutAppliesTheFailPolicy(t *testing.T) {
	for _, closed := range []bool{false, true} {
		r := newMemRig(t, Config{VerdictTimeout: 50 * time.Millisecond})
		r.setGuest(0, Guest{ID: "web", FailClosed: closed}, true)
		r.bind()
		p := pkt{flow: 1, id: 1}
		r.holdPunted(p)
		r.clock.Advance(50*time.Millisecond - time.Nanosecond)
		r.e.expire(r.clock.Now()) // what a tick now does
		if st := r.e.Stats(); st.Pending != 1 {
			t.Fatalf("decided before its time: %+v", st)
		}
		r.clock.Advance(time.Nanosecond) // the ticker's 10th tick
		st := r.waitStats("timed out", func(st Stats) bool { return st.Pending == 0 })
		switch {
		case closed && (st.FailClosed["timeout"] != 1 || len(r.dev.written()) != 0):
			t.Fatalf("fail-closed: %+v, written %d", st, len(r.dev.written()))
		case !closed && st.FailOpen["timeout"] != 1:
			t.Fatalf("fail-open: %+v", st)
		case !closed:
			r.waitWritten(1)
		}
		r.verdict(allow(p))
		if st := r.e.Stats(); st.Late != 1 {
			t.Fatalf("the verdict after the timeout: %+v", st)
		}
	}
}

// TestGuestBoundShedsAndRecovers holds a guest at its bound: the datapath is
// told to shed it, the packet over the bound is failed by policy, and once
// the guest is back under half its bound it is inspected again.
func TestGuestBoundShedsAndRecovers(t *testing.T) {
	r := newMemRig(t, Config{GuestPackets: 2})
	r.bind()
	c1, c2, c3 := pkt{flow: 1, id: 1}, pkt{flow: 2, id: 2}, pkt{flow: 3, id: 3}
	r.hold(c1, c2, c3)
	r.punted() // c1 and c2; c3 is over the bound
	r.punted()
	got := r.waitWritten(1) // c3, over the bound: fail-open
	if !sameWritten(got[0], c3.back(t)) {
		t.Fatalf("written %v", got)
	}
	st := r.e.Stats()
	if st.FailOpen["queue full"] != 1 || st.Congestions != 1 || st.Pending != 2 {
		t.Fatalf("at the bound: %+v", st)
	}
	r.verdict(allow(c1))
	r.waitWritten(2)
	r.dp.mu.Lock()
	defer r.dp.mu.Unlock()
	if want := []congestion{{0, true}, {0, false}}; !slices.Equal(r.dp.congested, want) {
		t.Fatalf("the datapath was told %v, want %v", r.dp.congested, want)
	}
}

// TestLostBindingDecidesHeldPackets: when the slow path goes, every held
// packet is decided at once by its guest's policy and punting stops.
func TestLostBindingDecidesHeldPackets(t *testing.T) {
	for _, closed := range []bool{false, true} {
		r := newMemRig(t, Config{VerdictTimeout: time.Hour})
		r.setGuest(0, Guest{ID: "web", FailClosed: closed}, true)
		s := r.bind()
		u1, u2 := pkt{flow: 1, id: 1}, pkt{flow: 2, id: 2}
		r.holdPunted(u1, u2)
		s.Close(errors.New("peer gone"))
		r.e.Unbound(s.Err())
		st := r.e.Stats()
		r.dp.mu.Lock()
		punting := r.dp.slowPath
		r.dp.mu.Unlock()
		if st.Bound || punting || st.Pending != 0 {
			t.Fatalf("after the loss: bound %v, punting %v, %+v", st.Bound, punting, st)
		}
		if closed {
			if st.FailClosed["unbound"] != 2 || st.DroppedByVerdict != 0 || len(r.dev.written()) != 0 {
				t.Fatalf("fail-closed: %+v", st)
			}
			continue
		}
		got := r.waitWritten(2) // two flows: in either order
		if st.FailOpen["unbound"] != 2 || !slices.ContainsFunc(got, func(w written) bool { return sameWritten(w, u1.back(t)) }) ||
			!slices.ContainsFunc(got, func(w written) bool { return sameWritten(w, u2.back(t)) }) {
			t.Fatalf("fail-open: %+v, written %v", st, got)
		}
	}
}

func TestLateUnboundLeavesTheLiveBinding(t *testing.T) {
	r := newMemRig(t, Config{})
	r.bind()
	r.e.Unbound(errors.New("an earlier binding ended"))
	r.dp.mu.Lock()
	punting := r.dp.slowPath
	r.dp.mu.Unlock()
	if !r.e.Stats().Bound || !punting {
		t.Fatalf("a late Unbound undid the live binding: bound %v, punting %v", r.e.Stats().Bound, punting)
	}
	if n := len(r.logged("a lost binding reported after the next one was bound: ignored")); n != 1 {
		t.Fatalf("%d warnings", n)
	}
}

func TestSlowPathThatInspectsNothingIsNotPuntedTo(t *testing.T) {
	r := newMemRig(t, Config{})
	near, far := net.Pipe()
	defer far.Close()
	s := channel.NewSession(channel.NewConn(near), channel.SessionConfig{Role: channel.RoleFastPath})
	defer s.Close(errors.New("test over"))
	r.e.Bound(s, channel.Result{Negotiated: channel.CapFirewall})
	r.dp.mu.Lock()
	punting := r.dp.slowPath
	r.dp.mu.Unlock()
	if r.e.Stats().Bound || punting {
		t.Fatalf("a slow path without IPS or web reputation was bound for inspection (punting %v)", punting)
	}
	if n := len(r.logged("bound slow path inspects nothing: inspected flows follow their fail policy")); n != 1 {
		t.Fatalf("%d warnings", n)
	}
}

// TestNoVerdictToBeHad covers the packets the engine decides by policy
// without asking: no slow path bound, a slow path whose session ended
// before the batch went, and a slot no guest holds.
func TestNoVerdictToBeHad(t *testing.T) {
	for _, c := range []struct {
		name   string
		guest  Guest
		setup  func(r *memRig)
		reason string
	}{
		{"not bound, fail-open", Guest{ID: "web"}, func(*memRig) {}, "unbound"},
		{"not bound, fail-closed", Guest{ID: "web", FailClosed: true}, func(*memRig) {}, "unbound"},
		{"session ended, fail-closed", Guest{ID: "web", FailClosed: true},
			func(r *memRig) { r.bind().Close(errors.New("peer gone")) }, "unbound"},
		{"unknown slot, fail-open policy", Guest{ID: "web"}, func(r *memRig) { r.bind(); r.setGuest(0, Guest{}, false) }, "unknown guest"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newMemRig(t, Config{})
			r.setGuest(0, c.guest, true)
			c.setup(r)
			p := pkt{flow: 1, id: 1}
			r.hold(p)
			st := r.waitStats("decided", func(st Stats) bool { return st.Held == 1 && st.Pending == 0 })
			open := !c.guest.FailClosed && c.reason != "unknown guest"
			if open {
				if got := r.waitWritten(1); st.FailOpen[c.reason] != 1 || !sameWritten(got[0], p.back(t)) {
					t.Fatalf("fail-open: %+v, written %v", st, got)
				}
				return
			}
			if st.FailClosed[c.reason] != 1 || len(r.dev.written()) != 0 || st.Sent != 0 {
				t.Fatalf("fail-closed: %+v, written %d", st, len(r.dev.written()))
			}
		})
	}
}

// TestRejectAnswersTheSender: a reject verdict drops the packet and answers
// its sender, with a TCP reset by RFC 793's rules, or with the slow path's
// own reply when it sends one.
func TestRejectAnswersTheSender(t *testing.T) {
	r := newMemRig(t, Config{})
	r.bind()
	p := pkt{flow: 1, id: 1, payload: "GET /evil"}
	r.holdPunted(p)
	v := channel.VerdictRecord{Guest: 0, FlowID: 1, PacketID: 1, Action: channel.ActionReject}
	r.verdict(v)
	got := r.waitWritten(1)[0]
	if got.mark != datapath.BackMark(testIfindex, false, true) {
		t.Fatalf("the reset goes %#x, want toward the remote sender", got.mark)
	}
	pk := gopacket.NewPacket(got.b[vnetHdrLen:], layers.LayerTypeEthernet, gopacket.Default)
	eth, _ := pk.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	ip, _ := pk.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	tcp, _ := pk.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if eth == nil || ip == nil || tcp == nil || !bytes.Equal(eth.DstMAC, remoteMAC) || !bytes.Equal(eth.SrcMAC, guestMAC) ||
		!ip.SrcIP.Equal(guestIP.AsSlice()) || !ip.DstIP.Equal(remoteIP.AsSlice()) ||
		!tcp.RST || tcp.ACK || tcp.Seq != 2000 || tcp.SrcPort != 80 || tcp.DstPort != 40000 {
		t.Fatalf("answer:\n%s", pk.Dump())
	}

	reply := pkt{fromGuest: true, payload: "block page"}.frame(t)[14:] // an L3 packet from the slow path
	q := pkt{flow: 2, id: 2}
	r.holdPunted(q)
	r.verdict(channel.VerdictRecord{Guest: 0, FlowID: 2, PacketID: 2, Action: channel.ActionReject, Reply: reply})
	got = r.waitWritten(2)[1]
	want := append(append(append(make([]byte, vnetHdrLen), remoteMAC...), guestMAC...), 0x08, 0x00)
	if !bytes.Equal(got.b, append(want, reply...)) {
		t.Fatalf("the slow path's reply was not sent as it came:\n got %x\nwant %x", got.b, append(want, reply...))
	}
	st := r.waitStats("answers counted", func(st Stats) bool { return st.RejectsAnswered == 2 })
	if st.Rejected != 2 || st.Verdicts["reject"] != 2 || st.Reinjected != 0 || st.Pending != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestTapCopiesAreNotHeld: a tap copy goes to the slow path and nowhere
// else; its verdict only counts.
func TestTapCopiesAreNotHeld(t *testing.T) {
	r := newMemRig(t, Config{})
	r.setGuest(0, Guest{ID: "web", Tap: true}, true)
	r.bind()
	p := pkt{flow: 4, id: 1, tap: true}
	r.hold(p)
	if got := r.punted(); got.Flags != channel.PuntTapCopy || got.PacketID != 1 {
		t.Fatalf("punted %+v, want a tap copy", got)
	}
	v := drop(p)
	v.Flow = channel.FlowOffload // a tap flow's verdict offloads it without holding anything
	r.verdict(v)
	st := r.e.Stats()
	if st.TapCopies != 1 || st.Held != 0 || st.TapVerdicts != 1 || st.TapWouldDrop != 1 || st.Late != 0 || st.DroppedByVerdict != 0 {
		t.Fatalf("stats %+v", st)
	}
	if d, ok := r.dp.decision(0, 4); !ok || d.verdict != datapath.DecideOffload {
		t.Fatalf("tap offload not told to the datapath: %+v %v", d, ok)
	}
	if n := len(r.dev.written()); n != 0 {
		t.Fatalf("%d tap copies written back", n)
	}
}

// TestShutdownDecidesHeldPacketsAndStopsPunting: Run's end lets go of every
// held packet by policy, tells the datapath to stop punting and to stop
// trusting the heartbeat, and closes the device after the last write.
func TestShutdownDecidesHeldPacketsAndStopsPunting(t *testing.T) {
	r := newMemRig(t, Config{VerdictTimeout: time.Hour})
	r.bind()
	p := pkt{flow: 1, id: 1}
	r.holdPunted(p)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if got := r.dev.written(); len(got) != 1 || !sameWritten(got[0], p.back(t)) {
		t.Fatalf("written %v", got)
	}
	st := r.e.Stats()
	r.dp.mu.Lock()
	defer r.dp.mu.Unlock()
	if st.FailOpen["shutdown"] != 1 || st.Pending != 0 || r.dp.slowPath || r.dp.ttls[len(r.dp.ttls)-1] != 0 || !r.dev.closed {
		t.Fatalf("after Run: %+v, punting %v, heartbeats %v, closed %v", st, r.dp.slowPath, r.dp.ttls, r.dev.closed)
	}
}

func TestRunEndsWhenReadingFails(t *testing.T) {
	r := newMemRig(t, Config{})
	r.expectRunErr = true
	r.dev.failRead(unix.EBADF)
	wait.For(t, "Run ended by itself", func() bool { return len(r.done) == 1 })
	if err := r.result(); !errors.Is(err, unix.EBADF) {
		t.Fatalf("Run ended with %v, want the read's error", err)
	}
	r.dp.mu.Lock()
	defer r.dp.mu.Unlock()
	if r.dp.ttls[len(r.dp.ttls)-1] != 0 || !r.dev.closed {
		t.Fatalf("heartbeats %v, device closed %v: the datapath goes on punting to nobody", r.dp.ttls, r.dev.closed)
	}
}

// TestReadProblemsThatPass: a read error that passes, a packet too large
// for any buffer and one without metadata are counted or logged, and
// reading goes on.
func TestReadProblemsThatPass(t *testing.T) {
	r := newMemRig(t, Config{})
	r.dev.failRead(unix.ENETDOWN)
	r.dev.push(make([]byte, readBufSize+1))
	r.dev.push(make([]byte, vnetHdrLen+14+datapath.PuntMetaSize)) // no magic
	r.dev.push(make([]byte, 20))
	p := pkt{flow: 1, id: 1}
	r.hold(p) // not bound: passes at once, fail-open
	r.waitWritten(1)
	if st := r.e.Stats(); st.Malformed != 3 || st.Held != 1 {
		t.Fatalf("stats %+v", st)
	}
	for _, msg := range []string{"reading held packets", "held packet lost: larger than any the punt device should carry",
		"held packet without metadata"} {
		if n := len(r.logged(msg)); n != 1 {
			t.Errorf("%q logged %d times", msg, n)
		}
	}
}

// TestHeartbeatFollowsTheClock: the heartbeat is refreshed every 100 ms of
// the engine's clock, however few ticks arrived meanwhile.
func TestHeartbeatFollowsTheClock(t *testing.T) {
	r := newMemRig(t, Config{})
	beats := func() []time.Duration {
		r.dp.mu.Lock()
		defer r.dp.mu.Unlock()
		return slices.Clone(r.dp.ttls)
	}
	if got := beats(); !slices.Equal(got, []time.Duration{heartbeatTTL}) {
		t.Fatalf("heartbeats at start %v", got)
	}
	for n := 2; n <= 4; n++ {
		r.clock.Advance(beatEvery)
		wait.For(t, "a heartbeat", func() bool { return len(beats()) == n })
	}
	if got := beats(); !slices.Equal(got, []time.Duration{heartbeatTTL, heartbeatTTL, heartbeatTTL, heartbeatTTL}) {
		t.Fatalf("heartbeats %v", got)
	}
}

// TestMalformedEventsAreCountedAndLogged: an event the daemon cannot read
// is counted each time and logged once a second; the others go on.
func TestMalformedEventsAreCountedAndLogged(t *testing.T) {
	var got []string
	r := newMemRig(t, Config{Events: func(e channel.EventRecord) error {
		if string(e.Body) == "{" {
			return errors.New("unexpected end of JSON input")
		}
		got = append(got, string(e.Body))
		return nil
	}})
	send := func(bodies ...string) {
		var recs []channel.EventRecord
		for _, b := range bodies {
			recs = append(recs, channel.EventRecord{Kind: channel.EventAlert, Guest: 3, Body: []byte(b)})
		}
		p, err := channel.AppendEventBatch(nil, recs)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.e.HandleFrame(channel.Frame{Type: channel.TypeEventBatch, Payload: p}); err != nil {
			t.Fatal(err)
		}
	}
	const msg = "slow path event not understood"
	send("{", `{"alert":{}}`, "{", "{")
	logs := r.logged(msg)
	if st := r.e.Stats(); st.MalformedEvents != 3 || len(logs) != 1 || !slices.Equal(got, []string{`{"alert":{}}`}) {
		t.Fatalf("malformed_events %d, %d warnings, delivered %q", st.MalformedEvents, len(logs), got)
	}
	if f := logs[0].Data; f["kind"] != "alert" || f["slot"] != uint32(3) || f["body_bytes"] != 1 {
		t.Fatalf("warning fields %v", maps.Collect(maps.All(f)))
	}
	r.clock.Advance(time.Second)
	send("{")
	if n := len(r.logged(msg)); n != 2 || r.e.Stats().MalformedEvents != 4 {
		t.Fatalf("%d warnings a second later, want 2", n)
	}
}

func TestFailAllLetsGoOfPackets(t *testing.T) {
	r := newMemRig(t, Config{VerdictTimeout: time.Hour})
	r.bind()
	for id := uint64(1); id <= 3; id++ {
		r.holdPunted(pkt{flow: id, id: id})
	}
	r.e.failAll("unbound")
	r.e.mu.Lock()
	defer r.e.mu.Unlock()
	for i, h := range r.e.order[:cap(r.e.order)] {
		if h != nil {
			t.Fatalf("order keeps released packet %d (%d)", h.id, i)
		}
	}
	if r.e.totalBytes != 0 || len(r.e.byID) != 0 {
		t.Fatalf("still held: %d bytes, %d packets", r.e.totalBytes, len(r.e.byID))
	}
}
