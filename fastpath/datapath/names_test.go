package datapath

import (
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/palisade/palisade/fastpath/policy"
)

// cEnums reads the enums and struct sizes of the compiled object's BTF: what
// the C says, independently of the Go the generator wrote from it.
type cEnums struct {
	t    *testing.T
	spec *ebpf.CollectionSpec
}

func newCEnums(t *testing.T) cEnums {
	spec, err := loadDp()
	if err != nil {
		t.Fatal(err)
	}
	return cEnums{t, spec}
}

// values maps the enumerators of enum name to their values.
func (c cEnums) values(name string) map[string]uint64 {
	var e *btf.Enum
	if err := c.spec.Types.TypeByName(name, &e); err != nil {
		c.t.Fatalf("enum %s: %v", name, err)
	}
	out := map[string]uint64{}
	for _, v := range e.Values {
		out[v.Name] = v.Value
	}
	return out
}

// value is enumerator name of enum.
func (c cEnums) value(enum, name string) uint64 {
	v, ok := c.values(enum)[name]
	if !ok {
		c.t.Fatalf("enum %s has no %s", enum, name)
	}
	return v
}

func (c cEnums) size(structName string) uint32 {
	var s *btf.Struct
	if err := c.spec.Types.TypeByName(structName, &s); err != nil {
		c.t.Fatalf("struct %s: %v", structName, err)
	}
	return s.Size
}

// names checks that goNames (value → Go name) names every enumerator of
// enum (but its _COUNT), each as cName says the enumerator's name reads in
// Go, and names nothing else.
func (c cEnums) names(enum string, goNames map[uint64]string, cName func(string) string) {
	c.t.Helper()
	seen := map[uint64]bool{}
	for name, v := range c.values(enum) {
		if strings.HasSuffix(name, "_COUNT") {
			continue
		}
		seen[v] = true
		if got, want := goNames[v], cName(name); got != want {
			c.t.Errorf("enum %s: %s (%d) is named %q in Go, want %q", enum, name, v, got, want)
		}
	}
	for v, name := range goNames {
		if !seen[v] {
			c.t.Errorf("enum %s has no value %d, Go names it %q", enum, v, name)
		}
	}
}

// lower turns an enumerator into its Go name: prefix dropped, lower case,
// with a few names the Go side words differently.
func lower(prefix string, renamed map[string]string) func(string) string {
	return func(name string) string {
		if r, ok := renamed[name]; ok {
			return r
		}
		return strings.ToLower(strings.TrimPrefix(name, prefix))
	}
}

func indexed[K ~uint32, V any](names []V, str func(V) string) map[uint64]string {
	out := map[uint64]string{}
	for i, n := range names {
		out[uint64(K(i))] = str(n)
	}
	return out
}

func keyed[K ~uint32, V any](names map[K]V, str func(V) string) map[uint64]string {
	out := map[uint64]string{}
	for k, n := range names {
		out[uint64(k)] = str(n)
	}
	return out
}

func same(s string) string { return s }

// TestNamesFollowTheC: every Go table naming a C enum gives each enumerator's
// value the name the C gives it. A counter inserted in the C and not in Go,
// or two names swapped, fails here.
func TestNamesFollowTheC(t *testing.T) {
	c := newCEnums(t)
	c.names("counter", indexed[dpCounter](counterNames[:], same), lower("C_", map[string]string{
		"C_PKTS_FROM_GUEST": "packets_from_guest", "C_PKTS_TO_GUEST": "packets_to_guest",
		"C_NEW_CONNS": "new_connections", "C_RELATED": "related_icmp",
	}))
	c.names("drop_reason", indexed[dpDropReason](dropReasonNames[:], same), lower("DR_", nil))
	c.names("event_kind", keyed(eventKinds, func(k EventKind) string { return string(k) }), lower("EV_", nil))
	c.names("tcp_state", keyed(tcpStateNames, same), func(n string) string { return strings.TrimPrefix(n, "TCP_") })
	c.names("pseudo_state", keyed(pseudoStateNames, same), func(n string) string { return strings.TrimPrefix(n, "PSEUDO_") })
	c.names("flow_verdict", keyed(verdictNames, same), lower("FV_", nil))
}

