package policy_test

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/palisade/palisade/fastpath/policy"
)

// A policy is JSON: Parse rejects unknown fields, fills the defaults and
// validates every rule; Compile turns it into what the kernel holds: the
// rules in evaluation order (priority first, then bypass, force-allow, deny,
// allow, log-only; bit i of the classification bitmaps is rule i) and, per
// packet field, the prefixes the kernel's tries look up. Classify judges a
// packet as the kernel does.
func Example() {
	p, err := policy.Parse([]byte(`{
		"name": "web",
		"default_action": "deny",
		"max_tcp_connections": 2000,
		"rules": [
			{"id": 10, "action": "allow", "direction": "inbound", "protocol": "tcp", "destination_ports": ["80", "443"]},
			{"id": 20, "action": "deny", "priority": 2, "direction": "inbound", "source": ["203.0.113.0/24"]},
			{"id": 30, "action": "allow", "direction": "outbound"}
		]}`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s: mode %s, default %s, invalid packets %s, %d TCP / %d UDP connections, pickup grace %s\n",
		p.Name, p.Mode, p.DefaultAction, p.InvalidPackets, p.MaxTCP, p.MaxUDP, time.Duration(p.PickupGrace))

	c, err := policy.Compile(p)
	if err != nil {
		fmt.Println(err)
		return
	}
	for i, r := range c.Rules {
		fmt.Printf("bit %d: rule %d %s\n", i, r.ID, r.Action)
	}
	for dim, entries := range c.Dims {
		fmt.Printf("%s: %d entries\n", policy.Dim(dim), len(entries))
	}
	for _, e := range c.Dims[policy.DimSrc4] {
		fmt.Printf("  src4 %s\n", e.Prefix())
	}

	for _, pkt := range []policy.Packet{
		{Dir: policy.Inbound, Proto: policy.ProtoTCP, Src: netip.MustParseAddr("198.51.100.7"), Dst: netip.MustParseAddr("192.0.2.10"), Sport: 40000, Dport: 443},
		{Dir: policy.Inbound, Proto: policy.ProtoTCP, Src: netip.MustParseAddr("203.0.113.9"), Dst: netip.MustParseAddr("192.0.2.10"), Sport: 40000, Dport: 443},
		{Dir: policy.Inbound, Proto: policy.ProtoTCP, Src: netip.MustParseAddr("198.51.100.7"), Dst: netip.MustParseAddr("192.0.2.10"), Sport: 40000, Dport: 22},
	} {
		d := c.Classify(pkt, p.DefaultAction)
		by := fmt.Sprintf("rule %d", d.RuleID)
		if !d.Matched {
			by = "default action"
		}
		fmt.Printf("%s -> %s:%d: %s (%s)\n", pkt.Src, pkt.Dst, pkt.Dport, d.Action, by)
	}
	// Output:
	// web: mode inline, default deny, invalid packets drop, 2000 TCP / 10000 UDP connections, pickup grace 1m0s
	// bit 0: rule 20 deny
	// bit 1: rule 10 allow
	// bit 2: rule 30 allow
	// src4: 2 entries
	// dst4: 1 entries
	// src6: 1 entries
	// dst6: 1 entries
	// sport: 2 entries
	// dport: 5 entries
	//   src4 0.0.0.0/0
	//   src4 203.0.113.0/24
	// 198.51.100.7 -> 192.0.2.10:443: allow (rule 10)
	// 203.0.113.9 -> 192.0.2.10:443: deny (rule 20)
	// 198.51.100.7 -> 192.0.2.10:22: deny (default action)
}

// A policy error names the rule's index and id and the field at fault.
func ExampleParse_error() {
	_, err := policy.Parse([]byte(`{"rules": [
		{"id": 1, "action": "allow", "protocol": "tcp", "destination_ports": ["80"]},
		{"id": 2, "action": "allow", "protocol": "icmp", "destination_ports": ["80"]}
	]}`))
	fmt.Println(err)
	// Output:
	// policy: rule 1 (id 2): ports: ports need protocol tcp, udp or any, not icmp
}
