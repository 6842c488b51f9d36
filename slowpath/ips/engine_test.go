package ips

import (
	"bytes"
	"fmt"
	"math/rand"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/slowpath/engine"
	"github.com/palisade/palisade/slowpath/eve"
	"github.com/palisade/palisade/slowpath/inspect/craft"
	"github.com/palisade/palisade/slowpath/inspect/packet"
	"github.com/palisade/palisade/slowpath/ips/rule"
)

func TestAlertFieldsAndSeverity(t *testing.T) {
	h := newHarness(t, `
alert tcp any any -> any any (msg:"classed"; content:"a1"; classtype:trojan-activity; reference:url,x.test; metadata:k v; sid:10; rev:4;)
alert tcp any any -> any any (msg:"override"; content:"a1"; classtype:trojan-activity; priority:3; sid:11;)
alert tcp any any -> any any (msg:"plain"; content:"a1"; sid:12;)`)
	h.run(tcpTalk("a1", "")...)
	recs := h.sink.Records()
	if len(recs) != 3 {
		t.Fatalf("%d records", len(recs))
	}
	for i, want := range []eve.Alert{
		{Action: "allowed", GID: 1, SignatureID: 10, Rev: 4, Signature: "classed", Category: "A Network Trojan was detected", Severity: 1},
		{Action: "allowed", GID: 1, SignatureID: 11, Signature: "override", Category: "A Network Trojan was detected", Severity: 3},
		{Action: "allowed", GID: 1, SignatureID: 12, Signature: "plain", Severity: 3},
	} {
		if *recs[i].Alert != want {
			t.Errorf("alert %d = %+v, want %+v", i, *recs[i].Alert, want)
		}
	}
	r := recs[0]
	if r.EventType != "alert" || r.SrcIP != "10.0.0.5" || r.SrcPort != 40000 || r.DestIP != "192.0.2.10" || r.DestPort != 8000 || r.Proto != "TCP" ||
		r.Timestamp != "2026-11-21T05:36:00.003000+0000" || r.FlowID == 0 {
		t.Errorf("record %+v", r)
	}
}

func TestActionsInlineAndTap(t *testing.T) {
	for _, c := range []struct {
		rule   string
		tap    bool
		action channel.Action
		flow   channel.FlowDecision
		eve    string
	}{
		{`drop tcp any any -> any any (content:"evil"; sid:1;)`, false, channel.ActionDrop, channel.FlowBlock, "blocked"},
		{`reject tcp any any -> any any (content:"evil"; sid:1;)`, false, channel.ActionReject, channel.FlowBlock, "blocked"},
		{`alert tcp any any -> any any (content:"evil"; sid:1;)`, false, channel.ActionAllow, channel.FlowKeepInspecting, "allowed"},
		{`drop tcp any any -> any any (content:"evil"; sid:1;)`, true, channel.ActionAllow, channel.FlowKeepInspecting, "allowed"},
		{`reject tcp any any -> any any (content:"evil"; sid:1;)`, true, channel.ActionAllow, channel.FlowKeepInspecting, "allowed"},
	} {
		h := newHarness(t, c.rule)
		h.tap = c.tap
		h.run(tcpTalk("evil", "")...)
		v := h.verdicts[3]
		recs := h.sink.Records()
		if v.Action != c.action || v.Flow != c.flow || len(recs) != 1 || recs[0].Alert.Action != c.eve {
			t.Errorf("%s tap=%v: verdict %+v, records %d", c.rule, c.tap, v, len(recs))
		}
	}
}

