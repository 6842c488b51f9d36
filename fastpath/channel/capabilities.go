package channel

import (
	"fmt"
	"math/bits"
	"sort"
	"strings"
)

// Capabilities is the set of features a side announces in the handshake. The
// binding runs with the intersection.
type Capabilities uint64

// Capability bits. New bits may be added within a revision; a peer ignores
// bits it does not know.
const (
	CapFirewall Capabilities = 1 << iota // stateful firewall in the fast path
	CapIPS                               // intrusion prevention in the slow path
	CapWRS                               // web reputation in the slow path
	CapOffload                           // per-flow offload/block decisions
	CapTap                               // tap (detect-only) mode
	CapEvents                            // event batches (alerts, protection failures)
)

var capNames = []struct {
	c    Capabilities
	name string
}{
	{CapFirewall, "firewall"}, {CapIPS, "ips"}, {CapWRS, "wrs"},
	{CapOffload, "offload"}, {CapTap, "tap"}, {CapEvents, "events"},
}

// Has reports whether every capability in o is in c.
func (c Capabilities) Has(o Capabilities) bool { return c&o == o }

// Names lists c's capabilities by name; unknown bits appear as "bit<N>".
func (c Capabilities) Names() []string {
	var out []string
	rest := c
	for _, n := range capNames {
		if c&n.c != 0 {
			out = append(out, n.name)
			rest &^= n.c
		}
	}
	for rest != 0 {
		b := bits.TrailingZeros64(uint64(rest))
		out = append(out, fmt.Sprintf("bit%d", b))
		rest &^= 1 << b
	}
	return out
}

func (c Capabilities) String() string {
	if c == 0 {
		return "none"
	}
	return strings.Join(c.Names(), ",")
}

// ParseCapabilities parses a comma-separated list such as "firewall,ips".
func ParseCapabilities(s string) (Capabilities, error) {
	var c Capabilities
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		found := false
		for _, n := range capNames {
			if n.name == f {
				c |= n.c
				found = true
			}
		}
		if !found {
			known := make([]string, 0, len(capNames))
			for _, n := range capNames {
				known = append(known, n.name)
			}
			sort.Strings(known)
			return 0, fmt.Errorf("unknown capability %q (known: %s)", f, strings.Join(known, ", "))
		}
	}
	return c, nil
}
