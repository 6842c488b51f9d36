package ips

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/palisade/palisade/slowpath/inspect/craft"
)

// Traffic builders for the keyword table. Client 10.0.0.5, server
// 192.0.2.10 unless a builder says otherwise.

func tcpTalk(toServer, toClient string) []craft.Frame {
	e := &craft.Endpoints{}
	c := e.NewTCP("10.0.0.5:40000", "192.0.2.10:8000")
	fs := c.Handshake()
	if toServer != "" {
		fs = append(fs, c.Send(true, []byte(toServer)))
	}
	if toClient != "" {
		fs = append(fs, c.Send(false, []byte(toClient)))
	}
	return fs
}

// tcpNoHandshake is a midstream pickup: never established.
func tcpNoHandshake(data string) []craft.Frame {
	e := &craft.Endpoints{}
	c := e.NewTCP("10.0.0.5:40000", "192.0.2.10:8000")
	return []craft.Frame{c.Send(true, []byte(data))}
}

func udpTo(dst string, payload string) []craft.Frame {
	e := &craft.Endpoints{}
	return []craft.Frame{e.UDP(netip.MustParseAddrPort("10.0.0.5:5000"), netip.MustParseAddrPort(dst), []byte(payload))}
}

func udpFrom(src string, payload string) []craft.Frame {
	e := &craft.Endpoints{}
	return []craft.Frame{e.UDP(netip.MustParseAddrPort(src), netip.MustParseAddrPort("192.0.2.10:53"), []byte(payload))}
}

func icmp(payload string) []craft.Frame {
	e := &craft.Endpoints{}
	return []craft.Frame{e.ICMPEcho(netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("192.0.2.10"), []byte(payload))}
}

func get(uri string, headers string) []craft.Frame {
	return httpSession("GET "+uri+" HTTP/1.1\r\nHost: www.Example.test:8080\r\nUser-Agent: Mozilla/5.0 (X11)\r\n"+headers+"\r\n", "")
}

func post(uri string) []craft.Frame {
	return httpSession("POST "+uri+" HTTP/1.1\r\nHost: api.example.test\r\nUser-Agent: curl/8.0\r\nContent-Length: 0\r\n\r\n", "")
}