// TestPolicyCodesFollowTheC: the policy's words reach the kernel as the
// enumerators named after them, and a GuestConfig's flags and timeouts land
// where the C reads them.
func TestPolicyCodesFollowTheC(t *testing.T) {
	c := newCEnums(t)
	word := func(prefix string) func(string) string {
		return func(n string) string { return strings.ReplaceAll(lower(prefix, nil)(n), "_", "-") }
	}
	c.names("rule_action", keyed(invert(actionCodes), same), word("ACT_"))
	c.names("guest_mode", keyed(invert(modeCodes), same), word("MODE_"))
	c.names("invalid_policy", keyed(invert(invalidCodes), same), word("INVALID_"))
	c.names("frag_policy", keyed(invert(fragCodes), same), word("FRAG_"))

	yes := true
	p := &policy.Policy{PassARP: &yes, PassND: &yes, PassNonIP: true, InspectionFailure: "closed"}
	if err := p.Normalize(); err != nil {
		t.Fatal(err)
	}
	p.Timeouts.UDP = policy.Duration(77 * time.Second)
	k := GuestConfig{Policy: &InstalledPolicy{}, Rules: p, Inspect: true}.kernel()
	for _, f := range []string{"CFG_PASS_ARP", "CFG_PASS_ND", "CFG_PASS_NON_IP", "CFG_INSPECT", "CFG_FAIL_CLOSED"} {
		if bit := c.value("guest_flags", f); uint64(k.Flags)&bit == 0 {
			t.Errorf("%s (%#x) not set in flags %#x", f, bit, k.Flags)
		}
	}
	if got := k.Timeouts[c.value("timeout_index", "TO_UDP")]; got != 77 {
		t.Errorf("TO_UDP timeout %d, want 77", got)
	}
}

func invert[K ~string, V ~uint32](m map[K]V) map[V]string {
	out := map[V]string{}
	for k, v := range m {
		out[v] = string(k)
	}
	return out
}

// TestConstantsFollowTheC: the exported constants and the sizes the Go side
// creates maps with are the C's.
func TestConstantsFollowTheC(t *testing.T) {
	c := newCEnums(t)
	for _, k := range []struct {
		name      string
		got, want uint64
	}{
		{"MaxGuests", uint64(MaxGuests), c.value("limits", "MAX_GUESTS")},
		{"MaxRules", uint64(MaxRules), c.value("limits", "MAX_RULES")},
		{"policy.MaxRules", policy.MaxRules, c.value("limits", "MAX_RULES")},
		{"policy.BitmapWords", policy.BitmapWords, c.value("limits", "BITMAP_WORDS")},
		{"policy.SummaryWords", policy.SummaryWords, c.value("limits", "SUMMARY_WORDS")},
		{"Next", uint64(Next), c.value("tcx_verdict", "TCX_NEXT")},
		{"Pass", uint64(Pass), c.value("tcx_verdict", "TCX_PASS")},
		{"Drop", uint64(Drop), c.value("tcx_verdict", "TCX_DROP")},
		{"DecideOffload", uint64(DecideOffload), c.value("flow_verdict", "FV_OFFLOAD")},
		{"DecideBlock", uint64(DecideBlock), c.value("flow_verdict", "FV_BLOCK")},
		{"MetaTap", uint64(MetaTap), c.value("punt_flags", "META_TAP")},
		{"BackMark to guest", uint64(BackMark(5, true, false)), 5 | c.value("back_mark", "BACK_TO_GUEST")},
		{"BackMark inject", uint64(BackMark(5, false, true)), 5 | c.value("back_mark", "BACK_INJECT")},
		{"BackMark ifindex", uint64(BackMark(^uint32(0), false, false)), c.value("back_mark", "BACK_IFINDEX")},
		{"ConnKeySize", uint64(ConnKeySize), uint64(c.size("conn_key"))},
		{"ConnValueSize", uint64(ConnValueSize), uint64(c.size("conn_val"))},
		{"DimValueSize", uint64(DimValueSize), uint64(c.size("dim_val"))},
		{"VNICValueSize", uint64(VNICValueSize), uint64(c.size("guest_cfg"))},
		{"PuntMetaSize", uint64(PuntMetaSize), uint64(c.size("punt_meta"))},
	} {
		if k.got != k.want {
			t.Errorf("%s is %#x, the C says %#x", k.name, k.got, k.want)
		}
	}
}