func TestPassStopsThePacket(t *testing.T) {
	rules := `
drop tcp any any -> any any (msg:"drop"; content:"evil"; sid:1;)
pass tcp any any -> any any (msg:"trusted"; content:"trusted"; sid:2;)
alert tcp any any -> any any (msg:"alert"; content:"evil"; sid:3;)`
	h := newHarness(t, rules)
	h.run(tcpTalk("evil but trusted", "")...)
	if len(h.sink.Records()) != 0 || h.verdicts[3].Action != channel.ActionAllow || h.verdicts[3].Flow != channel.FlowKeepInspecting {
		t.Fatalf("pass did not stop the packet: %v %+v", h.sids(), h.verdicts[3])
	}
	h = newHarness(t, rules)
	h.run(tcpTalk("evil", "")...)
	if got := h.sids(); !slices.Equal(got, []uint32{1, 3}) || h.verdicts[3].Action != channel.ActionDrop {
		t.Fatalf("without pass: %v %+v", got, h.verdicts[3])
	}
}

// After a drop, the flow's later packets are dropped without inspection.
func TestBlockedFlowDropsLaterPackets(t *testing.T) {
	h := newHarness(t, `drop tcp any any -> any any (content:"evil"; sid:1;)
alert tcp any any -> any any (content:"later"; sid:2;)`)
	e := &craft.Endpoints{}
	c := e.NewTCP("10.0.0.5:40000", "192.0.2.10:8000")
	h.run(craft.Seq(c.Handshake(), c.Send(true, []byte("evil")), c.Send(true, []byte("later")), c.Send(false, []byte("later")))...)
	for i, v := range h.verdicts[3:] {
		if v.Action != channel.ActionDrop || v.Flow != channel.FlowBlock {
			t.Errorf("packet %d: %+v", i+4, v)
		}
	}
	if got := h.sids(); !slices.Equal(got, []uint32{1}) {
		t.Fatalf("later packets were inspected: %v", got)
	}
	if s := h.e.Stats(); s.Blocked != 3 || s.Alerts != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestContentAcrossSegments(t *testing.T) {
	h := newHarness(t, `alert tcp any any -> any any (content:"attack-string"; sid:1;)
alert tcp any any -> any any (content:"first"; content:"second"; distance:0; sid:2;)`)
	e := &craft.Endpoints{}
	c := e.NewTCP("10.0.0.5:40000", "192.0.2.10:8000")
	h.run(craft.Seq(c.Handshake(), c.SendChunks(true, []byte("xx attack-string yy first"), 5), c.Send(true, []byte(" then second")))...)
	if got := h.sids(); !slices.Equal(got, []uint32{1, 2}) {
		t.Fatalf("alerts %v", got)
	}
	// The alert for sid 1 comes with the segment that completes it.
	if r := h.sink.Records()[0]; r.Timestamp != craft.Epoch.Add(6*time.Millisecond).UTC().Format(eve.TimeFormat) {
		t.Fatalf("alert at %s", r.Timestamp)
	}
}

// Out-of-order segments are reassembled; overlaps keep the first-seen
// bytes; retransmissions raise no second alert.
func TestOutOfOrderOverlapRetransmit(t *testing.T) {
	rules := `alert tcp any any -> any any (msg:"orig"; content:"pay-load"; sid:1;)
alert tcp any any -> any any (msg:"overlap"; content:"pay-XXXX"; sid:2;)`
	h := newHarness(t, rules)
	e := &craft.Endpoints{}
	c := e.NewTCP("10.0.0.5:40000", "192.0.2.10:8000")
	s := c.CSeq + 1
	hs := c.Handshake()
	seg := func(off int, data string) craft.Frame {
		return c.Segment(true, s+uint32(off), c.SSeq, packet.PSH|packet.ACK, []byte(data))
	}
	h.run(craft.Seq(hs,
		seg(4, "load"),  // early
		seg(4, "XXXX"),  // overlapping rewrite of buffered bytes: loses
		seg(0, "pay-"),  // fills the gap: "pay-load"
		seg(0, "pay-"),  // retransmission
		seg(4, "XXXX!"), // overlaps delivered data; only "!" is new
	)...)
	if got := h.sids(); !slices.Equal(got, []uint32{1}) {
		t.Fatalf("alerts %v, want only the first-seen bytes to match, once", got)
	}
	f, _ := h.e.flows.Get(1, 0, hs[0].Decoded(), time.Time{})
	if got := string(f.Stream(0).Data()); got != "pay-load!" {
		t.Fatalf("stream %q", got)
	}
}

func TestHTTPPipelining(t *testing.T) {
	h := newHarness(t, `alert http any any -> any any (msg:"admin"; http.uri; content:"/admin"; sid:1;)
alert http any any -> any any (msg:"post"; http.method; content:"POST"; sid:2;)`)
	reqs := "GET /index HTTP/1.1\r\nHost: a\r\n\r\n" +
		"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\nGET /admin x" + // body, not a request
		"GET /admin/panel HTTP/1.1\r\nHost: a\r\n\r\n"
	e := &craft.Endpoints{}
	c := e.NewTCP("10.0.0.5:40000", "192.0.2.10:80")
	h.run(craft.Seq(c.Handshake(), c.SendChunks(true, []byte(reqs), 30))...)
	if got := h.sids(); !slices.Equal(got, []uint32{2, 1}) {
		t.Fatalf("alerts %v", got)
	}
	if u := h.sink.Records()[1].HTTP; u == nil || u.URL != "/admin/panel" || u.Method != "GET" || u.Hostname != "a" || u.Protocol != "HTTP/1.1" {
		t.Fatalf("http object %+v", u)
	}
}

func TestThreshold(t *testing.T) {
	// Eight matching packets from one source, one second apart.
	run := func(opt string) []uint32 {
		h := newHarness(t, `alert udp any any -> any any (content:"x"; `+opt+` sid:1;)`)
		e := &craft.Endpoints{Clock: &craft.Clock{Now: craft.Epoch, Step: time.Second}}
		var fs []craft.Frame
		for i := 0; i < 8; i++ {
			fs = append(fs, e.UDP(netip.MustParseAddrPort("10.0.0.5:5000"), netip.MustParseAddrPort("192.0.2.10:53"), []byte("x")))
		}
		h.run(fs...)
		var pkts []uint32
		for _, r := range h.sink.Records() {
			ts, _ := time.Parse(eve.TimeFormat, r.Timestamp)
			pkts = append(pkts, uint32(ts.Sub(craft.Epoch)/time.Second)+1)
		}
		return pkts
	}
	for _, c := range []struct {
		opt  string
		want []uint32 // which packets alert
	}{
		{"", []uint32{1, 2, 3, 4, 5, 6, 7, 8}},
		{"threshold:type limit, track by_src, count 2, seconds 60;", []uint32{1, 2}},
		{"threshold:type limit, track by_src, count 2, seconds 3;", []uint32{1, 2, 4, 5, 7, 8}},
		{"threshold:type threshold, track by_src, count 3, seconds 60;", []uint32{3, 6}},
		{"threshold:type both, track by_dst, count 3, seconds 60;", []uint32{3}},
		{"detection_filter:track by_src, count 5, seconds 60;", []uint32{6, 7, 8}},
		{"detection_filter:track by_src, count 2, seconds 4;", []uint32{3, 4, 7, 8}},
	} {
		if got := run(c.opt); !slices.Equal(got, c.want) {
			t.Errorf("%q: alerts on packets %v, want %v", c.opt, got, c.want)
		}
	}
}

// A drop rule under a threshold still drops what it does not report.
func TestThresholdDoesNotStopDrops(t *testing.T) {
	h := newHarness(t, `drop udp any any -> any any (content:"x"; threshold:type limit, track by_src, count 1, seconds 60; sid:1;)`)
	h.run(append(udpTo("192.0.2.10:53", "x"), udpTo("192.0.2.10:54", "x")...)...)
	if len(h.sink.Records()) != 1 || h.verdicts[1].Action != channel.ActionDrop {
		t.Fatalf("records %d verdict %+v", len(h.sink.Records()), h.verdicts[1])
	}
}

func TestOffloadAfterTLSHandshake(t *testing.T) {
	h := newHarness(t, `alert tcp any any -> any any (content:"never-here"; sid:1;)`)
	e := &craft.Endpoints{}
	c := e.NewTCP("10.0.0.5:40000", "192.0.2.10:443")
	h.run(craft.Seq(c.Handshake(), c.Send(true, craft.ClientHello("a.test")), c.Send(false, craft.ServerHello()),
		c.Send(true, craft.AppData(30)), c.Send(false, craft.AppData(30)))...)
	want := []channel.FlowDecision{0, 0, 0, 0, 0, channel.FlowOffload, channel.FlowOffload}
	for i, v := range h.verdicts {
		if v.Flow != want[i] {
			t.Fatalf("packet %d: %v, want %v", i+1, v.Flow, want[i])
		}
	}
}

func TestOffloadAtStreamDepth(t *testing.T) {
	h := newHarness(t, `alert tcp any any -> any any (content:"tail"; sid:1;)`, WithStreamDepth(100))
	e := &craft.Endpoints{}
	c := e.NewTCP("10.0.0.5:40000", "192.0.2.10:8000")
	h.run(craft.Seq(c.Handshake(), c.Send(true, bytes.Repeat([]byte("a"), 60)), c.Send(true, bytes.Repeat([]byte("b"), 60)), c.Send(true, []byte("tail")))...)
	if h.verdicts[3].Flow != channel.FlowKeepInspecting || h.verdicts[4].Flow != channel.FlowOffload || h.verdicts[5].Flow != channel.FlowOffload {
		t.Fatalf("verdicts %+v", h.verdicts)
	}
	if len(h.sink.Records()) != 0 {
		t.Fatal("inspected past the depth")
	}
}

func TestLoadRefusals(t *testing.T) {
	rs := LoadString(nil, `alert tcp $NOPE any -> any any (sid:1;)
alert tcp any any -> any any (classtype:no-such-class; sid:2;)
alert tcp any any -> any any (content:"a"; sid:3;)
alert tcp any any -> any any (content:"b"; sid:3;)
alert tcp any any -> any any (content:"c"; dns.query; sid:4;)`)
	var got []string
	for _, e := range rs.Refused() {
		got = append(got, e.Error())
	}
	want := []string{
		"line 1: sid 1: undefined address variable $NOPE",
		`line 2: sid 2: unknown classtype "no-such-class"`,
		"line 4: sid 3: duplicate sid",
		`line 5: sid 4: unsupported keyword "dns.query"`,
	}
	if !slices.Equal(got, want) || rs.Stats() != (LoadStats{Loaded: 1, Refused: 4}) {
		t.Fatalf("refused %q, stats %+v", got, rs.Stats())
	}
}

// The prefilter never loses a rule whose fast pattern occurs, whatever the
// case and bytes.
func TestPrefilterAgainstNaive(t *testing.T) {
	r := rand.New(rand.NewSource(7))
	alphabet := []byte("abcABC\x00\xff\xc3-")
	var rules strings.Builder
	var pats [][]byte
	var nocase []bool
	for i := 0; i < 300; i++ {
		p := make([]byte, 1+r.Intn(4))
		for j := range p {
			p[j] = alphabet[r.Intn(len(alphabet))]
		}
		nc := r.Intn(2) == 0
		pats, nocase = append(pats, p), append(nocase, nc)
		mod := ""
		if nc {
			mod = "nocase;"
		}
		fmt.Fprintf(&rules, "alert udp any any -> any any (content:\"|%x|\"; %s sid:%d;)\n", p, mod, i+1)
	}
	rs := LoadString(nil, rules.String())
	for round := 0; round < 200; round++ {
		data := make([]byte, r.Intn(40))
		for j := range data {
			data[j] = alphabet[r.Intn(len(alphabet))]
		}
		got := map[int32]bool{}
		if bp := rs.pre[atPacket].buffers[rule.BufPayload]; bp != nil {
			bp.scan(data, 0, func(i int32) { got[i] = true })
		}
		for i, p := range pats {
			found := bytes.Contains(data, p) || nocase[i] && indexFold(data, p) >= 0
			if found && !got[int32(i)] {
				t.Fatalf("data %q: rule %d (%q nocase=%v) not a candidate", data, i+1, p, nocase[i])
			}
		}
	}
}

// Flows inspected from many goroutines at once (run with -race).
func TestConcurrentFlows(t *testing.T) {
	rs := LoadString(nil, `alert tcp any any -> any any (content:"needle"; sid:1;)`)
	sink := &eve.Memory{}
	e := New(rs, nil, WithSink(sink))
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			ep := &craft.Endpoints{}
			c := ep.NewTCP(fmt.Sprintf("10.0.%d.1:%d", g, 1000+g), "192.0.2.10:8000")
			for _, f := range craft.Seq(c.Handshake(), c.SendChunks(true, []byte("hay hay needle hay"), 3)) {
				e.Inspect(&engine.Packet{Guest: uint32(g % 2), Link: engine.LinkRaw, Data: f.Data, Time: f.Time, FlowID: uint64(g + 1)})
			}
			e.FlowEnd(uint32(g%2), uint64(g+1))
		}(g)
	}
	wg.Wait()
	if n := len(sink.Records()); n != 8 {
		t.Fatalf("%d alerts, want 8", n)
	}
	if n := e.flows.Len(); n != 0 {
		t.Fatalf("%d flows left after FlowEnd", n)
	}
}