// TestKeywords runs, for each supported keyword, a rule over traffic that
// must match and over a near miss that must not.
func TestKeywords(t *testing.T) {
	const r = `alert tcp any any -> any any `
	for _, c := range []struct {
		name      string
		rule      string
		hit, miss []craft.Frame
	}{
		{"proto ip", `alert ip any any -> any any (content:"ping"; sid:1;)`, icmp("ping"), icmp("pong")},
		{"proto tcp", r + `(content:"hello"; sid:1;)`, tcpTalk("hello", ""), udpTo("192.0.2.10:8000", "hello")},
		{"proto udp", `alert udp any any -> any any (content:"hello"; sid:1;)`, udpTo("192.0.2.10:53", "hello"), tcpTalk("hello", "")},
		{"proto icmp", `alert icmp any any -> any any (content:"ping"; sid:1;)`, icmp("ping"), udpTo("192.0.2.10:53", "ping")},
		{"proto http", `alert http any any -> any any (content:"GET /"; sid:1;)`, get("/", ""), tcpTalk("GET", "")},
		{"address list with negation", `alert udp [10.0.0.0/8,!10.1.0.0/16] any -> any any (sid:1;)`, udpFrom("10.2.0.1:5", "x"), udpFrom("10.1.0.1:5", "x")},
		{"negated address", `alert udp !10.0.0.0/8 any -> any any (sid:1;)`, udpFrom("172.16.0.1:5", "x"), udpFrom("10.0.0.1:5", "x")},
		{"address variable", `alert udp $HOME_NET any -> any any (sid:1;)`, udpFrom("192.168.1.1:5", "x"), udpFrom("198.51.100.1:5", "x")},
		{"external net", `alert udp $EXTERNAL_NET any -> any any (sid:1;)`, udpFrom("198.51.100.1:5", "x"), udpFrom("192.168.1.1:5", "x")},
		{"port list and range", `alert udp any any -> any [53,443,8000:8080] (sid:1;)`, udpTo("192.0.2.10:8042", "x"), udpTo("192.0.2.10:8081", "x")},
		{"negated port", `alert udp any any -> any !53 (sid:1;)`, udpTo("192.0.2.10:54", "x"), udpTo("192.0.2.10:53", "x")},
		{"port variable", `alert http any any -> any $HTTP_PORTS (sid:1;)`, get("/", ""), tcpTalk("GET / HTTP/1.1\r\n\r\n", "")},
		{"direction ->", `alert udp 10.0.0.5 any -> 192.0.2.10 any (sid:1;)`, udpTo("192.0.2.10:53", "x"), udpFrom("192.0.2.99:53", "x")},
		{"direction <>", `alert udp 192.0.2.10 53 <> 10.0.0.0/8 any (sid:1;)`, udpTo("192.0.2.10:53", "x"), udpTo("192.0.2.11:53", "x")},
		{"content hex", r + `(content:"|de ad|be|ef|"; sid:1;)`, tcpTalk("\xde\xadbe\xef", ""), tcpTalk("\xde\xadbe\xee", "")},
		{"content case-sensitive", r + `(content:"Admin"; sid:1;)`, tcpTalk("x Admin y", ""), tcpTalk("x admin y", "")},
		{"nocase", r + `(content:"admin"; nocase; sid:1;)`, tcpTalk("x ADMIN y", ""), tcpTalk("x adm1n y", "")},
		{"depth", r + `(content:"GET"; depth:3; sid:1;)`, tcpTalk("GET /", ""), tcpTalk(" GET /", "")},
		{"offset", r + `(content:"abc"; offset:2; sid:1;)`, tcpTalk("xxabc", ""), tcpTalk("xabcx", "")},
		{"offset and depth", r + `(content:"abc"; offset:2; depth:4; sid:1;)`, tcpTalk("xxxabc", ""), tcpTalk("xxxxabc", "")},
		{"distance", r + `(content:"user"; content:"pass"; distance:3; sid:1;)`, tcpTalk("user...pass", ""), tcpTalk("user..pass", "")},
		{"negative distance", r + `(content:"world"; content:"hello "; distance:-11; within:6; sid:1;)`, tcpTalk("hello world", ""), tcpTalk("hullo world", "")},
		{"within", r + `(content:"user"; content:"pass"; within:8; sid:1;)`, tcpTalk("user..pass", ""), tcpTalk("user.....pass", "")},
		{"distance backtracks", r + `(content:"a="; content:"x"; distance:0; within:1; sid:1;)`, tcpTalk("a=1 a=x", ""), tcpTalk("a=1 a=2 x", "")},
		{"negated content", r + `(content:"GET"; content:!"Host"; sid:1;)`, tcpTalk("GET / HTTP/1.0\r\n\r\n", ""), tcpTalk("GET / HTTP/1.1\r\nHost: a\r\n\r\n", "")},
		{"negated relative content", r + `(content:"GET "; content:!"/index"; within:6; sid:1;)`, tcpTalk("GET /admin", ""), tcpTalk("GET /index", "")},
		{"fast_pattern", r + `(content:"abcdefgh"; content:"xy"; fast_pattern; sid:1;)`, tcpTalk("abcdefgh xy", ""), tcpTalk("abcdefgh x y", "")},
		{"pcre", r + `(pcre:"/user=[a-z]+\d{2}/"; sid:1;)`, tcpTalk("user=bob42", ""), tcpTalk("user=bob4", "")},
		{"pcre i", r + `(pcre:"/select.+from/i"; sid:1;)`, tcpTalk("SELECT * FROM t", ""), tcpTalk("SELECT *", "")},
		{"pcre s", r + `(pcre:"/a.b/s"; sid:1;)`, tcpTalk("a\nb", ""), tcpTalk("a\n\nb", "")},
		{"pcre m", r + `(pcre:"/^cmd$/m"; sid:1;)`, tcpTalk("x\ncmd\ny", ""), tcpTalk("x cmd y", "")},
		{"pcre x", r + `(pcre:"/a b c/x"; sid:1;)`, tcpTalk("abc", ""), tcpTalk("a b c", "")},
		{"pcre negated", r + `(content:"GET"; pcre:!"/HTTP\/1\.1/"; sid:1;)`, tcpTalk("GET / HTTP/1.0", ""), tcpTalk("GET / HTTP/1.1", "")},
		{"pcre R", r + `(content:"key="; pcre:"/^\d+/R"; sid:1;)`, tcpTalk("key=123", ""), tcpTalk("key=abc 123", "")},
		{"pcre U", `alert http any any -> any any (pcre:"/\.php$/U"; sid:1;)`, get("/a.php", ""), get("/a.php?x", "")},
		{"flow to_server", r + `(content:"data"; flow:to_server; sid:1;)`, tcpTalk("data", ""), tcpTalk("", "data")},
		{"flow from_client", r + `(content:"data"; flow:from_client; sid:1;)`, tcpTalk("data", ""), tcpTalk("", "data")},
		{"flow to_client", `alert tcp any any -> any any (content:"data"; flow:to_client; sid:1;)`, tcpTalk("", "data"), tcpTalk("data", "")},
		{"flow from_server", `alert tcp any any -> any any (content:"data"; flow:from_server; sid:1;)`, tcpTalk("", "data"), tcpTalk("data", "")},
		{"flow established", r + `(content:"data"; flow:established; sid:1;)`, tcpTalk("data", ""), tcpNoHandshake("data")},
		{"flow stateless", r + `(content:"data"; flow:stateless; sid:1;)`, tcpNoHandshake("data"), tcpNoHandshake("date")},
		{"flow established udp", `alert udp any any -> any any (content:"b"; flow:established; sid:1;)`,
			append(udpTo("192.0.2.10:53", "a"), craftReply("b")...), udpTo("192.0.2.10:53", "b")},
		{"dsize", r + `(dsize:5; sid:1;)`, tcpTalk("12345", ""), tcpTalk("123456", "")},
		{"dsize range", `alert udp any any -> any any (dsize:2<>5; sid:1;)`, udpTo("192.0.2.10:1", "abc"), udpTo("192.0.2.10:1", "abcde")},
		{"http.uri", `alert http any any -> any any (http.uri; content:"/etc/passwd"; sid:1;)`, get("/admin/%2e%2e/etc/passwd", ""), get("/admin/x/etc/pass", "")},
		{"http_uri", `alert http any any -> any any (content:"/login"; http_uri; sid:1;)`, get("/login?u=1", ""), get("/?next=/logi", "")},
		{"http.method", `alert http any any -> any any (http.method; content:"POST"; sid:1;)`, post("/"), get("/POST", "")},
		{"http_method", `alert http any any -> any any (content:"POST"; http_method; sid:1;)`, post("/"), get("/", "X-Post: POST\r\n")},
		{"http.header", `alert http any any -> any any (http.header; content:"X-Evil|3a 20|1"; sid:1;)`, get("/", "X-Evil: 1\r\n"), get("/X-Evil: 1", "")},
		{"http_header nocase", `alert http any any -> any any (content:"x-evil"; nocase; http_header; sid:1;)`, get("/", "X-EVIL: 1\r\n"), get("/", "Cookie: x-evil=1\r\n")},
		{"http.host", `alert http any any -> any any (http.host; content:"www.example.test"; sid:1;)`, get("/", ""), post("/")},
		{"http_host", `alert http any any -> any any (content:"api.example.test"; http_host; sid:1;)`, post("/"), get("/api.example.test", "")},
		{"http.user_agent", `alert http any any -> any any (http.user_agent; content:"curl/"; depth:5; sid:1;)`, post("/"), get("/curl/", "")},
		{"http_user_agent", `alert http any any -> any any (content:"Mozilla"; http_user_agent; sid:1;)`, get("/", ""), post("/Mozilla")},
		{"http buffers combined", `alert http any any -> any any (http.method; content:"POST"; http.uri; content:"/api"; sid:1;)`, post("/api"), get("/api", "")},
		// PCRE positions kept when the matcher retries and chains matches.
		// A retry starts later in the same subject: ^ still means its start.
		{"anchor not moved by a retry", r + `(pcre:"/^a/"; content:"b"; distance:0; within:1; sid:1;)`, tcpTalk("ab", ""), tcpTalk("aab", "")},
		{"word boundary not moved by a retry", r + `(pcre:"/\bx/"; content:"y"; distance:0; within:1; sid:1;)`, tcpTalk("xz xy", ""), tcpTalk("xxy", "")},
		{"multiline anchor retried at a line start", r + `(pcre:"/^cmd/m"; content:"x"; distance:0; within:1; sid:1;)`, tcpTalk("cmdy\ncmdx", ""), tcpTalk("cmdy cmdx", "")},
		{"unanchored pcre still retried", r + `(pcre:"/a=/"; content:"x"; distance:0; within:1; sid:1;)`, tcpTalk("a=1 a=x", ""), tcpTalk("a=1 a=2", "")},
		// PCRE's $ before a final newline ends the match before it.
		{"dollar leaves the final newline", r + `(pcre:"/foo$/"; content:"|0a|"; distance:0; within:1; sid:1;)`, tcpTalk("foo\n", ""), tcpTalk("foo", "")},
		{"\\Z leaves the final newline", r + `(pcre:"/foo\Z/"; content:"|0a|"; distance:0; within:1; sid:1;)`, tcpTalk("foo\n", ""), tcpTalk("foo\nx", "")},
		{"dollar without newline", r + `(content:"x"; pcre:"/foo$/R"; sid:1;)`, tcpTalk("xfoo", ""), tcpTalk("xfoox", "")},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, c.rule)
			h.run(c.hit...)
			if got := h.sids(); !slices.Equal(got, []uint32{1}) {
				t.Errorf("hit: alerts %v, want [1]", got)
			}
			m := newHarness(t, c.rule)
			m.run(c.miss...)
			if got := m.sids(); len(got) != 0 {
				t.Errorf("near miss: alerts %v, want none", got)
			}
		})
	}
}

// craftReply is the server's UDP answer to udpTo("192.0.2.10:53", ...).
func craftReply(payload string) []craft.Frame {
	e := &craft.Endpoints{}
	return []craft.Frame{e.UDP(netip.MustParseAddrPort("192.0.2.10:53"), netip.MustParseAddrPort("10.0.0.5:5000"), []byte(payload))}
}
