package bench

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/fastpath/policy"
	"github.com/palisade/palisade/hypervisor/lab"
)

func (r Rule) matches(proto string, src netip.Addr, port uint16) bool {
	return r.Proto == proto && (!r.Src.IsValid() || r.Src.Contains(src)) && port >= r.PortLo && port <= r.PortHi
}

// TestRulesNeverOverlapAndOnlyTheLastMatches checks the generator's promise
// (what makes a verdict map an exact rendering) and Palisade's reference
// evaluation of the rendered policy.
func TestRulesNeverOverlapAndOnlyTheLastMatches(t *testing.T) {
	rules := Rules(1000, TrafficTarget, true, 1)
	kinds := map[string]int{}
	for _, r := range rules[:len(rules)-1] {
		switch {
		case !r.Src.IsValid():
			kinds["any"]++
		case r.PortLo != r.PortHi:
			kinds["range"]++
		default:
			kinds[netip.PrefixFrom(netip.IPv4Unspecified(), r.Src.Bits()).String()]++
		}
		if r.matches(TrafficTarget.Proto, GenAddr, GuestPort) {
			t.Fatalf("rule %+v matches the target traffic", r)
		}
	}
	for _, k := range []string{"any", "range", "0.0.0.0/32", "0.0.0.0/24", "0.0.0.0/20"} {
		if kinds[k] == 0 {
			t.Errorf("no rule of kind %s among %v", k, kinds)
		}
	}
	// Every rule's own first packet matches it and no other.
	for i, r := range rules {
		for j, o := range rules {
			if i != j && o.matches(r.Proto, r.Src.Addr(), r.PortLo) {
				t.Fatalf("rules %+v and %+v overlap", r, o)
			}
		}
		if i > 300 {
			break // quadratic: a sample is enough
		}
	}
	p, err := Policy(rules, policy.Deny)
	if err != nil {
		t.Fatal(err)
	}
	d := p.Evaluate(policy.Packet{Dir: policy.Inbound, Proto: policy.ProtoUDP, Src: GenAddr, Dst: GuestAddr, Sport: 1234, Dport: GuestPort})
	if d.RuleID != uint32(len(rules)) || d.Action != policy.Allow {
		t.Fatalf("target traffic decided by %+v, want the last rule", d)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 300; i++ {
		src := netip.AddrFrom4([4]byte{10, byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))})
		pkt := policy.Packet{Dir: policy.Inbound, Proto: policy.ProtoTCP, Src: src, Dst: GuestAddr, Sport: 999, Dport: uint16(rng.IntN(65536))}
		if d := p.Evaluate(pkt); d.Matched && !rules[d.RuleID-1].matches("tcp", src, pkt.Dport) {
			t.Fatalf("%+v decided by %+v, which the generator says does not match", pkt, d)
		}
	}
}

// TestRenderingsLoad has nft and iptables check every rendering of a large
// rule set inside a lab namespace (nothing is loaded).
func TestRenderingsLoad(t *testing.T) {
	ns, err := lab.ForTest(t).Namespace("render")
	if err != nil {
		t.Fatal(err)
	}
	rules := Rules(500, TrafficTarget, true, 2)
	for _, c := range []struct {
		name, text string
		cmd        []string
	}{
		{"nft rules", NFTables(rules, VNIC), []string{"nft", "-c", "-f", "-"}},
		{"nft verdict map", NFTablesSet(rules, VNIC), []string{"nft", "-c", "-f", "-"}},
		{"iptables", IPTables(rules, VNIC), []string{"iptables-restore", "--test"}},
		{"ip6tables", IP6Tables(rules, VNIC), []string{"ip6tables-restore", "--test"}},
	} {
		if out, err := ns.Run(c.text, c.cmd[0], c.cmd[1:]...); err != nil {
			t.Errorf("%s: %v\n%s", c.name, err, out)
		}
	}
}

