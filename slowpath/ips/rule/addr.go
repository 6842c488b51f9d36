package rule

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Vars resolves $NAME in addresses and ports. A nil Vars resolves nothing
// but still lets syntax be checked: variables then match anything.
type Vars struct {
	Addresses map[string]string
	Ports     map[string]string
}

const maxVarDepth = 16

// set is a parsed address or port expression: any, a leaf (prefix or port
// range), a variable, or a bracketed list, each possibly negated.
type set[L any] struct {
	any   bool
	neg   bool
	isVar bool // unresolved (syntax check only): matches anything
	leaf  L
	list  []*set[L]
}

func (s *set[L]) contains(in func(L) bool) bool {
	var r bool
	switch {
	case s.any || s.isVar:
		r = true
	case s.list != nil:
		// Positive elements form the set (all values if there are none);
		// negated elements are cut out of it.
		hasPos, inPos := false, false
		r = true
		for _, e := range s.list {
			if e.neg {
				if !e.contains(in) {
					r = false
					break
				}
				continue
			}
			hasPos = true
			inPos = inPos || e.contains(in)
		}
		r = r && (!hasPos || inPos)
	default:
		r = in(s.leaf)
	}
	return r != s.neg
}

// setSyntax names one kind of set for parsing and messages.
type setSyntax[L any] struct {
	kind       string // "address" or "port"
	vars       map[string]string
	unresolved bool // no Vars given: variables match anything
	leaf       func(string) (L, error)
}

func (p *setSyntax[L]) parse(s string, depth int) (*set[L], error) {
	if depth > maxVarDepth {
		return nil, reasonf("%s variables nest too deep (a cycle?)", p.kind)
	}
	s = strings.TrimSpace(s)
	neg := false
	for strings.HasPrefix(s, "!") {
		neg = !neg
		s = strings.TrimSpace(s[1:])
	}
	switch {
	case s == "":
		return nil, reasonf("empty %s", p.kind)
	case s == "any":
		if neg {
			return nil, reasonf("%s \"!any\" matches nothing", p.kind)
		}
		return &set[L]{any: true}, nil
	case strings.HasPrefix(s, "$"):
		name := s[1:]
		if p.unresolved {
			return &set[L]{isVar: true, neg: neg}, nil
		}
		v, ok := p.vars[name]
		if !ok {
			return nil, reasonf("undefined %s variable $%s", p.kind, name)
		}
		inner, err := p.parse(v, depth+1)
		if err != nil {
			return nil, err
		}
		return &set[L]{list: []*set[L]{inner}, neg: neg}, nil
	case strings.HasPrefix(s, "["):
		if !strings.HasSuffix(s, "]") {
			return nil, reasonf("%s list %q is not closed", p.kind, s)
		}
		parts, err := splitList(s[1 : len(s)-1])
		if err != nil {
			return nil, reasonf("%s list %q: %v", p.kind, s, err)
		}
		out := &set[L]{neg: neg, list: make([]*set[L], 0, len(parts))}
		for _, part := range parts {
			e, err := p.parse(part, depth)
			if err != nil {
				return nil, err
			}
			out.list = append(out.list, e)
		}
		return out, nil
	}
	l, err := p.leaf(s)
	if err != nil {
		return nil, err
	}
	return &set[L]{leaf: l, neg: neg}, nil
}

// splitList splits a bracketed list's inside at top-level commas.
func splitList(s string) ([]string, error) {
	var parts []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[':
			depth++
		case ']':
			depth--
			if depth < 0 {
				return nil, fmt.Errorf("unbalanced ']'")
			}
		case ',':
			if depth == 0 {
				parts = append(parts, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("unbalanced '['")
	}
	parts = append(parts, strings.TrimSpace(s[start:]))
	for _, p := range parts {
		if p == "" {
			return nil, fmt.Errorf("empty element")
		}
	}
	return parts, nil
}

// AddrSet is a parsed address expression.
type AddrSet struct{ s *set[netip.Prefix] }

// Contains says whether a is in the set.
func (a AddrSet) Contains(ip netip.Addr) bool {
	ip = ip.Unmap()
	return a.s.contains(func(p netip.Prefix) bool { return p.Contains(ip) })
}

// IsAny says the set is "any".
func (a AddrSet) IsAny() bool { return a.s.any && !a.s.neg }

// ParseAddrs parses an address expression: any, an address, a CIDR, $VAR,
// a bracketed list of those, and '!' before any of them.
func ParseAddrs(s string, vars *Vars) (*AddrSet, error) {
	p := setSyntax[netip.Prefix]{kind: "address", unresolved: vars == nil, leaf: parsePrefix}
	if vars != nil {
		p.vars = vars.Addresses
	}
	st, err := p.parse(s, 0)
	if err != nil {
		return nil, err
	}
	return &AddrSet{st}, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, reasonf("invalid address %q", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, reasonf("invalid address %q", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

type portRange struct{ lo, hi uint16 }

// PortSet is a parsed port expression.
type PortSet struct{ s *set[portRange] }

// Contains says whether port p is in the set.
func (ps PortSet) Contains(p uint16) bool {
	return ps.s.contains(func(r portRange) bool { return p >= r.lo && p <= r.hi })
}

// IsAny says the set is "any".
func (ps PortSet) IsAny() bool { return ps.s.any && !ps.s.neg }

// ParsePorts parses a port expression: any, N, N:M, N:, :M, $VAR, lists in
// brackets, and '!'.
func ParsePorts(s string, vars *Vars) (*PortSet, error) {
	p := setSyntax[portRange]{kind: "port", unresolved: vars == nil, leaf: parsePortRange}
	if vars != nil {
		p.vars = vars.Ports
	}
	st, err := p.parse(s, 0)
	if err != nil {
		return nil, err
	}
	return &PortSet{st}, nil
}

func parsePortRange(s string) (portRange, error) {
	port := func(x string, def uint16) (uint16, error) {
		x = strings.TrimSpace(x)
		if x == "" {
			return def, nil
		}
		n, err := strconv.ParseUint(x, 10, 16)
		if err != nil {
			return 0, reasonf("invalid port %q", s)
		}
		return uint16(n), nil
	}
	lo, hi, isRange := strings.Cut(s, ":")
	a, err := port(lo, 0)
	if err != nil {
		return portRange{}, err
	}
	b := a
	if isRange {
		if b, err = port(hi, 65535); err != nil {
			return portRange{}, err
		}
		if strings.TrimSpace(lo) == "" && strings.TrimSpace(hi) == "" || a > b {
			return portRange{}, reasonf("invalid port range %q", s)
		}
	}
	return portRange{a, b}, nil
}
