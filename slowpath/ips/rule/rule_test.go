package rule

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
)

func mustParse(t *testing.T, text string) *Rule {
	t.Helper()
	r, err := Parse(text)
	if err != nil {
		t.Fatalf("Parse(%q): %v", text, err)
	}
	return r
}

func TestParseHeaderAndMeta(t *testing.T) {
	r := mustParse(t, `drop tcp [10.0.0.0/8, !10.1.0.0/16] any <> $HOME_NET [80,443,8000:8080] (msg:"a \"quoted\"\; msg\\"; `+
		`sid:42; rev:7; classtype:trojan-activity; priority:2; reference:url,example.test/x; reference:cve,2024-1; metadata:former_category MALWARE, created_at 2024;)`)
	if r.Action != Drop || r.Proto != ProtoTCP || !r.Bidirectional || r.SID != 42 || r.Rev != 7 || r.Priority != 2 {
		t.Fatalf("%+v", r)
	}
	if r.Msg != `a "quoted"; msg\` {
		t.Fatalf("msg %q", r.Msg)
	}
	if r.Src != "[10.0.0.0/8,!10.1.0.0/16]" || r.DstPorts != "[80,443,8000:8080]" {
		t.Fatalf("src %q dport %q", r.Src, r.DstPorts)
	}
	if len(r.References) != 2 || r.References[1] != (Reference{"cve", "2024-1"}) || len(r.Metadata) != 2 || r.Metadata[1] != "created_at 2024" {
		t.Fatalf("refs %v meta %v", r.References, r.Metadata)
	}
}

func TestParseContentModifiers(t *testing.T) {
	r := mustParse(t, `alert tcp any any -> any any (content:"GET|20|/"; depth:5; offset:0; content:!"x|3b|y\;z"; nocase; distance:1; within:10; `+
		`content:"abc"; fast_pattern; http_uri; sid:1;)`)
	if len(r.Matches) != 3 {
		t.Fatalf("%d matches", len(r.Matches))
	}
	c0, c1, c2 := r.Matches[0].Content, r.Matches[1].Content, r.Matches[2].Content
	if string(c0.Pattern) != "GET /" || c0.Depth != 5 || !c0.HasOffset || c0.Relative {
		t.Fatalf("c0 %+v", c0)
	}
	if string(c1.Pattern) != "x;y;z" || !c1.Negated || !c1.Nocase || c1.Distance != 1 || c1.Within != 10 || !c1.Relative {
		t.Fatalf("c1 %+v", c1)
	}
	if !c2.FastPattern || r.Matches[2].Buffer != BufURI || r.Matches[1].Buffer != BufPayload {
		t.Fatalf("c2 %+v in %v", c2, r.Matches[2].Buffer)
	}
}

func TestStickyBuffers(t *testing.T) {
	r := mustParse(t, `alert http any any -> any any (http.method; content:"POST"; http.uri; content:"/login"; pcre:"/user=\w+/R"; `+
		`http.host; content:"example.test"; http.user_agent; content:"curl"; http.header; content:"X-Evil"; pkt_data; content:"raw"; sid:2;)`)
	want := []Buffer{BufMethod, BufURI, BufURI, BufHost, BufUserAgent, BufHeader, BufPayload}
	for i, m := range r.Matches {
		if m.Buffer != want[i] {
			t.Fatalf("match %d in %v, want %v", i, m.Buffer, want[i])
		}
	}
	if !r.Matches[2].PCRE.Relative {
		t.Fatal("R flag lost")
	}
}

func TestFlowDsizeThreshold(t *testing.T) {
	r := mustParse(t, `alert udp any any -> any 53 (flow:to_server,established; dsize:10<>20; threshold:type both, track by_dst, count 3, seconds 60; `+
		`detection_filter:track by_src, count 5, seconds 10; sid:3;)`)
	if r.Flow.Dir != FlowToServer || !r.Flow.Established {
		t.Fatalf("flow %+v", r.Flow)
	}
	if r.Dsize.Op != "<>" || !r.Dsize.Matches(15) || r.Dsize.Matches(10) || r.Dsize.Matches(20) {
		t.Fatalf("dsize %+v", r.Dsize)
	}
	if *r.Threshold != (Rate{Type: Both, Track: ByDst, Count: 3, Seconds: 60}) || *r.DetectionFilter != (Rate{Track: BySrc, Count: 5, Seconds: 10}) {
		t.Fatalf("threshold %+v filter %+v", r.Threshold, r.DetectionFilter)
	}
	for _, c := range []struct {
		expr string
		n    int
		want bool
	}{{"5", 5, true}, {"5", 6, false}, {"!5", 6, true}, {"<5", 4, true}, {"<5", 5, false}, {"<=5", 5, true}, {">5", 6, true}, {">=5", 5, true}, {">5", 5, false}} {
		d, err := parseDsize(c.expr)
		if err != nil || d.Matches(c.n) != c.want {
			t.Errorf("dsize:%s on %d = %v (%v), want %v", c.expr, c.n, d != nil && d.Matches(c.n), err, c.want)
		}
	}
}

func TestReaderContinuationsAndComments(t *testing.T) {
	text := "# a comment\n\n" +
		"alert tcp any any -> any any (msg:\"one\"; \\\n   content:\"a\"; \\\n   sid:1;)\n" +
		"  # alert tcp any any -> any any (sid:9;)\n" +
		"alert tcp any any -> any any (msg:\"bad\"; frobnicate; sid:2;)\n" +
		"alert tcp any any -> any any (msg:\"two\"; sid:3;)\n"
	rules, refused, err := ParseReader(strings.NewReader(text), "t.rules")
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 2 || rules[0].SID != 1 || rules[0].Line != 3 || rules[1].SID != 3 || rules[1].Line != 8 {
		t.Fatalf("rules %v", rules)
	}
	if len(refused) != 1 || refused[0].Error() != `t.rules:7: sid 2: unknown keyword "frobnicate"` {
		t.Fatalf("refused %v", refused)
	}
}

// Refusals name the sid and the reason, exactly.
func TestRefusalMessages(t *testing.T) {
	for _, c := range []struct{ rule, want string }{
		{`alert dns any any -> any any (msg:"x"; dns.query; content:"a"; sid:10;)`, `sid 10: unsupported protocol "dns"`},
		{`alert tls any any -> any any (tls.sni; content:"a"; sid:11;)`, `sid 11: unsupported protocol "tls"`},
		{`alert tcp any any -> any any (content:"a"; flowbits:set,x; sid:12;)`, `sid 12: unsupported keyword "flowbits"`},
		{`alert tcp any any -> any any (content:"a"; tls.sni; sid:13;)`, `sid 13: unsupported keyword "tls.sni"`},
		{`alert tcp any any -> any any (contnet:"a"; sid:14;)`, `sid 14: unknown keyword "contnet"`},
		{`alert tcp any any -> any any (pcre:"/(?<=a)b/"; sid:15;)`, `sid 15: pcre "/(?<=a)b/": lookbehind "(?<=" has no RE2 equivalent`},
		{`alert tcp any any -> any any (pcre:"/(a)\1/"; sid:16;)`, `sid 16: pcre "/(a)\1/": backreference "\1" has no RE2 equivalent`},
		{`alert tcp any any -> any any (pcre:"/a++b/"; sid:17;)`, `sid 17: pcre "/a++b/": possessive quantifier "++" has no RE2 equivalent`},
		{`alert tcp any any -> any any (pcre:"/a(?=b)/"; sid:18;)`, `sid 18: pcre "/a(?=b)/": lookahead "(?=" has no RE2 equivalent`},
		{`alert tcp any any -> any any (pcre:"/a/Q"; sid:19;)`, `sid 19: pcre "/a/Q": flag 'Q' is not supported`},
		{`alert tcp any any -> any any (pcre:"/\xff/"; sid:20;)`, `sid 20: pcre "/\xff/": \xff matches byte 0xff, which RE2 would read as UTF-8`},
		{`alert tcp any any -> any any (content:"a"; fast_pattern:only; sid:21;)`, `sid 21: fast_pattern options ("only") are not supported`},
		{`alert tcp any any -> any any (nocase; content:"a"; sid:22;)`, `sid 22: "nocase" needs a preceding content`},
		{`alert tcp any any -> any any (content:"abc"; within:2; content:"x"; sid:23;)`, `sid 23: within 2 is smaller than the content length 3`},
		{`alert tcp any any -> any any (content:"abc"; distance:1; sid:24;)`, `sid 24: relative match needs a preceding content or pcre in payload`},
		{`alert tcp any any -> any any (content:"a"; content:"b"; offset:1; distance:2; sid:25;)`, `sid 25: content mixes relative (distance/within) and absolute (offset/depth) modifiers`},
		{`alert tcp any any -> any any (flow:to_server,only_stream; sid:26;)`, `sid 26: flow option "only_stream" is not supported`},
		{`alert tcp any any -> any any (threshold:type limit, track by_rule, count 1, seconds 60; sid:27;)`, `sid 27: threshold track "by_rule" is not supported (by_src or by_dst)`},
		{`rejectsrc tcp any any -> any any (sid:28;)`, `sid 28: unsupported action "rejectsrc"`},
		{`alert tcp any any -> any any (content:"a\x"; sid:29;)`, `sid 29: content has invalid escape "\x"`},
		{`alert tcp any any -> any any (content:"|4g|"; sid:30;)`, `sid 30: content has invalid hex character 'g'`},
		{`alert tcp any any -> any any (msg:"no sid";)`, `rule without a readable sid: rule has no sid`},
		{`alert tcp any any -> any any (msg:"x"; sid:31)`, `sid 31: option "sid:31" is not terminated by ';'`},
		{`alert tcp 10.0.0.300 any -> any any (sid:32;)`, `sid 32: invalid address "10.0.0.300"`},
		{`alert tcp any 70000 -> any any (sid:33;)`, `sid 33: invalid port "70000"`},
		{`alert tcp any any -> any any (content:"a"; http_uri; http.method; content:"b"; http_uri; sid:34;)`, `sid 34: "http_uri" cannot modify a content that is already in http.method`},
		{`alert udp any any -> any any (http.uri; content:"a"; sid:35;)`, `sid 35: http.uri used in a udp rule`},
		{`alert tcp any any -> any any (pcre:"/a/U"; http.uri; pcre:"/b/H"; sid:36;)`, `sid 36: pcre "/b/H": buffer flag 'H' after a sticky buffer`},
		{`alert tcp any any -> any any (pcre:"/a\h/"; sid:37;)`, `sid 37: pcre "/a\h/": escape "\h" has no RE2 equivalent`},
		{`alert tcp any any -> any any (pcre:"/(?>a)/"; sid:38;)`, `sid 38: pcre "/(?>a)/": atomic group "(?>" has no RE2 equivalent`},
		{`alert http any any -> any any (http.host; content:"Example.test"; sid:39;)`, `sid 39: content "Example.test" in http.host has upper-case letters and can never match (the buffer is lower-cased)`},
	} {
		_, err := Parse(c.rule)
		if err == nil || err.Error() != c.want {
			t.Errorf("Parse(%s)\n  err  %v\n  want %s", c.rule, err, c.want)
		}
	}
}

func TestPCRETranslation(t *testing.T) {
	for _, c := range []struct {
		pcre   string
		data   string
		want   bool
		relBuf Buffer
	}{
		{`/^get\s+\/admin/i`, "GET /admin", true, BufPayload},
		{`/a.b/s`, "a\nb", true, BufPayload},
		{`/a.b/`, "a\nb", false, BufPayload},
		{`/^b$/m`, "a\nb\nc", true, BufPayload},
		{`/^b$/`, "a\nb\nc", false, BufPayload},
		{`/end$/`, "the end\n", true, BufPayload}, // PCRE '$' matches before a final newline
		{`/end$/E`, "the end\n", false, BufPayload},
		{`/a b # comment
c/x`, "abc", true, BufPayload},
		{`/a(?#note)b/`, "ab", true, BufPayload},
		{`/\x41\e\cA/`, "A\x1b\x01", true, BufPayload},
		{`/bc/A`, "abc", false, BufPayload},
		{`/[^\]x]+/`, "abc", true, BufPayload},
		{`/(?<name>ab)/`, "ab", true, BufPayload},
		{`/a{2}+b/`, "", false, BufPayload}, // refused below
		{`/login/U`, "/login", true, BufURI},
		{`/ab*?c/G`, "abbc", true, BufPayload},
	} {
		pc, buf, err := translatePCRE(c.pcre, BufPayload, false)
		if c.pcre == `/a{2}+b/` {
			if err == nil {
				t.Errorf("%s: possessive {n}+ accepted", c.pcre)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.pcre, err)
			continue
		}
		if got := pc.Regexp.MatchString(c.data); got != c.want || buf != c.relBuf {
			t.Errorf("%s (RE2 %s) on %q = %v in %v, want %v in %v", c.pcre, pc.Regexp, c.data, got, buf, c.want, c.relBuf)
		}
	}
}

