package wrs

import (
	"bytes"
	"fmt"
	"os"
	"slices"

	"go.yaml.in/yaml/v3"
)

// DefaultBlockThreshold is the score from which a site is blocked when a
// policy does not say.
const DefaultBlockThreshold = 70

// Policy is what a guest allows.
type Policy struct {
	BlockThreshold int      `yaml:"block-threshold"`  // score ≥ this blocks; 0 means DefaultBlockThreshold
	Allow          []string `yaml:"allow-categories"` // never blocked, whatever the score
	Deny           []string `yaml:"deny-categories"`  // always blocked, whatever the score
}

// Decision is a policy's answer for one match.
type Decision uint8

const (
	Pass  Decision = iota
	Block          // the score reached the threshold
	Deny           // the category is denied
)

// Decide applies the policy to a feed match: allow-listed categories pass,
// deny-listed categories block, and otherwise the score decides.
func (p *Policy) Decide(m Match) Decision {
	switch {
	case slices.Contains(p.Allow, m.Category):
		return Pass
	case slices.Contains(p.Deny, m.Category):
		return Deny
	}
	t := p.BlockThreshold
	if t == 0 {
		t = DefaultBlockThreshold
	}
	if m.Score >= t {
		return Block
	}
	return Pass
}

// Policies are the default policy and per-guest overrides.
type Policies struct {
	Default Policy            `yaml:",inline"`
	Guests  map[uint32]Policy `yaml:"guests"`
}

// For returns a guest's policy: the default with what the guest's entry
// sets overridden. A block-threshold of 0 and an absent list are unset; an
// empty list ([]) clears the default's. A category the guest lists in one
// list is taken out of the other list it inherits, so the guest's word on
// it stands.
func (ps *Policies) For(guest uint32) *Policy {
	g, ok := ps.Guests[guest]
	if !ok {
		return &ps.Default
	}
	p := ps.Default
	if g.BlockThreshold != 0 {
		p.BlockThreshold = g.BlockThreshold
	}
	switch {
	case g.Allow != nil:
		p.Allow = g.Allow
	case g.Deny != nil:
		p.Allow = without(p.Allow, g.Deny)
	}
	switch {
	case g.Deny != nil:
		p.Deny = g.Deny
	case g.Allow != nil:
		p.Deny = without(p.Deny, g.Allow)
	}
	return &p
}

// without is list less the categories in drop.
func without(list, drop []string) []string {
	var out []string
	for _, c := range list {
		if !slices.Contains(drop, c) {
			out = append(out, c)
		}
	}
	return out
}

func (p *Policy) check() error {
	if p.BlockThreshold < 0 || p.BlockThreshold > 101 {
		return fmt.Errorf("block-threshold %d is not from 0 to 101 (101 blocks on score never)", p.BlockThreshold)
	}
	for _, c := range p.Allow {
		if slices.Contains(p.Deny, c) {
			return fmt.Errorf("category %q is both allowed and denied", c)
		}
	}
	return nil
}

// LoadPolicies reads the web-reputation section of a config file:
//
//	web-reputation:
//	  block-threshold: 70
//	  allow-categories: [news]
//	  deny-categories: [malware, phishing]
//	  guests:
//	    7: {block-threshold: 50}
//
// A file without the section gives the defaults.
func LoadPolicies(path string) (*Policies, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("wrs config: %w", err)
	}
	data = bytes.TrimPrefix(data, []byte("%YAML 1.1\n"))
	var y struct {
		WRS Policies `yaml:"web-reputation"`
	}
	if err := yaml.Unmarshal(data, &y); err != nil {
		return nil, fmt.Errorf("wrs config %s: %w", path, err)
	}
	if err := y.WRS.Default.check(); err != nil {
		return nil, fmt.Errorf("wrs config %s: %w", path, err)
	}
	for g, p := range y.WRS.Guests {
		if err := p.check(); err != nil {
			return nil, fmt.Errorf("wrs config %s: guest %d: %w", path, g, err)
		}
	}
	return &y.WRS, nil
}
