package bench

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"

	"github.com/palisade/palisade/fastpath/policy"
)

// Rule is one generated inbound rule (traffic to the guest). A generated rule
// set never overlaps: no packet matches two rules, so "first match" and "the
// match" are the same and a verdict map can express it exactly.
type Rule struct {
	ID     uint32
	Proto  string       // "tcp" or "udp"
	Src    netip.Prefix // the zero Prefix means any source
	PortLo uint16       // destination ports, inclusive
	PortHi uint16
	Allow  bool
}

// Target is the benchmark's traffic as the last rule matches it.
type Target struct {
	Proto string
	Src   netip.Prefix
	Port  uint16
}

// Port pools keep any-source rules apart from every other rule: single ports
// lie below anyPortLo (the target's among them, from other sources), any-
// source rules each have a port of their own, ranges start at rangePortLo.
const (
	anyPortLo   = 20000
	anyPortHi   = 29999
	rangePortLo = 30000
)

// Rules returns n rules in evaluation order: n-1 varied rules that never
// match the target's traffic (hosts and networks of 10.0.0.0/8 and
// 172.16.0.0/12 to single ports or ranges, TCP and UDP, some from any source
// to other ports), then the one rule that does, allowing or denying it. All
// share one action and priority, so evaluation order is the order written.
// The same seed and n give the same rules.
func Rules(n int, t Target, allowLast bool, seed uint64) []Rule {
	if n < 1 {
		return nil
	}
	if t.Port >= anyPortLo {
		panic(fmt.Sprintf("bench: target port %d must be below %d", t.Port, anyPortLo))
	}
	rng := rand.New(rand.NewPCG(seed, uint64(n)))
	g := ruleGen{rng: rng, target: t}
	out := make([]Rule, 0, n)
	for i := 0; i < n-1; i++ {
		r := g.next()
		r.ID = uint32(i + 1)
		r.Allow = allowLast
		out = append(out, r)
	}
	return append(out, Rule{ID: uint32(n), Proto: t.Proto, Src: t.Src, PortLo: t.Port, PortHi: t.Port, Allow: allowLast})
}

type ruleGen struct {
	rng                           *rand.Rand
	target                        Target
	hosts, nets24, nets20, anyTCP int
}

func (g *ruleGen) proto() string {
	if g.rng.IntN(10) < 7 {
		return "tcp"
	}
	return "udp"
}

// popularPorts are services many rules name; the target's port is added, so
// other sources' rules to it share its bitmap words (and the classifier has
// to tell them apart by source).
var popularPorts = []uint16{22, 53, 80, 123, 443, 3306, 5432, 6379, 8080, 8443, 9090}

// port is a single destination port: a popular one three times in ten.
func (g *ruleGen) port() uint16 {
	if g.rng.IntN(10) < 3 {
		if i := g.rng.IntN(len(popularPorts) + 1); i < len(popularPorts) {
			return popularPorts[i]
		}
		return g.target.Port
	}
	return uint16(1 + g.rng.IntN(anyPortLo-1))
}

// host is a distinct 10.0.0.0/9 address: an odd multiplier permutes 2^23.
func (g *ruleGen) host() netip.Prefix {
	g.hosts++
	i := uint32(g.hosts) * 2654435761 % (1 << 23)
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
}

func (g *ruleGen) next() Rule {
	switch k := g.rng.IntN(100); {
	case k < 55: // a host to one port
		return Rule{Proto: g.proto(), Src: g.host(), PortLo: g.port()}.single()
	case k < 70: // a host to a port range
		lo := uint16(rangePortLo + g.rng.IntN(30000))
		return Rule{Proto: g.proto(), Src: g.host(), PortLo: lo, PortHi: lo + uint16(1+g.rng.IntN(200))}
	case k < 85 && g.nets24 < 1<<15: // a /24 of 10.128.0.0/9 to one port
		j := g.nets24
		g.nets24++
		return Rule{Proto: g.proto(), Src: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(128 + j>>8), byte(j), 0}), 24),
			PortLo: g.port()}.single()
	case k < 92 && g.nets20 < 256: // a /20 of 172.16.0.0/12 to one port
		j := g.nets20
		g.nets20++
		return Rule{Proto: g.proto(), Src: netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(16 + j>>4), byte(j & 15 << 4), 0}), 20),
			PortLo: g.port()}.single()
	case k < 92:
	case g.anyTCP <= anyPortHi-anyPortLo: // any source to a service port of its own
		p := uint16(anyPortLo + g.anyTCP)
		g.anyTCP++
		return Rule{Proto: "tcp", PortLo: p, PortHi: p}
	}
	return Rule{Proto: g.proto(), Src: g.host(), PortLo: g.port()}.single()
}

func (r Rule) single() Rule {
	r.PortHi = r.PortLo
	return r
}

func (r Rule) ports() string {
	if r.PortLo == r.PortHi {
		return fmt.Sprint(r.PortLo)
	}
	return fmt.Sprintf("%d-%d", r.PortLo, r.PortHi)
}

