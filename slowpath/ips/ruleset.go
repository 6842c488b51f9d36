package ips

import (
	"bytes"
	"fmt"
	"os"
	"slices"

	"github.com/palisade/palisade/slowpath/ips/rule"
)

// point is where a rule is evaluated.
type point uint8

const (
	atPacket point = iota // every packet: IP, UDP and ICMP rules; TCP rules with dsize or no content
	atStream              // new reassembled data of a TCP direction
	atHTTP                // each complete HTTP request
	numPoints
)

// compiled is a rule ready to evaluate.
type compiled struct {
	*rule.Rule
	idx        int
	src, dst   *rule.AddrSet
	sport      *rule.PortSet
	dport      *rule.PortSet
	category   string
	severity   int
	point      point
	byBuffer   [rule.NumBuffers][]rule.Match
	fast       *rule.Content // nil: the rule is always evaluated
	fastBuffer rule.Buffer
	pcre       bool // has a positive pcre on the payload
}

// RuleSet is a compiled, immutable set of rules shared by engines.
type RuleSet struct {
	rules   []*compiled
	refused []*rule.Error
	pre     [numPoints]*prefilter
}

// LoadStats are the totals of a load.
type LoadStats struct {
	Loaded  int
	Refused int
}

// Stats returns the loaded and refused totals.
func (rs *RuleSet) Stats() LoadStats { return LoadStats{len(rs.rules), len(rs.refused)} }

// Refused lists the refused rules with their reasons, in file order.
func (rs *RuleSet) Refused() []*rule.Error { return rs.refused }

// Len is the number of rules loaded.
func (rs *RuleSet) Len() int { return len(rs.rules) }

// LoadFiles parses and compiles rule files. A file that cannot be read is
// an error; a rule that cannot be loaded is refused and listed.
func LoadFiles(cfg *Config, paths ...string) (*RuleSet, error) {
	var all []*rule.Rule
	var refused []*rule.Error
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("rules: %w", err)
		}
		rules, bad, err := rule.ParseReader(f, p)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("rules: %w", err)
		}
		all = append(all, rules...)
		refused = append(refused, bad...)
	}
	return Compile(cfg, all, refused), nil
}

// LoadString parses and compiles rules from text (tests, the benchmark).
func LoadString(cfg *Config, text string) *RuleSet {
	rules, bad, _ := rule.ParseReader(bytes.NewReader([]byte(text)), "")
	return Compile(cfg, rules, bad)
}

// Compile resolves variables and classtypes and builds the prefilters.
// Rules that fail are added to the refused list given (parse refusals).
func Compile(cfg *Config, rules []*rule.Rule, refused []*rule.Error) *RuleSet {
	if cfg == nil {
		cfg = DefaultConfig()
	}
	rs := &RuleSet{refused: refused}
	seen := map[uint32]bool{}
	for _, r := range rules {
		refuse := func(reason string) {
			rs.refused = append(rs.refused, &rule.Error{File: r.File, Line: r.Line, SID: r.SID, Reason: reason})
		}
		if seen[r.SID] {
			refuse("duplicate sid")
			continue
		}
		c, err := compileRule(cfg, r)
		if err != nil {
			refuse(err.Error())
			continue
		}
		seen[r.SID] = true
		c.idx = len(rs.rules)
		rs.rules = append(rs.rules, c)
	}
	slices.SortStableFunc(rs.refused, func(a, b *rule.Error) int {
		if a.File != b.File {
			return 0 // keep the order of the files given
		}
		return a.Line - b.Line
	})
	for p := range numPoints {
		rs.pre[p] = buildPrefilter(rs.rules, point(p))
	}
	return rs
}

func compileRule(cfg *Config, r *rule.Rule) (*compiled, error) {
	c := &compiled{Rule: r}
	var err error
	if c.src, err = rule.ParseAddrs(r.Src, &cfg.Vars); err != nil {
		return nil, reason(err)
	}
	if c.dst, err = rule.ParseAddrs(r.Dst, &cfg.Vars); err != nil {
		return nil, reason(err)
	}
	if c.sport, err = rule.ParsePorts(r.SrcPorts, &cfg.Vars); err != nil {
		return nil, reason(err)
	}
	if c.dport, err = rule.ParsePorts(r.DstPorts, &cfg.Vars); err != nil {
		return nil, reason(err)
	}
	c.severity = DefaultPriority
	if r.Classtype != "" {
		cl, ok := cfg.Classifications[r.Classtype]
		if !ok {
			return nil, fmt.Errorf("unknown classtype %q", r.Classtype)
		}
		c.category, c.severity = cl.Description, cl.Priority
	}
	if r.Priority != 0 {
		c.severity = r.Priority
	}
	for _, m := range r.Matches {
		c.byBuffer[m.Buffer] = append(c.byBuffer[m.Buffer], m)
		if m.Buffer == rule.BufPayload && m.PCRE != nil && !m.PCRE.Negated {
			c.pcre = true
		}
	}
	switch {
	case r.Proto == rule.ProtoHTTP || r.UsesHTTP():
		c.point = atHTTP
	case r.Proto == rule.ProtoTCP && r.Dsize == nil && len(r.Matches) > 0:
		c.point = atStream
	default:
		c.point = atPacket
	}
	c.fast, c.fastBuffer = fastPattern(r)
	return c, nil
}

// reason strips a rule.Error down to its reason: Compile adds where and sid.
func reason(err error) error {
	if e, ok := err.(*rule.Error); ok {
		return fmt.Errorf("%s", e.Reason)
	}
	return err
}

// fastPattern picks the content the prefilter looks for: the one marked
// fast_pattern, else the longest positive content (the first of equals).
func fastPattern(r *rule.Rule) (*rule.Content, rule.Buffer) {
	var best *rule.Content
	var buf rule.Buffer
	for _, m := range r.Matches {
		c := m.Content
		if c == nil || c.Negated {
			continue
		}
		if c.FastPattern {
			return c, m.Buffer
		}
		if best == nil || len(c.Pattern) > len(best.Pattern) {
			best, buf = c, m.Buffer
		}
	}
	return best, buf
}
