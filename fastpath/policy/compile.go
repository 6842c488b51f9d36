package policy

import (
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
)

// Dim is one classification field: an LPM trie in the kernel whose value for
// a packet is the set of rules that field allows.
type Dim int

const (
	DimSrc4  Dim = iota // IPv4 source address
	DimDst4             // IPv4 destination address
	DimSrc6             // IPv6 source address
	DimDst6             // IPv6 destination address
	DimSport            // protocol, source port
	DimDport            // direction, protocol, destination port (or ICMP type)
	NumDims
)

var dimNames = [NumDims]string{"src4", "dst4", "src6", "dst6", "sport", "dport"}

func (d Dim) String() string { return dimNames[d] }

// KeyBytes is the length of each dim's key after the policy id.
var KeyBytes = [NumDims]int{4, 4, 16, 16, 4, 4}

// Kernel bitmap geometry (datapath.h): 256 words of 64 rules, summarised by
// 4 words of 64 bits.
const (
	BitmapWords  = MaxRules / 64
	SummaryWords = BitmapWords / 64
)

// Bitmap is a set of rules (bit i is rule i in evaluation order), stored
// sparsely: Summary bit w says word w is non-zero, and Words holds the
// non-zero words in order.
type Bitmap struct {
	Summary [SummaryWords]uint64
	Words   []uint64
}

// Entry is one prefix of a dim: packets whose key falls under it (and under
// no longer prefix) are allowed by exactly the rules in its Specific bitmap
// and in the dim's Any bitmap.
//
// Rules that do not constrain a field (any source, say) are not copied into
// every prefix entry of that field: they live once in the dim's Any bitmap,
// which every entry refers to. Copying them would make a policy's size grow
// with rules × prefixes.
type Entry struct {
	Key      []byte // KeyBytes[dim] bytes, network order
	Bits     int    // prefix length over Key
	Specific Bitmap // rules whose prefix for this field covers this entry
	Any      *Bitmap
}

// CompiledRule is a rule as the kernel evaluates it.
type CompiledRule struct {
	ID     uint32
	Action Action
}

// Compiled is a policy in kernel form.
type Compiled struct {
	Rules []CompiledRule // evaluation order: bit i is Rules[i]
	Dims  [NumDims][]Entry
}

// WordCount is how many bitmap words the compiled policy stores, identical
// bitmaps once.
func (c *Compiled) WordCount() int {
	n := 0
	seen := map[string]bool{}
	for _, es := range c.Dims {
		for i := range es {
			for _, b := range []*Bitmap{&es[i].Specific, es[i].Any} {
				if k := b.Key(); !seen[k] {
					seen[k] = true
					n += len(b.Words)
				}
			}
		}
	}
	return n
}

// EntryCount is the number of trie entries across all dims.
func (c *Compiled) EntryCount() int {
	n := 0
	for _, es := range c.Dims {
		n += len(es)
	}
	return n
}

// Compile turns a normalized policy into kernel structures.
func Compile(p *Policy) (*Compiled, error) {
	ordered := p.Ordered()
	c := &Compiled{Rules: make([]CompiledRule, len(ordered))}
	var tries [NumDims]*trie
	for d := range tries {
		tries[d] = newTrie(len(ordered))
	}
	for i, r := range ordered {
		c.Rules[i] = CompiledRule{ID: r.ID, Action: r.Action}
		if err := addRule(&tries, i, &r); err != nil {
			return nil, fmt.Errorf("rule id %d: %w", r.ID, err)
		}
	}
	for d := range tries {
		c.Dims[d] = tries[d].entries(KeyBytes[d])
	}
	return c, nil
}

func addRule(t *[NumDims]*trie, i int, r *Rule) error {
	// Addresses: a rule without sources allows every source of both
	// families; with sources, only the listed prefixes of their family.
	addAddrs := func(v4, v6 Dim, list []string) error {
		if len(list) == 0 {
			t[v4].add(nil, 0, i)
			t[v6].add(nil, 0, i)
			return nil
		}
		for _, s := range list {
			p, err := ParsePrefix(s)
			if err != nil {
				return err
			}
			a := p.Addr().AsSlice()
			if p.Addr().Is4() {
				t[v4].add(a, p.Bits(), i)
			} else {
				t[v6].add(a, p.Bits(), i)
			}
		}
		return nil
	}
	if err := addAddrs(DimSrc4, DimSrc6, r.Source); err != nil {
		return err
	}
	if err := addAddrs(DimDst4, DimDst6, r.Destination); err != nil {
		return err
	}

	proto, err := ParseProtocol(r.Protocol)
	if err != nil {
		return err
	}
	protos := []int{proto}
	if proto == ProtoAny && (len(r.SourcePorts) > 0 || len(r.DestinationPorts) > 0) {
		protos = []int{ProtoTCP, ProtoUDP} // ports exist only there
	}

	// Source port: key (proto, 0, port).
	for _, pr := range protos {
		switch {
		case pr == ProtoAny:
			t[DimSport].add(nil, 0, i)
		case len(r.SourcePorts) == 0:
			t[DimSport].add([]byte{byte(pr)}, 8, i)
		default:
			for _, s := range r.SourcePorts {
				rg, err := ParsePortRange(s)
				if err != nil {
					return err
				}
				for _, pp := range rangePrefixes(rg.Lo, rg.Hi) {
					t[DimSport].add([]byte{byte(pr), 0, byte(pp.value >> 8), byte(pp.value)}, 16+pp.bits, i)
				}
			}
		}
	}

	// Destination port: key (direction, proto, port or ICMP type).
	dirs := []byte{0, 1}
	switch r.Direction {
	case Outbound:
		dirs = []byte{0}
	case Inbound:
		dirs = []byte{1}
	}
	if r.Direction == AnyDir && proto == ProtoAny && len(r.DestinationPorts) == 0 && len(r.SourcePorts) == 0 {
		t[DimDport].add(nil, 0, i)
		return nil
	}
	for _, dir := range dirs {
		for _, pr := range protos {
			switch {
			case pr == ProtoAny:
				t[DimDport].add([]byte{dir}, 8, i)
			case len(r.ICMPTypes) > 0:
				for _, ty := range r.ICMPTypes {
					t[DimDport].add([]byte{dir, byte(pr), 0, ty}, 32, i)
				}
			case len(r.DestinationPorts) == 0:
				t[DimDport].add([]byte{dir, byte(pr)}, 16, i)
			default:
				for _, s := range r.DestinationPorts {
					rg, err := ParsePortRange(s)
					if err != nil {
						return err
					}
					for _, pp := range rangePrefixes(rg.Lo, rg.Hi) {
						t[DimDport].add([]byte{dir, byte(pr), byte(pp.value >> 8), byte(pp.value)}, 16+pp.bits, i)
					}
				}
			}
		}
	}
	return nil
}

