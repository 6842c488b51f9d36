package inspectd_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/jonboulle/clockwork"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/hypervisor/lab/wait"
	"github.com/palisade/palisade/slowpath/engine"
	"github.com/palisade/palisade/slowpath/eve"
	"github.com/palisade/palisade/slowpath/inspect/craft"
	"github.com/palisade/palisade/slowpath/inspect/packet"
	"github.com/palisade/palisade/slowpath/inspectd"
	"github.com/palisade/palisade/slowpath/inspectd/inspecttest"
	"github.com/palisade/palisade/slowpath/ips"
	"github.com/palisade/palisade/slowpath/wrs"
)

const guestIP = "10.0.0.5"

// puntsOf turns crafted frames into punt records of one flow of guest 7.
func puntsOf(flowID uint64, frames []craft.Frame) []channel.PuntRecord {
	return inspecttest.Punts(7, flowID, netip.MustParseAddr(guestIP), frames)
}

func tcpSession() *craft.TCP {
	return (&craft.Endpoints{Ethernet: true}).NewTCP(guestIP+":40000", "198.51.100.9:80")
}

type want struct {
	action channel.Action
	flow   channel.FlowDecision
}

func checkVerdicts(t *testing.T, got []inspecttest.Verdict, flowID uint64, wants ...want) {
	t.Helper()
	if len(got) != len(wants) {
		t.Fatalf("%d verdicts, want %d", len(got), len(wants))
	}
	for i, v := range got {
		if v.Guest != 7 || v.FlowID != flowID || v.PacketID != uint64(i+1) {
			t.Errorf("verdict %d answers guest %d flow %d packet %d", i, v.Guest, v.FlowID, v.PacketID)
		}
		if v.Action != wants[i].action || v.Flow != wants[i].flow {
			t.Errorf("packet %d: %s/%s, want %s/%s", i+1, v.Action, v.Flow, wants[i].action, wants[i].flow)
		}
	}
}

var (
	allowKeep    = want{channel.ActionAllow, channel.FlowKeepInspecting}
	allowOffload = want{channel.ActionAllow, channel.FlowOffload}
	dropBlock    = want{channel.ActionDrop, channel.FlowBlock}
)

func TestMarkerDropsAndBlocksTheFlow(t *testing.T) {
	offload := engine.NewOffloadAfter(16)
	l := startLoop(t, inspectd.Config{}, chainOf(engine.NewDropMarker("PALISADE-DROP"), offload))
	c := tcpSession()
	// The packets after the marked one were punted before the fast path
	// could apply the block: they are dropped too.
	frames := craft.Seq(c.Handshake(), c.Send(true, []byte("hello")), c.Send(true, []byte("x PALISADE-DROP y")),
		c.Send(true, []byte("after")), c.Send(false, []byte("late reply")))
	l.fast.Punt(puntsOf(1001, frames)...)
	checkVerdicts(t, l.fast.WaitVerdicts(len(frames)), 1001,
		allowKeep, allowKeep, allowKeep, allowKeep, dropBlock, dropBlock, dropBlock)
	st := l.stats(7)
	if st.Punts != 7 || st.Inspected != 5 || st.FromDecision != 2 || st.Verdicts.Drop != 3 || st.Verdicts.Block != 3 {
		t.Errorf("stats %+v", st)
	}
	if offload.Len() != 0 {
		t.Errorf("a blocked flow's state is still held by the engines (%d flows)", offload.Len())
	}
}

func TestOffloadAfterN(t *testing.T) {
	offload := engine.NewOffloadAfter(4)
	l := startLoop(t, inspectd.Config{}, chainOf(engine.NewDropMarker("PALISADE-DROP"), offload))
	c := tcpSession()
	frames := craft.Seq(c.Handshake(), c.Send(true, []byte("GET / HTTP/1.1\r\n\r\n")), c.Send(false, []byte("HTTP/1.1 200 OK\r\n\r\n")),
		c.Send(true, []byte("more")))
	l.fast.Punt(puntsOf(1002, frames)...)
	checkVerdicts(t, l.fast.WaitVerdicts(len(frames)), 1002,
		allowKeep, allowKeep, allowKeep, allowOffload, allowOffload, allowOffload)
	if st := l.stats(6); st.Verdicts.Offload != 3 || st.FromDecision != 2 {
		t.Errorf("stats %+v", st.Verdicts)
	}
	if offload.Len() != 0 {
		t.Errorf("an offloaded flow is still counted (%d flows)", offload.Len())
	}
}

