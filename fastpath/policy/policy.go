package policy

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
)

// MaxRules bounds one policy (the kernel's bitmaps hold 16,384 rules).
const MaxRules = 16384

// Action is what a matching rule does.
type Action string

const (
	Allow      Action = "allow"       // pass, tracked, inspected if the policy says so
	Deny       Action = "deny"        // drop
	ForceAllow Action = "force-allow" // pass, tracked, and exempt from the invalid-packet policy
	Bypass     Action = "bypass"      // pass without state or inspection (cluster heartbeats)
	LogOnly    Action = "log-only"    // report and keep evaluating
)

// rank orders actions within one priority, after the original product:
// bypass, force-allow, deny, allow, log-only.
func (a Action) rank() int {
	switch a {
	case Bypass:
		return 0
	case ForceAllow:
		return 1
	case Deny:
		return 2
	case Allow:
		return 3
	}
	return 4
}

// Direction is relative to the guest.
type Direction string

const (
	Inbound  Direction = "inbound"  // to the guest
	Outbound Direction = "outbound" // from the guest
	AnyDir   Direction = "any"
)

// Mode says whether the guest's policy is enforced.
type Mode string

const (
	Inline Mode = "inline" // enforce
	Tap    Mode = "tap"    // evaluate and report, never drop
)

// InvalidPolicy is what happens to packets that fit no connection state.
type InvalidPolicy string

const (
	InvalidDrop InvalidPolicy = "drop" // drop, count, report
	InvalidPass InvalidPolicy = "pass" // count; then judged by the rules without state
	InvalidLog  InvalidPolicy = "log"  // as pass, and report
)

// FragmentPolicy is what happens to IP fragments.
type FragmentPolicy string

const (
	FragmentsFollow FragmentPolicy = "follow" // later fragments follow the first one's verdict
	FragmentsDrop   FragmentPolicy = "drop"   // every fragment is dropped
)

// Duration is a time.Duration written as "30s" in JSON.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Timeouts are idle timeouts per connection state; zero means the default.
type Timeouts struct {
	TCPSyn         Duration `json:"tcp_syn,omitempty"`
	TCPEstablished Duration `json:"tcp_established,omitempty"`
	TCPFinWait     Duration `json:"tcp_fin_wait,omitempty"`
	TCPCloseWait   Duration `json:"tcp_close_wait,omitempty"`
	TCPTimeWait    Duration `json:"tcp_time_wait,omitempty"`
	TCPClosed      Duration `json:"tcp_closed,omitempty"`
	UDP            Duration `json:"udp,omitempty"`
	UDPReplied     Duration `json:"udp_replied,omitempty"`
	ICMP           Duration `json:"icmp,omitempty"`
	Other          Duration `json:"other,omitempty"`
}

// Policy is one guest's firewall policy.
type Policy struct {
	Name           string         `json:"name,omitempty"`
	Mode           Mode           `json:"mode,omitempty"`            // default inline
	DefaultAction  Action         `json:"default_action,omitempty"`  // allow or deny; default deny
	InvalidPackets InvalidPolicy  `json:"invalid_packets,omitempty"` // default drop
	Fragments      FragmentPolicy `json:"fragments,omitempty"`       // default follow
	PassARP        *bool          `json:"pass_arp,omitempty"`        // default true
	PassND         *bool          `json:"pass_nd,omitempty"`         // default true
	PassNonIP      bool           `json:"pass_non_ip,omitempty"`     // default false
	MaxTCP         uint32         `json:"max_tcp_connections,omitempty"`
	MaxUDP         uint32         `json:"max_udp_connections,omitempty"` // UDP, ICMP and other protocols
	Timeouts       Timeouts       `json:"timeouts,omitempty"`
	// PickupGrace is how long after activation connections already open are
	// adopted mid-stream instead of being treated as invalid: activation is
	// hitless for them. Default 60s.
	PickupGrace Duration `json:"pickup_grace,omitempty"`
	// Inspection lists the slow-path features allowed flows are sent to
	// ("ips", "wrs"); empty keeps every flow in the kernel.
	Inspection []string `json:"inspection,omitempty"`
	// InspectionFailure is what happens to a packet that should be
	// inspected when no verdict can be had (no slow path bound, the
	// verdict late, the queue full): "open" passes it (default), "closed"
	// drops it. Both are counted.
	InspectionFailure string `json:"inspection_failure,omitempty"`
	Rules             []Rule `json:"rules"`
}

