package http1

import (
	"fmt"
	"strings"
	"testing"
)

type seen struct {
	method, uri, proto, host string
	start, end               int
}

func parseAll(t *testing.T, stream string, step int) ([]seen, error) {
	t.Helper()
	var p RequestParser
	var out []seen
	var err error
	for n := step; ; n += step {
		n = min(n, len(stream))
		err = p.Parse([]byte(stream[:n]), func(r *Request) {
			out = append(out, seen{string(r.Method), string(r.URI), string(r.Protocol), string(r.Header("host")), r.Start, r.End})
		})
		if n == len(stream) || err != nil {
			return out, err
		}
	}
}

func TestPipelinedRequests(t *testing.T) {
	s := "GET /a HTTP/1.1\r\nHost: one.test\r\n\r\n" +
		"POST /b HTTP/1.1\r\nHost: two.test\r\nContent-Length: 11\r\n\r\nGET /x HTTP" + // the body looks like a request: it is not one
		"PUT /c HTTP/1.1\r\nHost: three.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET /\r\n3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\n" +
		"\r\nDELETE /d HTTP/1.0\nHost: four.test\n\n"
	want := []seen{
		{"GET", "/a", "HTTP/1.1", "one.test", 0, 35},
		{"POST", "/b", "HTTP/1.1", "two.test", 35, 0},
		{"PUT", "/c", "HTTP/1.1", "three.test", 0, 0},
		{"DELETE", "/d", "HTTP/1.0", "four.test", 0, 0},
	}
	for _, step := range []int{1, 7, len(s)} {
		got, err := parseAll(t, s, step)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if len(got) != len(want) {
			t.Fatalf("step %d: %d requests: %+v", step, len(got), got)
		}
		for i := range want {
			g, w := got[i], want[i]
			if g.method != w.method || g.uri != w.uri || g.proto != w.proto || g.host != w.host {
				t.Errorf("step %d request %d: %+v, want %+v", step, i, g, w)
			}
			if !strings.HasPrefix(s[g.start:], w.method+" ") || !strings.HasSuffix(s[:g.end], "\n\n") && !strings.HasSuffix(s[:g.end], "\r\n\r\n") {
				t.Errorf("request %d spans %d..%d: %q", i, g.start, g.end, s[g.start:g.end])
			}
		}
	}
}

func TestRequestErrors(t *testing.T) {
	for _, c := range []struct{ stream, want string }{
		{"\x16\x03\x01 hello\r\n\r\n", "not HTTP/1.x"},
		{"POST / HTTP/1.1\r\nContent-Length: -4\r\n\r\n", "bad Content-Length"},
		{"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"},
		{"GET /" + strings.Repeat("a", MaxHeaderBytes+1), "start line too long"},
	} {
		_, err := parseAll(t, c.stream, len(c.stream))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%.30q: err %v, want %q", c.stream, err, c.want)
		}
	}
}

func TestLooksLikeRequest(t *testing.T) {
	for s, want := range map[string]bool{"GET ": true, "M-SEARCH ": true, "get ": false, "GET": false, " GET": false, "\x16\x03": false, "ABCDEFGHIJKLMNOPQ ": false} {
		if LooksLikeRequest([]byte(s)) != want {
			t.Errorf("%q: %v", s, !want)
		}
	}
}

func TestResponsesStayInStep(t *testing.T) {
	var p ResponseParser
	p.Expect([]byte("GET"))
	p.Expect([]byte("HEAD"))
	p.Expect([]byte("GET"))
	p.Expect([]byte("GET"))
	s := "HTTP/1.1 100 Continue\r\n\r\n" +
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" +
		"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n" + // HEAD: no body despite the length
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n" +
		"HTTP/1.1 200 OK\r\n\r\nuntil close, HTTP/1.1 200 OK\r\n\r\n"
	var codes []int
	for n := 1; n <= len(s); n++ {
		if err := p.Parse([]byte(s[:n]), func(c int) { codes = append(codes, c) }); err != nil {
			t.Fatal(err)
		}
	}
	if fmt.Sprint(codes) != "[100 200 200 200 200]" || p.Responses != 4 {
		t.Fatalf("codes %v, %d complete", codes, p.Responses)
	}
}

// FuzzRequestParser checks that parsing a stream at once or in two steps
// finds the same requests, and that offsets stay inside the stream.
func FuzzRequestParser(f *testing.F) {
	f.Add("GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /y HTTP/1.0\r\n\r\n", 20)
	f.Add("PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n", 50)
	f.Add("GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n", 3)
	f.Fuzz(func(t *testing.T, s string, cut int) {
		collect := func(steps ...int) []string {
			var p RequestParser
			var out []string
			for _, n := range steps {
				p.Parse([]byte(s[:n]), func(r *Request) {
					if r.Start < 0 || r.End > n || r.Start >= r.End {
						t.Fatalf("request spans %d..%d of %d bytes", r.Start, r.End, n)
					}
					out = append(out, fmt.Sprintf("%d %d %q %q %d", r.Start, r.End, r.Method, r.URI, len(r.Headers)))
				})
			}
			return out
		}
		if cut < 0 {
			cut = -cut
		}
		if len(s) > 0 {
			cut %= len(s) + 1
		} else {
			cut = 0
		}
		whole, split := collect(len(s)), collect(cut, len(s))
		if fmt.Sprint(whole) != fmt.Sprint(split) {
			t.Fatalf("at once %v, split at %d %v", whole, cut, split)
		}
		var rp ResponseParser
		rp.Expect([]byte("HEAD"))
		rp.Parse([]byte(s), nil)
	})
}

// A header line without a colon is kept as a header with an empty name and
// the line as its value, flagged, as libhtp does; the request goes on.
func TestHeaderWithoutColon(t *testing.T) {
	var p RequestParser
	var reqs []*Request
	err := p.Parse([]byte("GET / HTTP/1.1\r\nno colon here\r\n: empty name\r\nHost: a.test\r\n\r\n"), func(r *Request) { reqs = append(reqs, r) })
	if err != nil || len(reqs) != 1 {
		t.Fatalf("%d requests, err %v", len(reqs), err)
	}
	h := reqs[0].Headers
	if len(h) != 3 || string(h[0].Name) != "" || string(h[0].Value) != "no colon here" || !h[0].Invalid ||
		string(h[1].Name) != "" || string(h[1].Value) != "empty name" || !h[1].Invalid || h[2].Invalid || string(reqs[0].Header("Host")) != "a.test" {
		t.Fatalf("headers %+v", h)
	}
}

// A request whose body cannot be delimited is still reported before the
// error stops the parser.
func TestBodyErrorAfterRequest(t *testing.T) {
	got, err := parseAll(t, "POST /upload HTTP/1.1\r\nContent-Length: abc\r\n\r\nbody", 100)
	if len(got) != 1 || got[0].uri != "/upload" || err == nil || !strings.Contains(err.Error(), "bad Content-Length") {
		t.Fatalf("requests %+v, err %v", got, err)
	}
}
