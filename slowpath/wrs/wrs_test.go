package wrs

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/slowpath/engine"
	"github.com/palisade/palisade/slowpath/eve"
	"github.com/palisade/palisade/slowpath/inspect/craft"
	"github.com/palisade/palisade/slowpath/inspect/packet"
)

const feedText = `# test feed
example.test          news      10
*.example.test        malware   90
*.deep.example.test   adware    40   # more specific wildcard
example.test/login    phishing  85
example.test/login/ok news      0
http://shop.test/cart gambling  50
`

func testFeed(t *testing.T) *Feed {
	t.Helper()
	f := NewFeed()
	if err := f.Read(strings.NewReader(feedText), "t.feed"); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestLookup(t *testing.T) {
	f := testFeed(t)
	if f.Len() != 6 {
		t.Fatalf("%d entries", f.Len())
	}
	for _, c := range []struct {
		host, path string
		key        string // "" for no match
	}{
		{"example.test", "/", "example.test"},                // exact
		{"EXAMPLE.test.:8080", "/", "example.test"},          // normalized
		{"www.example.test", "/", "*.example.test"},          // wildcard
		{"a.deep.example.test", "/", "*.deep.example.test"},  // longest wildcard
		{"deep.example.test", "/", "*.example.test"},         // a wildcard does not cover its own name
		{"example.test", "/login?x=1", "example.test/login"}, // URL prefix beats the host
		{"example.test", "/login/ok/1", "example.test/login/ok"},
		{"example.test", "", "example.test"}, // TLS: no path
		{"shop.test", "/cart/42", "shop.test/cart"},
		{"shop.test", "/", ""},
		{"notexample.test", "/", ""},
	} {
		checkLookup(t, f, c.host, c.path, c.key)
	}
}

func TestPolicy(t *testing.T) {
	m := func(cat string, score int) Match { return Match{Entry: Entry{Category: cat, Score: score}} }
	p := &Policy{BlockThreshold: 80, Allow: []string{"news"}, Deny: []string{"gambling"}}
	for _, c := range []struct {
		m    Match
		want Decision
	}{
		{m("malware", 80), Block}, {m("malware", 79), Pass}, {m("news", 100), Pass}, {m("gambling", 0), Deny},
	} {
		if got := p.Decide(c.m); got != c.want {
			t.Errorf("%+v: %v, want %v", c.m, got, c.want)
		}
	}
	if (&Policy{}).Decide(m("x", DefaultBlockThreshold)) != Block || (&Policy{}).Decide(m("x", DefaultBlockThreshold-1)) != Pass {
		t.Fatal("default threshold")
	}
	ps := &Policies{Default: Policy{BlockThreshold: 90}, Guests: map[uint32]Policy{7: {BlockThreshold: 10}}}
	if ps.For(7).Decide(m("x", 50)) != Block || ps.For(8).Decide(m("x", 50)) != Pass {
		t.Fatal("per-guest policy")
	}
}

func TestFeedErrors(t *testing.T) {
	for _, c := range []struct{ text, want string }{
		{"a.test malware\n", "f:1: want \"<domain-or-url> <category> <score>\", got 2 fields"},
		{"# ok\n\na.test malware 101\n", `f:3: score "101" is not an integer from 0 to 100`},
		{"a.test Mal 5\n", `f:1: category "Mal": want lower-case letters, digits, '_' or '-'`},
		{"a..test x 5\n", `f:1: "a..test": host has an empty or over-long label`},
		{"*.a.test/x y 5\n", `f:1: "*.a.test/x": a wildcard cannot have a path`},
		{"a.test x 5\nA.TEST y 6\n", `f:2: "a.test" is already listed at f:1`},
		{"a_b.test x 5\nbad!.test x 5\n", `f:2: "bad!.test": host has character '!'`},
	} {
		f := NewFeed()
		err := f.Read(strings.NewReader(c.text), "f")
		if err == nil || err.Error() != c.want {
			t.Errorf("%q: %v, want %s", c.text, err, c.want)
		}
		if f.Len() != 0 {
			t.Errorf("%q: %d entries loaded from a bad feed", c.text, f.Len())
		}
	}
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good"), filepath.Join(dir, "bad")
	os.WriteFile(good, []byte("a.test x 5\n"), 0o600)
	os.WriteFile(bad, []byte("b.test x 5\nc.test x\n"), 0o600)
	if _, err := LoadFeeds(good, bad); err == nil || !strings.Contains(err.Error(), bad+":2:") {
		t.Fatalf("LoadFeeds: %v", err)
	}
	if _, err := LoadFeeds(good, filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestLoadPolicies(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	os.WriteFile(p, []byte("vars: {}\nweb-reputation:\n  block-threshold: 60\n  deny-categories: [gambling]\n  guests:\n    7: {block-threshold: 20}\n"), 0o600)
	ps, err := LoadPolicies(p)
	if err != nil || ps.Default.BlockThreshold != 60 || ps.Default.Deny[0] != "gambling" || ps.For(7).BlockThreshold != 20 {
		t.Fatalf("%+v %v", ps, err)
	}
	os.WriteFile(p, []byte("web-reputation:\n  allow-categories: [a]\n  deny-categories: [a]\n"), 0o600)
	if _, err := LoadPolicies(p); err == nil || !strings.Contains(err.Error(), `category "a" is both allowed and denied`) {
		t.Fatalf("%v", err)
	}
}

type run struct {
	e        *Engine
	sink     *eve.Memory
	verdicts []engine.Verdict
}

func inspect(t *testing.T, tap bool, fs ...craft.Frame) *run {
	t.Helper()
	r := &run{sink: &eve.Memory{}}
	r.e = New(testFeed(t), &Policies{Default: Policy{BlockThreshold: 80}}, WithSink(r.sink))
	for _, f := range fs {
		r.verdicts = append(r.verdicts, r.e.Inspect(&engine.Packet{Guest: 1, Link: engine.LinkRaw, Data: f.Data, Time: f.Time, Tap: tap}))
	}
	return r
}

func TestHTTPBlockPage(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		client, server := "10.0.0.5:40000", "192.0.2.10:80"
		if v6 {
			client, server = "[2001:db8::5]:40000", "[2001:db8::10]:80"
		}
		e := &craft.Endpoints{}
		c := e.NewTCP(client, server)
		req := "GET /index.html HTTP/1.1\r\nHost: www.example.test\r\nUser-Agent: ua\r\n\r\n"
		fs := craft.Seq(c.Handshake(), c.SendChunks(true, []byte(req), 20))
		last := fs[len(fs)-1]
		r := inspect(t, false, append(fs, c.Send(true, []byte("more")))...)
		v := r.verdicts[len(fs)-1]
		if v.Action != channel.ActionReject || v.Flow != channel.FlowBlock || v.Reply == nil {
			t.Fatalf("v6=%v: verdict %+v", v6, v)
		}
		if later := r.verdicts[len(fs)]; later.Action != channel.ActionReject || later.Reply != nil {
			t.Fatalf("later packet: %+v", later)
		}
		for i, vv := range r.verdicts[:len(fs)-1] {
			if vv.Action != channel.ActionAllow || vv.Flow != channel.FlowKeepInspecting {
				t.Fatalf("packet %d judged early: %+v", i, vv)
			}
		}
		checkReply(t, v.Reply, last, v6)
		recs := r.sink.Records()
		if len(recs) != 1 {
			t.Fatalf("%d alerts", len(recs))
		}
		a := recs[0]
		if a.Alert.SignatureID != SIDHTTPBlocked || a.Alert.Action != "blocked" || a.Alert.Category != "Web Reputation: malware" ||
			a.Alert.Severity != 1 || a.HTTP.Hostname != "www.example.test" || a.HTTP.URL != "/index.html" || a.AppProto != "http" {
			t.Fatalf("alert %+v %+v %+v", a, a.Alert, a.HTTP)
		}
	}
}

// checkReply parses the block page back: from the server, sequenced where
// the client expects, acknowledging the request, checksums right.
func checkReply(t *testing.T, reply []byte, reqFrame craft.Frame, v6 bool) {
	t.Helper()
	var req packet.Packet
	if err := packet.Decode(reqFrame.Data, false, &req); err != nil {
		t.Fatal(err)
	}
	first := layers.LayerTypeIPv4
	if v6 {
		first = layers.LayerTypeIPv6
	}
	pkt := gopacket.NewPacket(reply, first, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("reply does not decode: %v", el.Error())
	}
	tcp := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if tcp.Seq != req.Ack || tcp.Ack != req.Seq+uint32(len(req.Payload)) || !tcp.FIN || !tcp.ACK || !tcp.PSH {
		t.Fatalf("reply seq %d ack %d flags %+v; request seq %d len %d ack %d", tcp.Seq, tcp.Ack, tcp, req.Seq, len(req.Payload), req.Ack)
	}
	if uint16(tcp.SrcPort) != req.DstPort || uint16(tcp.DstPort) != req.SrcPort {
		t.Fatalf("ports %d→%d", tcp.SrcPort, tcp.DstPort)
	}
	var p packet.Packet
	if err := packet.Decode(reply, false, &p); err != nil {
		t.Fatal(err)
	}
	if p.Src != req.Dst || p.Dst != req.Src {
		t.Fatalf("addresses %v→%v", p.Src, p.Dst)
	}
	if err := p.VerifyChecksums(); err != nil {
		t.Fatalf("checksums: %v", err)
	}
	body := string(tcp.Payload)
	if !strings.HasPrefix(body, "HTTP/1.1 403 Forbidden\r\n") || !strings.Contains(body, "\r\nConnection: close\r\n") || !strings.Contains(body, "www.example.test") {
		t.Fatalf("page %q", body)
	}
	head, content, _ := strings.Cut(body, "\r\n\r\n")
	if !strings.Contains(head, "Content-Length: "+strconv.Itoa(len(content))) {
		t.Fatalf("content length wrong: %q", head)
	}
}

func TestHTTPAllowedAndPipelined(t *testing.T) {
	e := &craft.Endpoints{}
	c := e.NewTCP("10.0.0.5:40000", "192.0.2.10:80")
	// Host news (score 10): allowed; then a path on the same host the feed
	// rates 85 (phishing), pipelined in the same segment.
	reqs := "GET / HTTP/1.1\r\nHost: example.test\r\n\r\nGET /login HTTP/1.1\r\nHost: example.test\r\n\r\n"
	r := inspect(t, false, craft.Seq(c.Handshake(), c.Send(true, []byte(reqs)))...)
	if v := r.verdicts[3]; v.Action != channel.ActionReject {
		t.Fatalf("verdict %+v", v)
	}
	if recs := r.sink.Records(); len(recs) != 1 || recs[0].HTTP.URL != "/login" {
		t.Fatalf("records %+v", recs)
	}
	// Below the threshold: nothing.
	c2 := e.NewTCP("10.0.0.5:40001", "192.0.2.10:80")
	r = inspect(t, false, craft.Seq(c2.Handshake(), c2.Send(true, []byte("GET /x HTTP/1.1\r\nHost: a.deep.example.test\r\n\r\n")))...)
	if v := r.verdicts[3]; v.Action != channel.ActionAllow || len(r.sink.Records()) != 0 {
		t.Fatalf("adware at 40 blocked: %+v", v)
	}
}

func TestTLSSNISplitClientHello(t *testing.T) {
	e := &craft.Endpoints{}
	c := e.NewTCP("10.0.0.5:40000", "192.0.2.10:443")
	hello := craft.ClientHello("cdn.example.test")
	fs := craft.Seq(c.Handshake(), c.Send(true, hello[:50]), c.Send(true, hello[50:]))
	r := inspect(t, false, fs...)
	if v := r.verdicts[3]; v.Action != channel.ActionAllow || v.Flow != channel.FlowKeepInspecting {
		t.Fatalf("first half judged: %+v", v)
	}
	if v := r.verdicts[4]; v.Action != channel.ActionReject || v.Flow != channel.FlowBlock || v.Reply != nil {
		t.Fatalf("verdict %+v", v)
	}
	recs := r.sink.Records()
	if len(recs) != 1 || recs[0].TLS == nil || recs[0].TLS.SNI != "cdn.example.test" || recs[0].Alert.SignatureID != SIDTLSBlocked || recs[0].HTTP != nil {
		t.Fatalf("records %+v", recs)
	}
	// Tap mode: the same connection only alerts, and the flow is offloaded.
	r = inspect(t, true, fs...)
	if v := r.verdicts[4]; v.Action != channel.ActionAllow || v.Flow != channel.FlowOffload || r.sink.Records()[0].Alert.Action != "allowed" {
		t.Fatalf("tap verdict %+v", v)
	}
	// An unlisted name is offloaded at once.
	c2 := e.NewTCP("10.0.0.5:40001", "192.0.2.10:443")
	r = inspect(t, false, craft.Seq(c2.Handshake(), c2.Send(true, craft.ClientHello("unlisted.test")))...)
	if v := r.verdicts[3]; v.Action != channel.ActionAllow || v.Flow != channel.FlowOffload || len(r.sink.Records()) != 0 {
		t.Fatalf("verdict %+v", v)
	}
}

// A URL entry's path is compared as sent: only its host is case-folded.
func TestURLEntryPathKeepsCase(t *testing.T) {
	f := NewFeed()
	if err := f.Read(strings.NewReader("Example.TEST/Login/Admin phishing 90\nHTTP://Shop.test/Cart gambling 50\n"), "f"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		host, path, key string
	}{
		{"example.test", "/Login/Admin?x=1", "example.test/Login/Admin"},
		{"EXAMPLE.test", "/Login/Admin", "example.test/Login/Admin"},
		{"example.test", "/login/admin", ""},
		{"shop.test", "/Cart", "shop.test/Cart"},
	} {
		checkLookup(t, f, c.host, c.path, c.key)
	}
	if err := NewFeed().Read(strings.NewReader("a.test/X x 5\nA.test/X y 6\n"), "f"); err == nil {
		t.Fatal("the same URL with a differently cased host accepted twice")
	}
}

// A guest's policy overrides only what it sets; the rest comes from the
// default policy.
func TestGuestPolicyMergesDefault(t *testing.T) {
	m := func(cat string, score int) Match { return Match{Entry: Entry{Category: cat, Score: score}} }
	ps := &Policies{
		Default: Policy{BlockThreshold: 60, Allow: []string{"news"}, Deny: []string{"gambling"}},
		Guests: map[uint32]Policy{
			7:  {BlockThreshold: 20},
			8:  {Deny: []string{"news"}},
			9:  {Allow: []string{"gambling"}},
			10: {Deny: []string{}},
		},
	}
	for _, c := range []struct {
		guest uint32
		m     Match
		want  Decision
	}{
		{7, m("gambling", 0), Deny}, {7, m("news", 100), Pass}, {7, m("x", 20), Block},
		{8, m("news", 0), Deny}, {8, m("gambling", 0), Pass}, {8, m("x", 60), Block}, {8, m("x", 59), Pass},
		{9, m("gambling", 100), Pass}, {9, m("news", 100), Block}, // its allow list replaces the default's
		{10, m("gambling", 0), Pass}, {10, m("news", 100), Pass},
		{11, m("gambling", 0), Deny},
	} {
		if got := ps.For(c.guest).Decide(c.m); got != c.want {
			t.Errorf("guest %d, %+v: %v, want %v", c.guest, c.m, got, c.want)
		}
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	os.WriteFile(p, []byte("web-reputation:\n  deny-categories: [gambling]\n  guests:\n    7: {block-threshold: 20}\n"), 0o600)
	loaded, err := LoadPolicies(p)
	if err != nil || loaded.For(7).Decide(m("gambling", 0)) != Deny {
		t.Fatalf("loaded guest policy dropped the default deny list: %+v %v", loaded.For(7), err)
	}
}

// checkLookup checks that host and path find key ("" for no match).
func checkLookup(t *testing.T, f *Feed, host, path, key string) {
	t.Helper()
	m, ok := f.Lookup(host, path)
	if ok != (key != "") || m.Key != key {
		t.Errorf("Lookup(%q, %q) = %q %v, want %q", host, path, m.Key, ok, key)
	}
}
