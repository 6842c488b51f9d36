package rule

import (
	"strings"
	"testing"
)

// FuzzParse checks that any input is either refused with a reason or
// parsed into a rule that parses again to the same thing.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`alert http $EXTERNAL_NET any -> $HOME_NET $HTTP_PORTS (msg:"x"; flow:established,to_server; http.uri; content:"/a"; nocase; sid:1; rev:1;)`,
		`drop tcp [10.0.0.0/8,!10.1.0.0/16] !22 <> any [80,443,8000:8080] (content:"|41 42|"; depth:4; content:!"c\;d"; distance:0; within:9; sid:2;)`,
		`alert udp any any -> any 53 (dsize:>10; pcre:"/^a(b|c)+$/smi"; threshold:type limit, track by_src, count 1, seconds 60; sid:3;)`,
		`pass icmp any any -> any any (msg:"\\ \" \;"; detection_filter:track by_dst, count 2, seconds 1; sid:4;)`,
		`alert tcp any any -> any any (content:"a"; http_uri; pcre:"/b/UR"; sid:5;)`,
		`alert dns any any -> any any (dns.query; sid:6;)`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		r, err := Parse(text)
		if err != nil {
			if e, ok := err.(*Error); !ok || e.Reason == "" {
				t.Fatalf("refusal without a reason: %#v", err)
			}
			return
		}
		if r.SID == 0 {
			t.Fatal("accepted a rule without a sid")
		}
		again, err := Parse(r.Text)
		if err != nil || again.SID != r.SID || len(again.Matches) != len(r.Matches) || again.Msg != r.Msg {
			t.Fatalf("reparse differs: %v", err)
		}
		for _, m := range r.Matches {
			if (m.Content == nil) == (m.PCRE == nil) {
				t.Fatal("match is neither content nor pcre")
			}
			if m.Content != nil && len(m.Content.Pattern) == 0 {
				t.Fatal("empty content accepted")
			}
		}
		// A reader sees the same rule on one line or continued over two.
		if i := strings.Index(text, "; "); i > 0 && !strings.ContainsAny(text, "\n\r") {
			rules, _, _ := ParseReader(strings.NewReader(text[:i+1]+"\\\n"+text[i+1:]), "f")
			if len(rules) != 1 || rules[0].SID != r.SID {
				t.Fatalf("continued rule not read back")
			}
		}
	})
}
