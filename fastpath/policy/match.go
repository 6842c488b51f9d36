package policy

import (
	"math/bits"
	"net/netip"
)

// Packet is what classification looks at.
type Packet struct {
	Dir      Direction // Inbound (to the guest) or Outbound (from it)
	Proto    int
	Src, Dst netip.Addr
	Sport    uint16 // TCP/UDP only
	Dport    uint16 // TCP/UDP only
	ICMPType uint8  // ICMP/ICMPv6 only
}

// Decision is the outcome of classifying a packet.
type Decision struct {
	Matched bool   // a terminating rule matched (else the default action applies)
	Index   int    // its position in evaluation order
	RuleID  uint32 // its id (0 for the default)
	Action  Action // what happens
	LogID   uint32 // the first log-only rule before it, 0 if none
}

// Evaluate is the reference semantics: walk the rules in evaluation order
// and stop at the first terminating match.
func (p *Policy) Evaluate(pkt Packet) Decision {
	d := Decision{Index: -1, Action: p.DefaultAction}
	for i, r := range p.Ordered() {
		if !r.matches(pkt) {
			continue
		}
		if r.Action == LogOnly {
			if d.LogID == 0 {
				d.LogID = r.ID
			}
			continue
		}
		d.Matched, d.Index, d.RuleID, d.Action = true, i, r.ID, r.Action
		return d
	}
	return d
}

func (r *Rule) matches(pkt Packet) bool {
	if r.Direction != AnyDir && r.Direction != "" && r.Direction != pkt.Dir {
		return false
	}
	proto, _ := ParseProtocol(r.Protocol)
	if proto != ProtoAny && proto != pkt.Proto {
		return false
	}
	hasPorts := len(r.SourcePorts) > 0 || len(r.DestinationPorts) > 0
	if hasPorts && pkt.Proto != ProtoTCP && pkt.Proto != ProtoUDP {
		return false
	}
	if !addrIn(r.Source, pkt.Src) || !addrIn(r.Destination, pkt.Dst) {
		return false
	}
	if !portIn(r.SourcePorts, pkt.Sport) || !portIn(r.DestinationPorts, pkt.Dport) {
		return false
	}
	if len(r.ICMPTypes) > 0 {
		found := false
		for _, t := range r.ICMPTypes {
			found = found || t == pkt.ICMPType
		}
		if !found {
			return false
		}
	}
	return true
}

func addrIn(list []string, a netip.Addr) bool {
	if len(list) == 0 {
		return true
	}
	for _, s := range list {
		if p, err := ParsePrefix(s); err == nil && p.Contains(a) {
			return true
		}
	}
	return false
}

func portIn(list []string, port uint16) bool {
	if len(list) == 0 {
		return true
	}
	for _, s := range list {
		if r, err := ParsePortRange(s); err == nil && port >= r.Lo && port <= r.Hi {
			return true
		}
	}
	return false
}

// Keys returns the packet's key bytes for each dim, as the kernel builds
// them (a zero slice for the dims of the other address family).
func (pkt Packet) Keys() [NumDims][]byte {
	var k [NumDims][]byte
	src, dst := pkt.Src.AsSlice(), pkt.Dst.AsSlice()
	if pkt.Src.Is4() {
		k[DimSrc4], k[DimDst4] = src, dst
	} else {
		k[DimSrc6], k[DimDst6] = src, dst
	}
	var sport, dport uint16
	switch pkt.Proto {
	case ProtoTCP, ProtoUDP:
		sport, dport = pkt.Sport, pkt.Dport
	case ProtoICMP, ProtoICMPv6:
		dport = uint16(pkt.ICMPType)
	}
	dir := byte(0)
	if pkt.Dir == Inbound {
		dir = 1
	}
	k[DimSport] = []byte{byte(pkt.Proto), 0, byte(sport >> 8), byte(sport)}
	k[DimDport] = []byte{dir, byte(pkt.Proto), byte(dport >> 8), byte(dport)}
	return k
}

// Classify runs the kernel's algorithm over the compiled form: a longest
// prefix match per dim, then the intersection of their sparse bitmaps in rule
// order. It exists to test Compile without a kernel; the kernel is tested
// against Evaluate separately.
func (c *Compiled) Classify(pkt Packet, defaultAction Action) Decision {
	d := Decision{Index: -1, Action: defaultAction}
	keys := pkt.Keys()
	dims := []Dim{DimSrc4, DimDst4, DimSport, DimDport}
	if !pkt.Src.Is4() {
		dims = []Dim{DimSrc6, DimDst6, DimSport, DimDport}
	}
	var found [4]*Entry
	for i, dim := range dims {
		found[i] = longestMatch(c.Dims[dim], keys[dim])
		if found[i] == nil {
			return d
		}
	}
	var s [SummaryWords]uint64
	for q := range s {
		s[q] = ^uint64(0)
		for _, e := range found {
			s[q] &= e.Specific.Summary[q] | e.Any.Summary[q]
		}
	}
	for q := 0; q < SummaryWords; q++ {
		for s[q] != 0 {
			b := bits.TrailingZeros64(s[q])
			s[q] &= s[q] - 1
			word := ^uint64(0)
			for _, e := range found {
				var w uint64
				if ok, r := e.Specific.has(q, b); ok {
					w |= e.Specific.Words[r]
				}
				if ok, r := e.Any.has(q, b); ok {
					w |= e.Any.Words[r]
				}
				word &= w
			}
			for word != 0 {
				bit := bits.TrailingZeros64(word)
				word &= word - 1
				idx := (q*64+b)*64 + bit
				cr := c.Rules[idx]
				if cr.Action == LogOnly {
					if d.LogID == 0 {
						d.LogID = cr.ID
					}
					continue
				}
				d.Matched, d.Index, d.RuleID, d.Action = true, idx, cr.ID, cr.Action
				return d
			}
		}
	}
	return d
}

func longestMatch(entries []Entry, key []byte) *Entry {
	var best *Entry
	for i := range entries {
		e := &entries[i]
		if (best == nil || e.Bits > best.Bits) && prefixMatch(e.Key, e.Bits, key) {
			best = e
		}
	}
	return best
}

func prefixMatch(prefix []byte, n int, key []byte) bool {
	for b := 0; b < n; b++ {
		if (prefix[b/8]>>(7-b%8))&1 != (key[b/8]>>(7-b%8))&1 {
			return false
		}
	}
	return true
}
