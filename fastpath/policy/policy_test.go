package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestParseRejectsBadPolicies(t *testing.T) {
	cases := []struct{ json, want string }{
		{`{"rules":[{"id":1,"action":"allow","destination_ports":["70000"]}]}`, `rule 0 (id 1): destination_ports: port "70000": not a number 0-65535`},
		{`{"rules":[{"id":1,"action":"permit"}]}`, `rule 0 (id 1): action: "permit" is not allow, deny, force-allow, bypass or log-only`},
		{`{"rules":[{"id":1,"action":"allow"},{"id":1,"action":"deny"}]}`, `rule 1 (id 1): id: duplicates rule 0`},
		{`{"rules":[{"id":0,"action":"allow"}]}`, `rule 0 (id 0): id: must be a positive number`},
		{`{"rules":[{"id":2,"action":"allow","source":["10.0.0.1/8"]}]}`, `"10.0.0.1/8" has host bits set (did you mean 10.0.0.0/8?)`},
		{`{"rules":[{"id":2,"action":"allow","protocol":"icmp","destination_ports":["80"]}]}`, `ports need protocol tcp, udp or any, not icmp`},
		{`{"rules":[{"id":2,"action":"allow","source":["10.0.0.0/8"],"destination":["2001:db8::/32"]}]}`, `share no address family`},
		{`{"rules":[{"id":2,"action":"allow","source_ports":["90-80"]}]}`, `start exceeds end`},
		{`{"rules":[{"id":2,"action":"allow","protocol":"icmp","source":["2001:db8::/32"]}]}`, `icmp with only IPv6 addresses could never match (use icmpv6)`},
		{`{"rules":[{"id":2,"action":"allow","protocol":"icmpv6","destination":["192.0.2.0/24"]}]}`, `icmpv6 with only IPv4 addresses could never match (use icmp)`},
		{`{"rules":[{"id":2,"action":"allow","protocol":"gre"}]}`, `"gre" is not tcp, udp, icmp, icmpv6, any or a number 0-255`},
		{`{"mode":"enforce","rules":[]}`, `mode: "enforce" is not inline or tap`},
		{`{"rules":[], "timeouts":{"udp":"10ms"}}`, `timeouts.udp: 10ms is outside 1s..168h`},
		{`{"rules":[], "inspection":["av"]}`, `unknown feature "av"`},
		{`{"rules":[], "defualt_action":"allow"}`, `unknown field "defualt_action"`},
		{`{"rules":[{"id":3,"action":"allow","priority":7}]}`, `priority: 7 is outside 0..4`},
	}
	for _, c := range cases {
		_, err := Parse([]byte(c.json))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s\n got: %v\nwant: …%s…", c.json, err, c.want)
		}
	}
}

func TestParseFillsDefaults(t *testing.T) {
	p, err := Parse([]byte(`{"rules":[{"id":1,"action":"allow"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != Inline || p.DefaultAction != Deny || p.InvalidPackets != InvalidDrop || !*p.PassARP || !*p.PassND ||
		p.MaxTCP != DefaultMaxTCP || p.Timeouts.TCPEstablished != DefaultTimeouts.TCPEstablished || p.Rules[0].Direction != AnyDir {
		t.Fatalf("defaults: %+v", p)
	}
}

func TestRangePrefixes(t *testing.T) {
	for _, c := range []struct{ lo, hi uint16 }{{0, 65535}, {80, 80}, {1024, 65535}, {10, 20}, {0, 0}, {65535, 65535}, {1, 65534}} {
		covered := map[uint32]bool{}
		for _, p := range rangePrefixes(c.lo, c.hi) {
			size := uint32(1) << (16 - p.bits)
			if uint32(p.value)%size != 0 {
				t.Fatalf("%v: unaligned prefix %+v", c, p)
			}
			for v := uint32(p.value); v < uint32(p.value)+size; v++ {
				if covered[v] {
					t.Fatalf("%v: %d covered twice", c, v)
				}
				covered[v] = true
			}
		}
		if len(covered) != int(c.hi)-int(c.lo)+1 {
			t.Fatalf("%v: covered %d ports", c, len(covered))
		}
		for v := range covered {
			if v < uint32(c.lo) || v > uint32(c.hi) {
				t.Fatalf("%v: covers %d", c, v)
			}
		}
	}
	if n := len(rangePrefixes(1, 65534)); n != 30 {
		t.Fatalf("1-65534 took %d prefixes, the minimum is 30", n)
	}
}

func TestCompileSpansManyWords(t *testing.T) {
	// 10,000 rules, one destination port each, the match last: the
	// compiled form must still find it, and store few words per entry.
	p := &Policy{DefaultAction: Deny}
	for i := 0; i < 10000; i++ {
		p.Rules = append(p.Rules, Rule{ID: uint32(i + 1), Action: Allow, Protocol: "tcp",
			DestinationPorts: []string{fmt.Sprint(10000 + i)}})
	}
	if err := p.Normalize(); err != nil {
		t.Fatal(err)
	}
	c, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	pkt := Packet{Dir: Inbound, Proto: ProtoTCP, Src: netip.MustParseAddr("203.0.113.1"), Dst: netip.MustParseAddr("198.51.100.1"), Sport: 40000, Dport: 19999}
	if d := c.Classify(pkt, Deny); d.RuleID != 10000 || d.Action != Allow {
		t.Fatalf("last rule: %+v", d)
	}
	pkt.Dport = 20000
	if d := c.Classify(pkt, Deny); d.Matched {
		t.Fatalf("no rule should match port 20000: %+v", d)
	}
	t.Logf("10,000 rules: %d entries, %d words", c.EntryCount(), c.WordCount())
}

// TestCompiledSizeGrowsLinearly compiles a policy where half the rules name
// no source and half name one host each: copying the any-source rules into
// every host's entry would make the size rules × hosts.
func TestCompiledSizeGrowsLinearly(t *testing.T) {
	size := func(n int) int {
		p := &Policy{DefaultAction: Deny}
		for i := 0; i < n; i++ {
			r := Rule{ID: uint32(i + 1), Action: Allow, Direction: Inbound, Protocol: "tcp", DestinationPorts: []string{fmt.Sprint(1024 + i)}}
			if i%2 == 1 {
				r.Source = []string{fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)}
			}
			p.Rules = append(p.Rules, r)
		}
		if err := p.Normalize(); err != nil {
			t.Fatal(err)
		}
		c, err := Compile(p)
		if err != nil {
			t.Fatal(err)
		}
		return c.WordCount()
	}
	small, large := size(1000), size(10000)
	t.Logf("bitmap words: 1,000 rules %d, 10,000 rules %d", small, large)
	if large > 20*small || large > 4*10000 {
		t.Fatalf("10,000 rules take %d words, 1,000 take %d: growth is not linear", large, small)
	}
}