// Rule is one firewall rule. Empty match fields match anything.
type Rule struct {
	ID               uint32    `json:"id"`
	Priority         int       `json:"priority,omitempty"` // 0 (lowest, the default) to 4 (highest)
	Action           Action    `json:"action"`
	Direction        Direction `json:"direction,omitempty"` // default any
	Protocol         string    `json:"protocol,omitempty"`  // tcp, udp, icmp, icmpv6, any, or a number
	Source           []string  `json:"source,omitempty"`    // CIDRs or addresses
	Destination      []string  `json:"destination,omitempty"`
	SourcePorts      []string  `json:"source_ports,omitempty"` // "80" or "1024-65535"
	DestinationPorts []string  `json:"destination_ports,omitempty"`
	ICMPTypes        []uint8   `json:"icmp_types,omitempty"`
	Description      string    `json:"description,omitempty"`
}

// Defaults.
const (
	DefaultMaxTCP      = 10000
	DefaultMaxUDP      = 10000
	DefaultPickupGrace = Duration(60 * time.Second)
)

// DefaultTimeouts are the idle timeouts used where a policy sets none.
var DefaultTimeouts = Timeouts{
	TCPSyn:         Duration(30 * time.Second),
	TCPEstablished: Duration(time.Hour),
	TCPFinWait:     Duration(2 * time.Minute),
	TCPCloseWait:   Duration(time.Minute),
	TCPTimeWait:    Duration(2 * time.Minute),
	TCPClosed:      Duration(10 * time.Second),
	UDP:            Duration(30 * time.Second),
	UDPReplied:     Duration(3 * time.Minute),
	ICMP:           Duration(30 * time.Second),
	Other:          Duration(time.Minute),
}