type portPrefix struct {
	value uint16
	bits  int // over 16 bits
}

// rangePrefixes covers [lo, hi] with the fewest aligned prefixes.
func rangePrefixes(lo, hi uint16) []portPrefix {
	var out []portPrefix
	a, b := uint32(lo), uint32(hi)
	for a <= b {
		size := uint32(1)
		if a != 0 {
			size = a & -a // largest power of two aligned at a
		} else {
			size = 1 << 16
		}
		for a+size-1 > b {
			size >>= 1
		}
		out = append(out, portPrefix{value: uint16(a), bits: 16 - bits.TrailingZeros32(size)})
		a += size
	}
	return out
}

// trie is a binary trie of prefixes; each inserted prefix carries the rules
// that name it. entries() pushes every rule down to the longer prefixes under
// it, which is what makes the kernel's longest-prefix match exact.
type trie struct {
	root  *node
	rules int
}

type node struct {
	child  [2]*node
	rules  []int
	prefix bool
}

func newTrie(rules int) *trie { return &trie{root: &node{prefix: true}, rules: rules} }

func (t *trie) add(key []byte, bits, rule int) {
	n := t.root
	for b := 0; b < bits; b++ {
		bit := (key[b/8] >> (7 - b%8)) & 1
		if n.child[bit] == nil {
			n.child[bit] = &node{}
		}
		n = n.child[bit]
	}
	n.prefix = true
	if len(n.rules) == 0 || n.rules[len(n.rules)-1] != rule {
		n.rules = append(n.rules, rule)
	}
}

func (t *trie) entries(keyBytes int) []Entry {
	var out []Entry
	words := (t.rules + 63) / 64
	// The root's rules constrain nothing: they form the dim's Any bitmap.
	dense := make([]uint64, words)
	for _, r := range t.root.rules {
		dense[r/64] |= 1 << (r % 64)
	}
	anyRules := sparse(dense)
	var walk func(n *node, key []byte, depth int, inherited []uint64)
	walk = func(n *node, key []byte, depth int, inherited []uint64) {
		set := inherited
		if len(n.rules) > 0 && n != t.root {
			set = append([]uint64(nil), inherited...)
			for _, r := range n.rules {
				set[r/64] |= 1 << (r % 64)
			}
		}
		if n.prefix {
			out = append(out, Entry{Key: append([]byte(nil), key...), Bits: depth, Specific: sparse(set), Any: &anyRules})
		}
		for bit := 0; bit < 2; bit++ {
			if c := n.child[bit]; c != nil {
				if bit == 1 {
					key[depth/8] |= 1 << (7 - depth%8)
				}
				walk(c, key, depth+1, set)
				key[depth/8] &^= 1 << (7 - depth%8)
			}
		}
	}
	walk(t.root, make([]byte, keyBytes), 0, make([]uint64, words))
	return out
}

func sparse(dense []uint64) Bitmap {
	var b Bitmap
	for w, v := range dense {
		if v != 0 {
			b.Summary[w/64] |= 1 << (w % 64)
			b.Words = append(b.Words, v)
		}
	}
	return b
}

// Key identifies a bitmap, for storing identical ones once.
func (b *Bitmap) Key() string {
	k := make([]byte, 0, 8*(SummaryWords+len(b.Words)))
	for _, s := range b.Summary {
		k = binary.LittleEndian.AppendUint64(k, s)
	}
	for _, w := range b.Words {
		k = binary.LittleEndian.AppendUint64(k, w)
	}
	return string(k)
}

// has reports whether bitmap word w is non-zero, and where among the stored
// words it is.
func (b *Bitmap) has(q, bit int) (bool, int) {
	if b.Summary[q]&(1<<bit) == 0 {
		return false, 0
	}
	r := bits.OnesCount64(b.Summary[q] & (1<<bit - 1))
	for j := 0; j < q; j++ {
		r += bits.OnesCount64(b.Summary[j])
	}
	return true, r
}

// Prefix renders an address entry for diagnostics.
func (e *Entry) Prefix() netip.Prefix {
	a, _ := netip.AddrFromSlice(e.Key)
	return netip.PrefixFrom(a, e.Bits)
}