// orderProbe checks that each flow's packets reach the engines in punt
// order and never two at a time, yielding now and then so that flows on
// the same worker and on different workers interleave.
type orderProbe struct {
	mu       sync.Mutex
	last     map[[2]uint64]uint64
	inflight map[[2]uint64]*atomic.Int32
	errs     []string
}

func (o *orderProbe) Name() string           { return "order" }
func (o *orderProbe) FlowEnd(uint32, uint64) {}

func (o *orderProbe) Inspect(p *engine.Packet) engine.Verdict {
	k := [2]uint64{uint64(p.Guest), p.FlowID}
	o.mu.Lock()
	busy := o.inflight[k]
	if busy == nil {
		busy = new(atomic.Int32)
		o.inflight[k] = busy
	}
	if p.PacketID != o.last[k]+1 {
		o.errs = append(o.errs, fmt.Sprintf("flow %v: packet %d after %d", k, p.PacketID, o.last[k]))
	}
	o.last[k] = p.PacketID
	o.mu.Unlock()
	if !busy.CompareAndSwap(0, 1) {
		o.mu.Lock()
		o.errs = append(o.errs, fmt.Sprintf("flow %v: two packets inspected at once", k))
		o.mu.Unlock()
	}
	if p.PacketID%7 == 0 {
		runtime.Gosched()
	}
	busy.Store(0)
	return engine.Verdict{Action: channel.ActionAllow, Flow: channel.FlowKeepInspecting}
}

func TestPerFlowOrdering(t *testing.T) {
	probe := &orderProbe{last: map[[2]uint64]uint64{}, inflight: map[[2]uint64]*atomic.Int32{}}
	l := startLoop(t, inspectd.Config{Workers: 4}, chainOf(probe))
	frame := (&craft.Endpoints{Ethernet: true}).UDP(netip.MustParseAddrPort(guestIP+":5000"), netip.MustParseAddrPort("198.51.100.9:53"), make([]byte, 64)).Data
	const flows, perFlow = 64, 40
	next := make([]uint64, flows)
	rng := rand.New(rand.NewPCG(1, 2))
	var batch []channel.PuntRecord
	sent := 0
	for sent < flows*perFlow {
		f := rng.IntN(flows)
		if next[f] == perFlow {
			continue
		}
		next[f]++
		// Two guests share flow ids: a flow is (guest, flow id).
		batch = append(batch, channel.PuntRecord{Guest: uint32(1 + f%2), Direction: channel.FromGuest, FlowID: uint64(100 + f/2),
			PacketID: next[f], Data: frame})
		sent++
		if len(batch) >= 1+rng.IntN(100) || sent == flows*perFlow {
			l.fast.Punt(batch...)
			batch = batch[:0]
		}
	}
	got := l.fast.WaitVerdicts(flows * perFlow)
	for k, vs := range inspecttest.ByFlow(got) {
		if len(vs) != perFlow {
			t.Errorf("flow %v: %d verdicts", k, len(vs))
		}
		for i, v := range vs {
			if v.PacketID != uint64(i+1) {
				t.Fatalf("flow %v: verdict %d is for packet %d: verdicts out of punt order", k, i, v.PacketID)
			}
		}
	}
	probe.mu.Lock()
	defer probe.mu.Unlock()
	if len(probe.errs) > 0 {
		t.Fatalf("%d ordering errors, first: %s", len(probe.errs), probe.errs[0])
	}
	if st := l.stats(flows * perFlow); st.Verdicts.Frames >= uint64(flows*perFlow) {
		t.Errorf("%d verdict frames for %d verdicts: not batched", st.Verdicts.Frames, flows*perFlow)
	}
}