func TestAddressAndPortSets(t *testing.T) {
	vars := &Vars{
		Addresses: map[string]string{"HOME_NET": "[10.0.0.0/8,!10.1.0.0/16]", "EXTERNAL_NET": "!$HOME_NET", "LOOP": "$LOOP"},
		Ports:     map[string]string{"HTTP_PORTS": "[80,8000:8080]"},
	}
	a, err := ParseAddrs("$HOME_NET", vars)
	if err != nil {
		t.Fatal(err)
	}
	ext, _ := ParseAddrs("$EXTERNAL_NET", vars)
	for _, c := range []struct {
		ip         string
		home, extn bool
	}{{"10.2.3.4", true, false}, {"10.1.2.3", false, true}, {"192.0.2.1", false, true}, {"::ffff:10.2.3.4", true, false}} {
		ip := netip.MustParseAddr(c.ip)
		if a.Contains(ip) != c.home || ext.Contains(ip) != c.extn {
			t.Errorf("%s: home %v external %v", c.ip, a.Contains(ip), ext.Contains(ip))
		}
	}
	if _, err := ParseAddrs("$LOOP", vars); err == nil || !strings.Contains(err.Error(), "nest too deep") {
		t.Fatalf("cycle: %v", err)
	}
	if _, err := ParseAddrs("$NOPE", vars); err == nil || err.Error() != "rule without a readable sid: undefined address variable $NOPE" {
		t.Fatalf("undefined: %v", err)
	}
	p, _ := ParsePorts("[$HTTP_PORTS,!8001,1:3]", vars)
	for port, want := range map[uint16]bool{80: true, 8000: true, 8001: false, 8080: true, 2: true, 81: false} {
		if p.Contains(port) != want {
			t.Errorf("port %d: %v", port, !want)
		}
	}
	np, _ := ParsePorts("!22", vars)
	if np.Contains(22) || !np.Contains(23) {
		t.Fatal("!22")
	}
	open, _ := ParsePorts("1024:", vars)
	if open.Contains(1023) || !open.Contains(65535) {
		t.Fatal("1024:")
	}
	if _, err := ParsePorts("!any", nil); err == nil {
		t.Fatal("!any accepted")
	}
}