func TestChecksumValidation(t *testing.T) {
	good := udpTo("192.0.2.10:53", "evil")[0]
	bad := craft.Frame{Time: good.Time, Data: append([]byte(nil), good.Data...)}
	bad.Data[len(bad.Data)-1] ^= 0x20 // "evil" → "eviL": the UDP checksum no longer holds
	for _, c := range []struct {
		verify bool
		frame  craft.Frame
		alerts int
	}{{false, bad, 1}, {true, bad, 0}, {true, good, 1}} {
		h := newHarness(t, `alert udp any any -> any any (content:"evil"; nocase; sid:1;)`, WithChecksumValidation(c.verify))
		h.run(c.frame)
		if n := len(h.sink.Records()); n != c.alerts {
			t.Errorf("verify=%v: %d alerts, want %d", c.verify, n, c.alerts)
		}
	}
}

// HTTP parse errors do not turn HTTP inspection off.
func TestHTTPParseErrorsKeepInspecting(t *testing.T) {
	rules := `alert http any any -> any any (msg:"admin"; http.uri; content:"/admin"; sid:1;)`
	for _, c := range []struct {
		name      string
		req, resp string
		want      int
	}{
		{"bad Content-Length", "POST /admin HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", "", 1},
		{"header line without a colon", "GET /admin HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n", "", 1},
	} {
		h := newHarness(t, rules)
		h.run(httpSession(c.req, c.resp)...)
		if got := len(h.sids()); got != c.want {
			t.Errorf("%s: %d alerts, want %d", c.name, got, c.want)
		}
	}
	// A garbage response stops response parsing only: the next request
	// is still inspected.
	h := newHarness(t, rules)
	e := &craft.Endpoints{}
	c := e.NewTCP("10.0.0.5:40000", "192.0.2.10:80")
	h.run(craft.Seq(c.Handshake(), c.Send(true, []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n")), c.Send(false, []byte("garbage\r\n\r\n")),
		c.Send(true, []byte("GET /admin HTTP/1.1\r\nHost: a\r\n\r\n")))...)
	if got := h.sids(); !slices.Equal(got, []uint32{1}) {
		t.Fatalf("after a garbage response: alerts %v", got)
	}
}

// http.uri removes dot segments and separators as Suricata's normalized
// URI does (libhtp: backslashes are separators, runs of them compressed,
// then RFC 3986 remove_dot_segments), after percent-decoding.
func TestHTTPURINormalization(t *testing.T) {
	for uri, want := range map[string]string{
		"/cgi-bin/./test.cgi":              "/cgi-bin/test.cgi",
		"/cgi-bin/x/../test.cgi":           "/cgi-bin/test.cgi",
		"/cgi-bin//test.cgi":               "/cgi-bin/test.cgi",
		"/cgi-bin\\test.cgi":               "/cgi-bin/test.cgi",
		"/cgi-bin/%2e/test.cgi":            "/cgi-bin/test.cgi",
		"/cgi-bin/%2E%2E/cgi-bin/test.cgi": "/cgi-bin/test.cgi",
		"/a/../../cgi-bin/test.cgi":        "/cgi-bin/test.cgi",
		"/cgi-bin/test.cgi?x=/./y":         "/cgi-bin/test.cgi?x=/./y",
		"/cgi-bin/test.cgi/.":              "/cgi-bin/test.cgi/",
		"/%41/b%3fc?d%20e":                 "/A/b?c?d e",
	} {
		if got := string(NormalizeURI([]byte(uri))); got != want {
			t.Errorf("%q: %q, want %q", uri, got, want)
		}
	}
	h := newHarness(t, `alert http any any -> any any (http.uri; content:"/cgi-bin/test.cgi"; sid:1;)`)
	h.run(get("/cgi-bin/./test.cgi", "")...)
	if got := h.sids(); !slices.Equal(got, []uint32{1}) {
		t.Fatalf("dot segment evaded http.uri: alerts %v", got)
	}
}

// Threshold buckets end with their own period, not after an hour, and the
// table of them is bounded.
func TestThresholdBuckets(t *testing.T) {
	r := newRates()
	lim := &rule.Rate{Type: rule.Limit, Track: rule.BySrc, Count: 1, Seconds: 7200}
	src, dst := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	t0 := craft.Epoch
	if !r.threshold(1, lim, src, dst, t0) {
		t.Fatal("first event")
	}
	// Other traffic makes the table sweep after more than an hour: a
	// two-hour period must survive it.
	r.threshold(2, &rule.Rate{Type: rule.Limit, Track: rule.BySrc, Count: 1, Seconds: 1}, dst, src, t0.Add(90*time.Minute))
	if r.threshold(1, lim, src, dst, t0.Add(100*time.Minute)) {
		t.Fatal("a limit of 1 per two hours alerted twice within them: the bucket was swept after an hour")
	}
	// Short periods are swept once over, so buckets do not pile up.
	short := &rule.Rate{Type: rule.Limit, Track: rule.BySrc, Count: 1, Seconds: 1}
	for i := 0; i < 1000; i++ {
		a := netip.AddrFrom4([4]byte{192, 0, 2 + byte(i>>8), byte(i)})
		r.threshold(3, short, a, dst, t0.Add(time.Duration(i)*time.Second))
	}
	if n := r.len(); n > 100 {
		t.Fatalf("%d buckets kept for 1 s periods over 1000 s", n)
	}
	// The table is capped; what does not fit is counted.
	big := &rule.Rate{Type: rule.Limit, Track: rule.BySrc, Count: 1, Seconds: 3600}
	for i := 0; i < maxRateBuckets+10; i++ {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if !r.threshold(4, big, a, dst, t0.Add(2000*time.Second)) {
			t.Fatalf("event %d of a new address did not alert", i)
		}
	}
	if n := r.len(); n > maxRateBuckets {
		t.Fatalf("%d buckets, cap %d", n, maxRateBuckets)
	}
	if r.overflow() == 0 {
		t.Fatal("overflow not counted")
	}
}

// http.host is normalized as web reputation's lookups: trailing dots go too.
func TestHTTPHostTrailingDot(t *testing.T) {
	h := newHarness(t, `alert http any any -> any any (pcre:"/^www\.example\.test$/W"; sid:1;)`)
	h.run(httpSession("GET / HTTP/1.1\r\nHost: WWW.Example.test.:8080\r\n\r\n", "")...)
	if got := h.sids(); !slices.Equal(got, []uint32{1}) {
		t.Fatalf("alerts %v", got)
	}
}
