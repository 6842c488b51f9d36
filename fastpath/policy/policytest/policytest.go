package policytest

import (
	"math/rand/v2"
	"net/netip"

	"github.com/palisade/palisade/fastpath/policy"
)

// RandomPolicy builds a policy with n rules drawn from a small universe of
// addresses and ports, so that rules overlap often.
func RandomPolicy(rng *rand.Rand, n int) *policy.Policy {
	v4 := []string{"198.51.100.0/24", "198.51.100.7", "198.51.100.128/25", "203.0.113.0/24", "0.0.0.0/0", "192.0.2.0/28", "198.51.0.0/16"}
	v6 := []string{"2001:db8::/32", "2001:db8::7", "2001:db8:1::/48", "::/0"}
	ports := []string{"80", "443", "1024-65535", "0-1023", "8000-8100", "53", "22", "3000-3999"}
	actions := []policy.Action{policy.Allow, policy.Deny, policy.ForceAllow, policy.Bypass, policy.LogOnly}
	protos := []string{"tcp", "udp", "any", "icmp", "icmpv6", "47"}
	dirs := []policy.Direction{policy.Inbound, policy.Outbound, policy.AnyDir}
	p := &policy.Policy{DefaultAction: []policy.Action{policy.Allow, policy.Deny}[rng.IntN(2)]}
	pick := func(list []string, max int) []string {
		var out []string
		for k := rng.IntN(max + 1); k > 0; k-- {
			out = append(out, list[rng.IntN(len(list))])
		}
		return out
	}
	for i := 0; i < n; i++ {
		r := policy.Rule{ID: uint32(i + 1), Priority: rng.IntN(5), Action: actions[rng.IntN(len(actions))],
			Direction: dirs[rng.IntN(len(dirs))], Protocol: protos[rng.IntN(len(protos))]}
		fam := v4
		if rng.IntN(3) == 0 {
			fam = v6
		}
		if rng.IntN(2) == 0 {
			r.Source = pick(fam, 2)
		}
		if rng.IntN(2) == 0 {
			r.Destination = pick(fam, 2)
		}
		switch r.Protocol {
		case "tcp", "udp", "any":
			if rng.IntN(2) == 0 {
				r.DestinationPorts = pick(ports, 2)
			}
			if rng.IntN(4) == 0 {
				r.SourcePorts = pick(ports, 1)
			}
		case "icmp", "icmpv6":
			if rng.IntN(2) == 0 {
				r.ICMPTypes = []uint8{uint8([]int{0, 3, 8, 128, 129}[rng.IntN(5)])}
			}
		}
		p.Rules = append(p.Rules, r)
	}
	if err := p.Normalize(); err != nil {
		// Random combinations may be unsatisfiable (v4 source, v6
		// destination); drop such rules rather than the whole policy.
		var keep []policy.Rule
		for _, r := range p.Rules {
			q := policy.Policy{Rules: []policy.Rule{r}}
			if q.Normalize() == nil {
				keep = append(keep, r)
			}
		}
		p.Rules = keep
		if err := p.Normalize(); err != nil {
			panic(err)
		}
	}
	return p
}

// RandomPacket draws packets from the same universe as RandomPolicy.
func RandomPacket(rng *rand.Rand) policy.Packet {
	v4 := []string{"198.51.100.7", "198.51.100.200", "203.0.113.9", "192.0.2.3", "198.51.7.7", "10.1.2.3"}
	v6 := []string{"2001:db8::7", "2001:db8:1::5", "2001:db8:2::1", "fe80::1"}
	protos := []int{policy.ProtoTCP, policy.ProtoUDP, policy.ProtoICMP, policy.ProtoICMPv6, 47}
	pkt := policy.Packet{Dir: []policy.Direction{policy.Inbound, policy.Outbound}[rng.IntN(2)], Proto: protos[rng.IntN(len(protos))]}
	fam := v4
	if rng.IntN(3) == 0 || pkt.Proto == policy.ProtoICMPv6 {
		fam = v6
	}
	if pkt.Proto == policy.ProtoICMP {
		fam = v4
	}
	pkt.Src = netip.MustParseAddr(fam[rng.IntN(len(fam))])
	pkt.Dst = netip.MustParseAddr(fam[rng.IntN(len(fam))])
	portsPool := []uint16{80, 443, 53, 22, 8050, 3500, 1023, 1024, 65535, 0, 12345}
	pkt.Sport = portsPool[rng.IntN(len(portsPool))]
	pkt.Dport = portsPool[rng.IntN(len(portsPool))]
	pkt.ICMPType = uint8([]int{0, 3, 8, 128, 129, 11}[rng.IntN(6)])
	return pkt
}