// Policy is the rules as a Palisade policy on the guest's vNIC, inbound,
// with the given default action, normalized.
func Policy(rules []Rule, def policy.Action) (*policy.Policy, error) {
	p := &policy.Policy{Name: "bench", DefaultAction: def}
	for _, r := range rules {
		pr := policy.Rule{ID: r.ID, Action: policy.Deny, Direction: policy.Inbound, Protocol: r.Proto,
			DestinationPorts: []string{r.ports()}}
		if r.Allow {
			pr.Action = policy.Allow
		}
		if r.Src.IsValid() {
			pr.Source = []string{r.Src.String()}
		}
		p.Rules = append(p.Rules, pr)
	}
	return p, p.Normalize()
}

// verdicts in each syntax.
func (r Rule) nft() string {
	if r.Allow {
		return "accept"
	}
	return "drop"
}

func (r Rule) ipt() string {
	if r.Allow {
		return "ACCEPT"
	}
	return "DROP"
}

// NFTables is the rules one per line in a forward chain (policy drop), as
// `nft -f` reads it. No rule uses conntrack. Each rule tests the source
// first, the output interface (the vNIC: inbound) last, so a rule whose
// source differs is left after one comparison.
func NFTables(rules []Rule, vnic string) string {
	var b strings.Builder
	b.WriteString("table inet palbench {\n\tchain forward {\n\t\ttype filter hook forward priority 0; policy drop;\n")
	for _, r := range rules {
		b.WriteString("\t\t")
		if r.Src.IsValid() {
			fmt.Fprintf(&b, "ip saddr %s ", r.Src)
		}
		fmt.Fprintf(&b, "%s dport %s oifname %q %s\n", r.Proto, r.ports(), vnic, r.nft())
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// NFTablesSet is the same policy as an expert writes it: the vNIC's traffic
// jumps to a chain of three verdict-map lookups, each over concatenated
// fields, split by what the kernel looks up fastest: any-source rules by
// protocol . port and host-to-port rules by source . protocol . port in hash
// maps, networks and port ranges in an interval map (nftables' pipapo). The
// rules never overlap, so the order of the lookups changes nothing. The
// any-source map serves IPv6 too, as the Palisade policy does. No conntrack.
func NFTablesSet(rules []Rule, vnic string) string {
	var any, hosts, nets []string
	for _, r := range rules {
		switch {
		case !r.Src.IsValid():
			any = append(any, fmt.Sprintf("%s . %s : %s", r.Proto, r.ports(), r.nft()))
		case r.Src.IsSingleIP() && r.PortLo == r.PortHi:
			hosts = append(hosts, fmt.Sprintf("%s . %s . %s : %s", r.Src.Addr(), r.Proto, r.ports(), r.nft()))
		default:
			nets = append(nets, fmt.Sprintf("%s . %s . %s : %s", r.Src, r.Proto, r.ports(), r.nft()))
		}
	}
	var b strings.Builder
	b.WriteString("table inet palbench {\n")
	writeMap(&b, "any_source", "inet_proto . inet_service", "", any)
	writeMap(&b, "hosts", "ipv4_addr . inet_proto . inet_service", "", hosts)
	writeMap(&b, "nets", "ipv4_addr . inet_proto . inet_service", "interval", nets)
	b.WriteString("\tchain guest_in {\n" +
		"\t\tmeta l4proto . th dport vmap @any_source\n" +
		"\t\tip saddr . meta l4proto . th dport vmap @hosts\n" +
		"\t\tip saddr . meta l4proto . th dport vmap @nets\n\t}\n")
	fmt.Fprintf(&b, "\tchain forward {\n\t\ttype filter hook forward priority 0; policy drop;\n"+
		"\t\toifname %q jump guest_in\n\t}\n}\n", vnic)
	return b.String()
}

func writeMap(b *strings.Builder, name, typ, flags string, elems []string) {
	fmt.Fprintf(b, "\tmap %s {\n\t\ttype %s : verdict\n", name, typ)
	if flags != "" {
		fmt.Fprintf(b, "\t\tflags %s\n", flags)
	}
	if len(elems) > 0 {
		fmt.Fprintf(b, "\t\telements = {\n\t\t\t%s\n\t\t}\n", strings.Join(elems, ",\n\t\t\t"))
	}
	b.WriteString("\t}\n")
}

// IPTables is the rules one per line in FORWARD (policy DROP), as
// iptables-restore reads it; IP6Tables is the part that applies to IPv6
// (the any-source rules), so both families are filtered as Palisade does.
// No rule uses conntrack.
func IPTables(rules []Rule, vnic string) string { return iptables(rules, vnic, false) }

// IP6Tables: see IPTables.
func IP6Tables(rules []Rule, vnic string) string { return iptables(rules, vnic, true) }

func iptables(rules []Rule, vnic string, v6 bool) string {
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	for _, r := range rules {
		if v6 && r.Src.IsValid() {
			continue
		}
		b.WriteString("-A FORWARD ")
		if r.Src.IsValid() {
			fmt.Fprintf(&b, "-s %s ", r.Src)
		}
		fmt.Fprintf(&b, "-o %s -p %s -m %s --dport %s -j %s\n", vnic, r.Proto, r.Proto, strings.Replace(r.ports(), "-", ":", 1), r.ipt())
	}
	b.WriteString("COMMIT\n")
	return b.String()
}