func TestContentHex(t *testing.T) {
	b, err := contentBytes(`a|00 FF|b\"|7c|`)
	if err != nil || !bytes.Equal(b, []byte("a\x00\xffb\"|")) {
		t.Fatalf("%q %v", b, err)
	}
	for _, bad := range []string{`|0|`, `|00`, `a\`, `|0 0|`} {
		if _, err := contentBytes(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// \cX is PCRE's control escape: a lower-case letter is upper-cased, then bit
// 0x40 is flipped, for any printable ASCII X.
func TestPCREControlEscape(t *testing.T) {
	for _, c := range []struct {
		pcre string
		want byte
	}{{`/\c?/`, 0x7f}, {"/\\c`/", 0x20}, {`/\ca/`, 0x01}, {`/\cA/`, 0x01}, {`/\c{/`, 0x3b}, {`/\c /`, 0x60}, {`/\c@/`, 0x00}, {`/\cz/`, 0x1a}} {
		pc, _, err := translatePCRE(c.pcre, BufPayload, false)
		if err != nil {
			t.Errorf("%s: %v", c.pcre, err)
			continue
		}
		for b := 0; b < 0x80; b++ {
			if got := pc.Regexp.Match([]byte{byte(b)}); got != (byte(b) == c.want) {
				t.Errorf("%s on byte 0x%02x = %v, want it to match 0x%02x only", c.pcre, b, got, c.want)
			}
		}
	}
	for _, bad := range []string{"/\\c\x7f/", "/\\c\t/", `/\c/`} {
		if _, _, err := translatePCRE(bad, BufPayload, false); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// A pcre whose match can begin with an assertion on the byte before it is
// marked: cutting the subject there would change what the assertion sees.
func TestPCREStartSensitive(t *testing.T) {
	for pcre, want := range map[string]bool{
		`/^a/`: true, `/a/A`: true, `/\bword/`: true, `/\Bx/`: true, `/^a/m`: true, `/(?:x?)^a/`: true, `/b|^a/`: true,
		`/a/`: false, `/a^/`: false, `/a\b/`: false, `/a$/`: false, `/x+^/`: false, `/\Z/`: false,
	} {
		pc, _, err := translatePCRE(pcre, BufPayload, false)
		if err != nil {
			t.Errorf("%s: %v", pcre, err)
			continue
		}
		if pc.StartSensitive != want {
			t.Errorf("%s: StartSensitive %v, want %v", pcre, pc.StartSensitive, want)
		}
	}
}