// Protocol numbers the rules know by name.
const (
	ProtoAny    = -1
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// Error is a policy validation error; Rule is the 0-based index of the rule
// at fault, or -1 for the policy itself.
type Error struct {
	Rule   int
	ID     uint32
	Field  string
	Reason string
}

func (e *Error) Error() string {
	if e.Rule < 0 {
		return fmt.Sprintf("policy: %s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("policy: rule %d (id %d): %s: %s", e.Rule, e.ID, e.Field, e.Reason)
}

// Parse decodes and validates a JSON policy. Unknown fields are errors: a
// misspelt field must not silently weaken a policy.
func Parse(data []byte) (*Policy, error) {
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("policy: trailing data after the JSON object")
	}
	if err := p.Normalize(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Normalize fills defaults and validates every field, so the kernel only
// ever sees a policy it can enforce exactly.
func (p *Policy) Normalize() error {
	perr := func(field, format string, args ...any) error {
		return &Error{Rule: -1, Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	switch p.Mode {
	case "":
		p.Mode = Inline
	case Inline, Tap:
	default:
		return perr("mode", "%q is not inline or tap", p.Mode)
	}
	switch p.DefaultAction {
	case "":
		p.DefaultAction = Deny
	case Allow, Deny:
	default:
		return perr("default_action", "%q is not allow or deny", p.DefaultAction)
	}
	switch p.InvalidPackets {
	case "":
		p.InvalidPackets = InvalidDrop
	case InvalidDrop, InvalidPass, InvalidLog:
	default:
		return perr("invalid_packets", "%q is not drop, pass or log", p.InvalidPackets)
	}
	switch p.Fragments {
	case "":
		p.Fragments = FragmentsFollow
	case FragmentsFollow, FragmentsDrop:
	default:
		return perr("fragments", "%q is not follow or drop", p.Fragments)
	}
	yes := true
	if p.PassARP == nil {
		p.PassARP = &yes
	}
	if p.PassND == nil {
		p.PassND = &yes
	}
	if p.MaxTCP == 0 {
		p.MaxTCP = DefaultMaxTCP
	}
	if p.MaxUDP == 0 {
		p.MaxUDP = DefaultMaxUDP
	}
	if p.PickupGrace == 0 {
		p.PickupGrace = DefaultPickupGrace
	}
	if p.PickupGrace < 0 {
		return perr("pickup_grace", "must not be negative")
	}
	if err := p.Timeouts.fill(); err != nil {
		return err
	}
	for _, f := range p.Inspection {
		if f != "ips" && f != "wrs" {
			return perr("inspection", "unknown feature %q (known: ips, wrs)", f)
		}
	}
	switch p.InspectionFailure {
	case "":
		p.InspectionFailure = "open"
	case "open", "closed":
	default:
		return perr("inspection_failure", "%q is not open or closed", p.InspectionFailure)
	}
	if len(p.Rules) > MaxRules {
		return perr("rules", "%d rules exceed the maximum of %d", len(p.Rules), MaxRules)
	}
	seen := make(map[uint32]int, len(p.Rules))
	for i := range p.Rules {
		r := &p.Rules[i]
		if r.ID == 0 {
			return &Error{Rule: i, Field: "id", Reason: "must be a positive number (0 names the default action in reports)"}
		}
		if j, dup := seen[r.ID]; dup {
			return &Error{Rule: i, ID: r.ID, Field: "id", Reason: fmt.Sprintf("duplicates rule %d", j)}
		}
		seen[r.ID] = i
		if err := r.normalize(); err != nil {
			err.Rule, err.ID = i, r.ID
			return err
		}
	}
	return nil
}

func (t *Timeouts) fill() error {
	pairs := []struct {
		name string
		v    *Duration
		def  Duration
	}{
		{"tcp_syn", &t.TCPSyn, DefaultTimeouts.TCPSyn}, {"tcp_established", &t.TCPEstablished, DefaultTimeouts.TCPEstablished},
		{"tcp_fin_wait", &t.TCPFinWait, DefaultTimeouts.TCPFinWait}, {"tcp_close_wait", &t.TCPCloseWait, DefaultTimeouts.TCPCloseWait},
		{"tcp_time_wait", &t.TCPTimeWait, DefaultTimeouts.TCPTimeWait}, {"tcp_closed", &t.TCPClosed, DefaultTimeouts.TCPClosed},
		{"udp", &t.UDP, DefaultTimeouts.UDP}, {"udp_replied", &t.UDPReplied, DefaultTimeouts.UDPReplied},
		{"icmp", &t.ICMP, DefaultTimeouts.ICMP}, {"other", &t.Other, DefaultTimeouts.Other},
	}
	for _, p := range pairs {
		if *p.v == 0 {
			*p.v = p.def
		}
		if *p.v < Duration(time.Second) || *p.v > Duration(7*24*time.Hour) {
			return &Error{Rule: -1, Field: "timeouts." + p.name, Reason: fmt.Sprintf("%s is outside 1s..168h", time.Duration(*p.v))}
		}
	}
	return nil
}

func (r *Rule) normalize() *Error {
	rerr := func(field, format string, args ...any) *Error {
		return &Error{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	switch r.Action {
	case Allow, Deny, ForceAllow, Bypass, LogOnly:
	case "":
		return rerr("action", "missing (allow, deny, force-allow, bypass or log-only)")
	default:
		return rerr("action", "%q is not allow, deny, force-allow, bypass or log-only", r.Action)
	}
	if r.Priority < 0 || r.Priority > 4 {
		return rerr("priority", "%d is outside 0..4", r.Priority)
	}
	switch r.Direction {
	case "":
		r.Direction = AnyDir
	case Inbound, Outbound, AnyDir:
	default:
		return rerr("direction", "%q is not inbound, outbound or any", r.Direction)
	}
	proto, err := ParseProtocol(r.Protocol)
	if err != nil {
		return rerr("protocol", "%v", err)
	}
	ports := proto == ProtoAny || proto == ProtoTCP || proto == ProtoUDP
	if (len(r.SourcePorts) > 0 || len(r.DestinationPorts) > 0) && !ports {
		return rerr("ports", "ports need protocol tcp, udp or any, not %s", r.Protocol)
	}
	if len(r.ICMPTypes) > 0 && proto != ProtoICMP && proto != ProtoICMPv6 {
		return rerr("icmp_types", "icmp_types need protocol icmp or icmpv6")
	}
	for _, f := range []struct {
		name string
		v    []string
	}{{"source_ports", r.SourcePorts}, {"destination_ports", r.DestinationPorts}} {
		for _, s := range f.v {
			if _, err := ParsePortRange(s); err != nil {
				return rerr(f.name, "%v", err)
			}
		}
	}
	fam := map[string]map[int]bool{}
	for _, f := range []struct {
		name string
		v    []string
	}{{"source", r.Source}, {"destination", r.Destination}} {
		fam[f.name] = map[int]bool{}
		for _, s := range f.v {
			p, err := ParsePrefix(s)
			if err != nil {
				return rerr(f.name, "%v", err)
			}
			if p.Addr().Is4() {
				fam[f.name][4] = true
			} else {
				fam[f.name][6] = true
			}
		}
	}
	if len(r.Source) > 0 && len(r.Destination) > 0 {
		common := (fam["source"][4] && fam["destination"][4]) || (fam["source"][6] && fam["destination"][6])
		if !common {
			return rerr("destination", "source and destination share no address family: the rule could never match")
		}
	}
	if proto == ProtoICMP && (fam["source"][6] && !fam["source"][4] || fam["destination"][6] && !fam["destination"][4]) {
		return rerr("protocol", "icmp with only IPv6 addresses could never match (use icmpv6)")
	}
	if proto == ProtoICMPv6 && (fam["source"][4] && !fam["source"][6] || fam["destination"][4] && !fam["destination"][6]) {
		return rerr("protocol", "icmpv6 with only IPv4 addresses could never match (use icmp)")
	}
	return nil
}

// ParseProtocol reads a protocol name or number; ProtoAny for "" or "any".
func ParseProtocol(s string) (int, error) {
	switch strings.ToLower(s) {
	case "", "any":
		return ProtoAny, nil
	case "tcp":
		return ProtoTCP, nil
	case "udp":
		return ProtoUDP, nil
	case "icmp":
		return ProtoICMP, nil
	case "icmpv6", "ipv6-icmp":
		return ProtoICMPv6, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 255 {
		return 0, fmt.Errorf("%q is not tcp, udp, icmp, icmpv6, any or a number 0-255", s)
	}
	return n, nil
}

// PortRange is an inclusive range of ports.
type PortRange struct{ Lo, Hi uint16 }

// ParsePortRange reads "80" or "1024-65535".
func ParsePortRange(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
	a, err := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	if err != nil {
		return PortRange{}, fmt.Errorf("port %q: not a number 0-65535", s)
	}
	b := a
	if isRange {
		if b, err = strconv.ParseUint(strings.TrimSpace(hi), 10, 16); err != nil {
			return PortRange{}, fmt.Errorf("port range %q: %q is not a number 0-65535", s, hi)
		}
	}
	if a > b {
		return PortRange{}, fmt.Errorf("port range %q: start exceeds end", s)
	}
	return PortRange{uint16(a), uint16(b)}, nil
}

// ParsePrefix reads a CIDR or a single address (as /32 or /128). Host bits
// set in a CIDR are an error: "10.0.0.1/8" is almost always a typo.
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR: %v", s, err)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set (did you mean %s?)", s, p.Masked())
	}
	return p, nil
}

// Ordered returns the rules in evaluation order: priority (4 first), then
// action rank within a priority, then as written. Rule i of the result is bit
// i of the kernel's bitmaps.
func (p *Policy) Ordered() []Rule {
	out := append([]Rule(nil), p.Rules...)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Priority != out[j].Priority {
			return out[i].Priority > out[j].Priority
		}
		return out[i].Action.rank() < out[j].Action.rank()
	})
	return out
}