func TestTapCopyIsAnsweredAndNeverBlocks(t *testing.T) {
	l := startLoop(t, inspectd.Config{}, chainOf(engine.NewDropMarker("PALISADE-DROP"), engine.NewOffloadAfter(16)))
	c := tcpSession()
	recs := puntsOf(1003, craft.Seq(c.Handshake(), c.Send(true, []byte("x PALISADE-DROP y")), c.Send(true, []byte("next"))))
	for i := range recs {
		recs[i].Flags = channel.PuntTapCopy
	}
	l.fast.Punt(recs...)
	checkVerdicts(t, l.fast.WaitVerdicts(len(recs)), 1003, allowKeep, allowKeep, allowKeep, allowKeep, allowKeep)
	if st := l.stats(5); st.TapCopies != 5 || st.Verdicts.Sent != 5 || st.Verdicts.Block != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestIPSDropRuleBlocksAndAlerts(t *testing.T) {
	cfg := ips.DefaultConfig()
	rs := ips.LoadString(cfg, `drop tcp any any -> any 80 (msg:"PALISADE TEST evil request"; flow:established,to_server; content:"EVIL"; classtype:attempted-admin; sid:1000010; rev:2;)`)
	if rs.Len() != 1 {
		t.Fatalf("rules: %+v %v", rs.Stats(), rs.Refused())
	}
	evePath := filepath.Join(t.TempDir(), "eve.json")
	out, err := eve.OpenFile(evePath)
	if err != nil {
		t.Fatal(err)
	}
	l := startLoop(t, inspectd.Config{EVE: out}, func(sink eve.Sink) (engine.Engine, error) {
		return engine.Chain{ips.New(rs, cfg, ips.WithSink(sink)), engine.NewOffloadAfter(16)}, nil
	})
	c := tcpSession()
	frames := craft.Seq(c.Handshake(), c.Send(true, []byte("GET /EVIL HTTP/1.1\r\nHost: x\r\n\r\n")), c.Send(true, []byte("more")))
	l.fast.Punt(puntsOf(1004, frames)...)
	checkVerdicts(t, l.fast.WaitVerdicts(len(frames)), 1004, allowKeep, allowKeep, allowKeep, dropBlock, dropBlock)

	evs := l.fast.WaitEvents(1)
	if len(evs) != 1 || evs[0].Kind != channel.EventAlert || evs[0].Guest != 7 {
		t.Fatalf("events %+v", evs)
	}
	var rec eve.Record
	if err := json.Unmarshal(evs[0].Body, &rec); err != nil {
		t.Fatalf("alert body %q: %v", evs[0].Body, err)
	}
	if rec.EventType != "alert" || rec.FlowID != 1004 || rec.SrcIP != guestIP || rec.DestPort != 80 || rec.Proto != "TCP" ||
		rec.Alert == nil || rec.Alert.SignatureID != 1000010 || rec.Alert.Action != eve.ActionBlocked || rec.Alert.Rev != 2 {
		t.Fatalf("alert %s", evs[0].Body)
	}
	// The EVE file holds the same line, once Close flushed it.
	if err := l.svc.Close(); err != nil {
		t.Fatal(err)
	}
	line, err := os.ReadFile(evePath)
	if err != nil || !bytes.Equal(bytes.TrimSpace(line), evs[0].Body) {
		t.Fatalf("EVE file %q (%v), event body %q", line, err, evs[0].Body)
	}
}

// The alert rate is a token bucket on the service's clock: a fake one that
// stands still lets exactly AlertRate alerts through, and one second later
// exactly AlertRate more; the EVE file gets every alert.
func TestAlertsAreRateLimited(t *testing.T) {
	cfg := ips.DefaultConfig()
	rs := ips.LoadString(cfg, `alert udp any any -> any 53 (msg:"PALISADE TEST probe"; content:"probe"; sid:1000011; rev:1;)`)
	evePath := filepath.Join(t.TempDir(), "eve.json")
	out, err := eve.OpenFile(evePath)
	if err != nil {
		t.Fatal(err)
	}
	clock := clockwork.NewFakeClock()
	l := startLoop(t, inspectd.Config{EVE: out, AlertRate: 10, Clock: clock}, func(sink eve.Sink) (engine.Engine, error) {
		return engine.Chain{ips.New(rs, cfg, ips.WithSink(sink)), engine.NewOffloadAfter(16)}, nil
	})
	probes := func(first int) {
		ep := &craft.Endpoints{Ethernet: true}
		var recs []channel.PuntRecord
		for i := first; i < first+30; i++ {
			f := ep.UDP(netip.AddrPortFrom(netip.MustParseAddr(guestIP), uint16(10000+i)), netip.MustParseAddrPort("198.51.100.53:53"), []byte("a probe"))
			recs = append(recs, channel.PuntRecord{Guest: 9, Direction: channel.FromGuest, FlowID: uint64(2000 + i), PacketID: 1, Data: f.Data})
		}
		l.fast.Punt(recs...)
		l.fast.WaitVerdicts(first + 30)
		l.fast.WaitFor("alerts counted", func() bool { st := l.svc.Stats().Alerts; return st.Sent+st.DroppedRate == uint64(first+30) })
	}
	probes(0)
	if st := l.svc.Stats().Alerts; st.Emitted != 30 || st.Sent != 10 || st.DroppedRate != 20 {
		t.Fatalf("alerts %+v: want 10 sent, the other 20 over the rate", st)
	}
	clock.Advance(time.Second) // the bucket refills, to one second's worth
	probes(30)
	st := l.svc.Stats().Alerts
	if st.Emitted != 60 || st.Sent != 20 || st.DroppedRate != 40 {
		t.Fatalf("alerts %+v a second later: want 10 more sent, 20 more over the rate", st)
	}
	evs := l.fast.WaitEvents(int(st.Sent))
	for _, e := range evs {
		var rec eve.Record
		if e.Guest != 9 || json.Unmarshal(e.Body, &rec) != nil || rec.Alert.SignatureID != 1000011 || rec.FlowID < 2000 || rec.FlowID >= 2060 {
			t.Fatalf("event %+v %s", e, e.Body)
		}
	}
	if err := l.svc.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(evePath)
	if n := bytes.Count(data, []byte("\n")); err != nil || n != 60 {
		t.Fatalf("EVE file has %d lines (%v), want all 60 alerts", n, err)
	}
}

func TestWRSBlockPage(t *testing.T) {
	feed := wrs.NewFeed()
	if err := feed.Read(strings.NewReader("blocked.test phishing 80\n"), "test.feed"); err != nil {
		t.Fatal(err)
	}
	l := startLoop(t, inspectd.Config{}, func(sink eve.Sink) (engine.Engine, error) {
		return engine.Chain{wrs.New(feed, nil, wrs.WithSink(sink)), engine.NewOffloadAfter(16)}, nil
	})
	c := tcpSession()
	frames := craft.Seq(c.Handshake(), c.Send(true, []byte("GET /login HTTP/1.1\r\nHost: blocked.test\r\nUser-Agent: t\r\n\r\n")))
	l.fast.Punt(puntsOf(1005, frames)...)
	got := l.fast.WaitVerdicts(len(frames))
	checkVerdicts(t, got, 1005, allowKeep, allowKeep, allowKeep, want{channel.ActionReject, channel.FlowBlock})
	reply := got[3].Reply
	if len(reply) == 0 {
		t.Fatal("reject without a block page")
	}
	var pk packet.Packet
	if err := packet.Decode(reply, false, &pk); err != nil {
		t.Fatalf("reply does not decode: %v", err)
	}
	if err := pk.VerifyChecksums(); err != nil {
		t.Fatalf("reply checksums: %v", err)
	}
	p := gopacket.NewPacket(reply, layers.LayerTypeIPv4, gopacket.Default)
	ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if p.ErrorLayer() != nil || ip == nil || tcp == nil {
		t.Fatalf("reply is not IPv4/TCP: %v", p)
	}
	if ip.SrcIP.String() != "198.51.100.9" || ip.DstIP.String() != guestIP || tcp.SrcPort != 80 || tcp.DstPort != 40000 ||
		int(ip.Length) != len(reply) || !tcp.FIN || !tcp.ACK || tcp.Seq != c.SSeq || tcp.Ack != c.CSeq {
		t.Fatalf("reply %v", p)
	}
	if !bytes.HasPrefix(tcp.Payload, []byte("HTTP/1.1 403 Forbidden\r\n")) {
		t.Fatalf("reply payload %q", tcp.Payload)
	}
	evs := l.fast.WaitEvents(1)
	if !bytes.Contains(evs[0].Body, []byte(`"signature_id":9000001`)) {
		t.Fatalf("event %s", evs[0].Body)
	}
}

func TestMalformedPuntBatchEndsTheSession(t *testing.T) {
	l := startLoop(t, inspectd.Config{}, chainOf(engine.NewOffloadAfter(16)))
	first := l.fast.Session()
	c := tcpSession()
	p, err := channel.AppendPuntBatch(nil, puntsOf(1006, c.Handshake()))
	if err != nil {
		t.Fatal(err)
	}
	l.fast.SendRaw(p[:len(p)-1]) // the last record is one byte short
	wait.For(t, "a malformed PUNT_BATCH ends the session", func() bool { return first.Err() != nil })
	l.fast.WaitFor("slow path's reason", func() bool {
		return strings.Contains(l.client.Status().LastError, "protocol error") && strings.Contains(l.client.Status().LastError, "PUNT_BATCH")
	})
	t.Logf("slow path: %s", l.client.Status().LastError)
	// Nothing of the batch was acted upon; the slow path rebinds and serves.
	if n := l.fast.VerdictCount(); n != 0 || l.svc.Stats().Punts != 0 {
		t.Fatalf("%d verdicts / %d punts from a malformed batch", n, l.svc.Stats().Punts)
	}
	l.fast.WaitBound(first)
	l.fast.Punt(puntsOf(1006, c.Handshake())...)
	l.fast.WaitVerdicts(3)
}

// gate holds every packet in the engine until released. It has no
// interest in flows (it votes to offload them), so it leaves flow decisions
// to the engines after it.
type gate struct {
	entered chan struct{}
	release chan struct{}
}

func newGate() *gate { return &gate{entered: make(chan struct{}, 1024), release: make(chan struct{})} }

func (g *gate) Name() string           { return "gate" }
func (g *gate) FlowEnd(uint32, uint64) {}
func (g *gate) Inspect(*engine.Packet) engine.Verdict {
	g.entered <- struct{}{}
	<-g.release
	return engine.Verdict{Action: channel.ActionAllow, Flow: channel.FlowOffload}
}

func udpPunts(flowID uint64, from, n int) []channel.PuntRecord {
	f := (&craft.Endpoints{Ethernet: true}).UDP(netip.MustParseAddrPort(guestIP+":5000"), netip.MustParseAddrPort("198.51.100.9:53"), []byte("q"))
	out := make([]channel.PuntRecord, n)
	for i := range out {
		out[i] = channel.PuntRecord{Guest: 7, Direction: channel.FromGuest, FlowID: flowID, PacketID: uint64(from + i), Data: f.Data}
	}
	return out
}

func TestUnboundDropsQueuedWorkAndKeepsEngineState(t *testing.T) {
	g := newGate()
	offload := engine.NewOffloadAfter(12)
	l := startLoop(t, inspectd.Config{Workers: 1}, chainOf(g, offload))
	first := l.fast.Session()
	l.fast.Punt(udpPunts(1007, 1, 10)...)
	<-g.entered // packet 1 is in the engines, 2–10 queued
	first.Close(errors.New("test: binding cut"))
	l.fast.WaitFor("slow path unbound", func() bool { return !l.svc.Stats().Bound })
	close(g.release)
	l.fast.WaitFor("queued work dropped", func() bool { return l.svc.Stats().Unanswered.Unbound == 10 })

	l.fast.WaitBound(first)
	// The engines saw packet 1 before the cut: the 12th they see offloads.
	l.fast.Punt(udpPunts(1007, 11, 11)...)
	got := l.fast.WaitVerdicts(11)
	for i, v := range got {
		wantFlow := channel.FlowKeepInspecting
		if i == 10 {
			wantFlow = channel.FlowOffload
		}
		if v.PacketID != uint64(11+i) || v.Flow != wantFlow {
			t.Fatalf("verdict %d: packet %d %s, want packet %d %s (%+v)", i, v.PacketID, v.Flow, 11+i, wantFlow, l.svc.Stats())
		}
	}
}

// The reader waits for room up to MaxStall on the service's clock, then
// sheds: with a fake clock the stall lasts exactly MaxStall, and the shed
// packets are never answered.
func TestBackpressureStallsThenSheds(t *testing.T) {
	g := newGate()
	clock := clockwork.NewFakeClock()
	const maxStall = 30 * time.Millisecond
	l := startLoop(t, inspectd.Config{Workers: 1, QueuePackets: 4, MaxStall: maxStall, Clock: clock}, chainOf(g, engine.NewOffloadAfter(0)))
	l.fast.Punt(udpPunts(1008, 1, 1)...)
	<-g.entered
	l.fast.Punt(udpPunts(1008, 2, 3)...) // fills the queue: 4 with the one in the engine
	l.fast.Punt(udpPunts(1008, 5, 2)...) // no room: the reader waits, then sheds
	blockUntil(t, clock, runTickers+1)   // Run's tickers and the reader's stall
	if st := l.svc.Stats(); st.Queue.Stalls != 1 || st.Unanswered.Shed != 0 {
		t.Fatalf("before the stall bound: queue %+v, unanswered %+v", st.Queue, st.Unanswered)
	}
	clock.Advance(maxStall)
	l.fast.WaitFor("shed", func() bool { return l.svc.Stats().Unanswered.Shed == 2 })
	if st := l.svc.Stats(); st.Queue.Stalls != 1 || st.Queue.StallSeconds != maxStall.Seconds() {
		t.Fatalf("queue %+v, want one stall of %s", st.Queue, maxStall)
	}
	close(g.release)
	l.fast.WaitVerdicts(4)
	// Packets of a flow are answered in punt order: once packet 7's verdict
	// is in, one for the shed 5 or 6 would have come before it.
	l.fast.Punt(udpPunts(1008, 7, 1)...)
	got := l.fast.WaitVerdicts(5)
	var ids []uint64
	for _, v := range got {
		ids = append(ids, v.PacketID)
	}
	if !slices.Equal(ids, []uint64{1, 2, 3, 4, 7}) || !l.svc.Stats().Bound {
		t.Fatalf("verdicts for packets %v, want 1-4 and 7; bound %v", ids, l.svc.Stats().Bound)
	}
}

// panicky fails on packets carrying "PANIC", as an engine bug would.
type panicky struct{}

func (panicky) Name() string           { return "panicky" }
func (panicky) FlowEnd(uint32, uint64) {}
func (panicky) Inspect(p *engine.Packet) engine.Verdict {
	if bytes.Contains(p.Data, []byte("PANIC")) {
		panic("engine bug")
	}
	return engine.Allow
}

func TestEnginePanicLeavesThePacketUnanswered(t *testing.T) {
	l := startLoop(t, inspectd.Config{}, chainOf(panicky{}))
	c := tcpSession()
	recs := puntsOf(1009, craft.Seq(c.Send(true, []byte("ok")), c.Send(true, []byte("PANIC")), c.Send(true, []byte("ok"))))
	l.fast.Punt(recs...)
	got := l.fast.WaitVerdicts(2)
	if got[0].PacketID != 1 || got[1].PacketID != 3 || l.stats(2).Unanswered.EngineFailures != 1 {
		t.Fatalf("verdicts %+v stats %+v", got, l.svc.Stats().Unanswered)
	}
}

// A lone punt is answered as soon as it is judged, in a frame of its own:
// no timer holds it back. The service's clock is a fake one that never
// moves, so an answer that waited for a tick would never come.
func TestLonePuntsAreAnsweredWithoutATimer(t *testing.T) {
	l := startLoop(t, inspectd.Config{Clock: clockwork.NewFakeClock()}, chainOf(engine.NewOffloadAfter(0)))
	for i := range 200 {
		l.fast.Punt(udpPunts(uint64(3000+i), 1, 1)...)
		if v := l.fast.WaitVerdict(i); v.FlowID != uint64(3000+i) || v.Action != channel.ActionAllow {
			t.Fatalf("lone punt %d answered by %+v", i, v.VerdictRecord)
		}
	}
	if st := l.stats(200); st.Verdicts.Frames != 200 || st.Verdicts.Sent != 200 {
		t.Errorf("%d frames for %d verdicts of 200 lone punts", st.Verdicts.Frames, st.Verdicts.Sent)
	}
}

// noShed lets the reader wait for room as long as it takes: the flood
// counts on every punt being answered, even when a loaded machine stalls a
// worker for longer than the default bound.
const noShed = time.Minute

// floodFrame is the flood's packet: UDP with 470 bytes of payload.
var floodFrame = (&craft.Endpoints{Ethernet: true}).UDP(netip.MustParseAddrPort(guestIP+":5000"),
	netip.MustParseAddrPort("198.51.100.9:53"), make([]byte, 470)).Data

// flood punts total packets of 1024 flows in batches of 256, keeping at
// most 32K unanswered, and returns every verdict once all are in.
func flood(tb testing.TB, l *loop, total int) []inspecttest.Verdict {
	tb.Helper()
	const perBatch, window, flows = 256, 32 << 10, 1024
	base := l.fast.VerdictCount()
	batch := make([]channel.PuntRecord, perBatch)
	for sent := 0; sent < total; sent += perBatch {
		for i := range batch {
			n := sent + i
			batch[i] = channel.PuntRecord{Guest: 7, Direction: channel.FromGuest, FlowID: uint64(n % flows), PacketID: uint64(n/flows + 1), Data: floodFrame}
		}
		l.fast.WaitVerdictCount(base + sent - window)
		l.fast.Punt(batch[:min(perBatch, total-sent)]...)
	}
	return l.fast.WaitVerdicts(base + total)[base:]
}

// Every punt of a flood is answered, once, in its flow's order.
func TestFloodIsAnsweredCompletely(t *testing.T) {
	l := startLoop(t, inspectd.Config{MaxStall: noShed}, chainOf(engine.NewOffloadAfter(0)))
	const total = 20_000
	got := flood(t, l, total)
	st := l.stats(total)
	if len(got) != total || st.Punts != total || st.Verdicts.Sent != total || st.Verdicts.Allow != total ||
		st.Unanswered != (inspectd.UnansweredStats{}) {
		t.Fatalf("%d verdicts for %d punts; stats %+v", len(got), total, st)
	}
	for k, vs := range inspecttest.ByFlow(got) {
		for i, v := range vs {
			if v.PacketID != uint64(i+1) {
				t.Fatalf("flow %v: verdict %d is for packet %d", k, i, v.PacketID)
			}
		}
	}
}

// blockGuest holds the packets of one guest inside the chain until
// released, so that another guest's packet is inspected meanwhile.
type blockGuest struct {
	guest   uint32
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func (b *blockGuest) Name() string                    { return "block-guest" }
func (b *blockGuest) FlowEnd(guest uint32, id uint64) {}
func (b *blockGuest) Inspect(p *engine.Packet) engine.Verdict {
	if p.Guest == b.guest {
		b.once.Do(func() { close(b.started) })
		<-b.release
	}
	return engine.Allow
}

// Two guests with the same addresses: each alert names the guest and flow
// of the packet that raised it, not whichever packet being inspected has
// the same 5-tuple.
func TestAlertGuestWithOverlappingAddresses(t *testing.T) {
	cfg := ips.DefaultConfig()
	rs := ips.LoadString(cfg, `alert udp any any -> any 53 (msg:"PALISADE TEST probe"; content:"probe"; sid:1000012; rev:1;)`)
	b := &blockGuest{guest: 1, started: make(chan struct{}), release: make(chan struct{})}
	l := startLoop(t, inspectd.Config{Workers: 2}, func(sink eve.Sink) (engine.Engine, error) {
		return engine.Chain{b, ips.New(rs, cfg, ips.WithSink(sink))}, nil
	})
	// Flow ids that put guest 1 on the first worker and guest 2 on the
	// second (the service's own shard function), so a search of the
	// workers in order meets guest 1's packet first.
	var f1, f2 uint64
	for id := uint64(100); f1 == 0 || f2 == 0; id++ {
		if f1 == 0 && inspectd.ShardOf(l.svc, 1, id) == 0 {
			f1 = id
		}
		if f2 == 0 && inspectd.ShardOf(l.svc, 2, id) == 1 {
			f2 = id
		}
	}
	ep := &craft.Endpoints{Ethernet: true}
	frame := ep.UDP(netip.MustParseAddrPort(guestIP+":5000"), netip.MustParseAddrPort("198.51.100.53:53"), []byte("a probe")).Data
	l.fast.Punt(channel.PuntRecord{Guest: 1, Direction: channel.FromGuest, FlowID: f1, PacketID: 1, Data: frame})
	<-b.started
	l.fast.Punt(channel.PuntRecord{Guest: 2, Direction: channel.FromGuest, FlowID: f2, PacketID: 1, Data: frame})
	l.fast.WaitVerdicts(1)
	evs := l.fast.WaitEvents(1)
	close(b.release)
	var rec eve.Record
	if len(evs) < 1 || json.Unmarshal(evs[0].Body, &rec) != nil || evs[0].Guest != 2 || rec.FlowID != f2 {
		t.Fatalf("guest 2's alert went out as guest %d flow %d (want flow %d): %s", evs[0].Guest, rec.FlowID, f2, evs[0].Body)
	}
	evs = l.fast.WaitEvents(2) // all events so far
	if len(evs) != 2 || json.Unmarshal(evs[1].Body, &rec) != nil || evs[1].Guest != 1 || rec.FlowID != f1 {
		t.Fatalf("guest 1's alert: %d events", len(evs))
	}
}