// TestTrafficFlowsOnlyWhenTheLastRuleAllows sends real traffic through each
// filter with 10 rules: delivered when the last rule allows it, nothing when
// the last rule denies it although the frames reach the host.
func TestTrafficFlowsOnlyWhenTheLastRuleAllows(t *testing.T) {
	l := lab.ForTest(t)
	bpffs := lab.BPFFSForTest(t)
	topo, err := NewTopology(l, Options{GenCPU: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { topo.Close() })
	pal, err := NewPalisade(topo.Host, datapath.Config{PinDir: filepath.Join(bpffs, "palisade")}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pal.Close() })
	ctx := context.Background()
	const dur = 100 * time.Millisecond

	gen, err := topo.Send(ctx, OneFlow, GenOnly, dur)
	if err != nil {
		t.Fatal(err)
	}
	if gen.Generated == 0 || gen.Relayed != 0 || gen.Delivered != 0 {
		t.Fatalf("generator alone: %+v; want frames generated and none sent", gen)
	}

	allow, deny := Rules(10, TrafficTarget, true, 5), Rules(10, TrafficTarget, false, 5)
	for _, f := range []Filter{NoFilter{}, pal, NFT{NS: topo.Host}, IPT{NS: topo.Host}, NFT{NS: topo.Host, Set: true}} {
		for _, s := range []Shape{OneFlow, NewFlows} {
			if err := f.Install(allow); err != nil {
				t.Fatal(err)
			}
			r, err := topo.Send(ctx, s, Deliver, dur)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Remove(); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s, %s: %+v, %.0f pps", f.Name(), s.Name, r, r.PPS())
			if r.Delivered == 0 || r.Delivered > r.Relayed || r.Relayed > r.Generated {
				t.Errorf("%s, %s, last rule allows: %+v", f.Name(), s.Name, r)
			}
			if _, ok := f.(NoFilter); ok {
				continue
			}
			if err := f.Install(deny); err != nil {
				t.Fatal(err)
			}
			r, err = topo.Send(ctx, s, Deliver, dur)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Remove(); err != nil {
				t.Fatal(err)
			}
			if r.Delivered != 0 || r.Relayed == 0 {
				t.Errorf("%s, %s, last rule denies: %+v; want frames at the host and none delivered", f.Name(), s.Name, r)
			}
		}
	}
	if n, err := ConntrackCount(topo.Host); err != nil || n > 0 {
		t.Errorf("conntrack entries in the host namespace: %d (%v)", n, err)
	}
	if out, err := topo.Host.Run("", "nft", "list", "ruleset"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("ruleset left behind: %q %v", out, err)
	}
}

// TestUninstallStaysInTheLabNamespace: removing Palisade (table 2) and the
// kernel benchmark's datapath (table 1) deletes the punt device of the
// bench's own namespace, never one of the namespace the caller runs in
// (the root namespace, where a real fastpathd's may be).
func TestUninstallStaysInTheLabNamespace(t *testing.T) {
	l := lab.ForTest(t)
	bpffs := lab.BPFFSForTest(t)
	caller, err := l.Namespace("caller")
	if err != nil {
		t.Fatal(err)
	}
	ns, err := l.Namespace("bench")
	if err != nil {
		t.Fatal(err)
	}
	puntDev := func(n *lab.Namespace) bool {
		_, err := n.Netlink().LinkByName(datapath.PuntOut)
		return err == nil
	}
	addPuntDev := func(n *lab.Namespace) {
		t.Helper()
		if _, _, err := l.Link(lab.End{NS: n, Name: datapath.PuntOut}, lab.End{NS: n, Name: "peer0"}); err != nil {
			t.Fatal(err)
		}
	}
	addPuntDev(caller)
	addPuntDev(ns)
	pal, err := NewPalisade(ns, datapath.Config{PinDir: filepath.Join(bpffs, "pal")}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := caller.Do(pal.Close); err != nil {
		t.Fatal(err)
	}
	if !puntDev(caller) || puntDev(ns) {
		t.Fatalf("Palisade.Close: punt device in the caller's namespace %v (want true), in the bench's %v (want false)", puntDev(caller), puntDev(ns))
	}

	addPuntDev(ns)
	k := &KernelBench{NS: ns, PinDir: filepath.Join(bpffs, "kernel"), Repeat: 10, Reps: 1, CPU: -1, Seed: 1}
	if err := caller.Do(func() error {
		_, err := k.Run(context.Background(), []int{10})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !puntDev(caller) || puntDev(ns) {
		t.Fatalf("KernelBench: punt device in the caller's namespace %v (want true), in the bench's %v (want false)", puntDev(caller), puntDev(ns))
	}
}
