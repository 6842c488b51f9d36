package bench

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/fastpath/guests"
	"github.com/palisade/palisade/fastpath/policy"
	"github.com/palisade/palisade/hypervisor/lab"
)

// Filter is one configuration of the host under test. Install puts rules in
// place for traffic to the guest; Remove takes every trace of them away.
type Filter interface {
	Name() string
	Install(rules []Rule) error
	Remove() error
}

// NoFilter is plain forwarding: the baseline.
type NoFilter struct{}

func (NoFilter) Name() string         { return "(a) no filter" }
func (NoFilter) Install([]Rule) error { return nil }
func (NoFilter) Remove() error        { return nil }

// NFT loads rules into the host namespace's nftables: one rule per line
// (Set false) or the expert's verdict map (Set true).
type NFT struct {
	NS  *lab.Namespace
	Set bool
}

func (f NFT) Name() string {
	if f.Set {
		return "(e) nftables verdict maps"
	}
	return "(c) nftables, rule per line"
}

func (f NFT) Install(rules []Rule) error {
	text := NFTables(rules, VNIC)
	if f.Set {
		text = NFTablesSet(rules, VNIC)
	}
	if out, err := f.NS.Run(text, "nft", "-f", "-"); err != nil {
		return fmt.Errorf("%s: nft -f: %w: %s", f.NS.Name, err, firstLines(out, 5))
	}
	return nil
}

func (f NFT) Remove() error { return FlushRuleset(f.NS) }

// IPT loads rules into the host namespace's iptables (and ip6tables, for the
// rules that apply to IPv6) with iptables-restore. It needs iptables' nf_tables
// backend, whose tables `nft flush ruleset` removes (see IPTablesVersion).
type IPT struct{ NS *lab.Namespace }

func (IPT) Name() string { return "(d) iptables, rule per line" }

func (f IPT) Install(rules []Rule) error {
	if _, err := IPTablesVersion(f.NS); err != nil {
		return err
	}
	for _, r := range []struct{ cmd, text string }{{"iptables-restore", IPTables(rules, VNIC)}, {"ip6tables-restore", IP6Tables(rules, VNIC)}} {
		if out, err := f.NS.Run(r.text, r.cmd); err != nil {
			return fmt.Errorf("%s: %s: %w: %s", f.NS.Name, r.cmd, err, firstLines(out, 5))
		}
	}
	return nil
}

// Remove flushes the namespace's whole ruleset: with the nf_tables backend
// (the only one Install accepts) iptables' tables are nf_tables tables.
func (f IPT) Remove() error { return FlushRuleset(f.NS) }

// IPTablesVersion is the version of ns's iptables ("1.8.9"). It refuses
// iptables-legacy: its tables are not nf_tables tables, so `nft flush
// ruleset` would leave them (and `nft list ruleset` would not show them).
func IPTablesVersion(ns *lab.Namespace) (string, error) {
	out, err := ns.Run("", "iptables", "--version")
	if err != nil {
		return "", fmt.Errorf("%s: iptables --version: %w: %s", ns.Name, err, out)
	}
	// "iptables v1.8.9 (nf_tables)"
	f := strings.Fields(out)
	if len(f) < 3 || f[2] != "(nf_tables)" {
		return "", fmt.Errorf("%s: %q: only iptables' nf_tables backend is supported (iptables-nft; "+
			"update-alternatives --set iptables /usr/sbin/iptables-nft), whose rules the run can remove with nft", ns.Name, strings.TrimSpace(out))
	}
	return strings.TrimPrefix(f[1], "v"), nil
}

// FlushRuleset empties the lab namespace's nf_tables ruleset and checks that
// nothing is left.
func FlushRuleset(ns *lab.Namespace) error {
	if out, err := ns.Run("", "nft", "flush", "ruleset"); err != nil {
		return fmt.Errorf("%s: nft flush ruleset: %w: %s", ns.Name, err, out)
	}
	out, err := ns.Run("", "nft", "list", "ruleset")
	if err != nil {
		return fmt.Errorf("%s: nft list ruleset: %w: %s", ns.Name, err, out)
	}
	if strings.TrimSpace(out) != "" {
		return fmt.Errorf("%s: ruleset not empty after flush:\n%s", ns.Name, firstLines(out, 10))
	}
	return nil
}

// ConntrackCount is the number of conntrack entries in ns, or -1 if
// conntrack is not loaded at all.
func ConntrackCount(ns *lab.Namespace) (int, error) {
	n := -1
	err := ns.Do(func() error {
		b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count")
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		n, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err
	})
	return n, err
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = append(lines[:n], "...")
	}
	return strings.Join(lines, "\n")
}

// GuestID is the benchmark guest's name in Palisade.
const GuestID = "bench-guest"

// Palisade is the real guest manager and datapath, in process: Install
// activates the guest on the host's vNIC with the rules (default deny),
// Remove deactivates it.
type Palisade struct {
	NS  *lab.Namespace // where the vNIC is
	D   *datapath.Datapath
	Mgr *guests.Manager
}

// NewPalisade opens a datapath (pinned under cfg.PinDir, on a private bpffs)
// and a guest manager whose state file is in stateDir, for vNICs in ns.
func NewPalisade(ns *lab.Namespace, cfg datapath.Config, stateDir string) (*Palisade, error) {
	d, err := datapath.Open(cfg)
	if err != nil {
		return nil, err
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	mgr, err := guests.New(guests.Config{Datapath: d, StateFile: filepath.Join(stateDir, "guests.json"), Links: ns.Netlink(), Log: log})
	if err != nil {
		d.Close()
		return nil, err
	}
	return &Palisade{NS: ns, D: d, Mgr: mgr}, nil
}

func (*Palisade) Name() string { return "(b) Palisade (TCX eBPF)" }

// Install activates the guest. It runs on a thread inside the vNIC's
// namespace: the datapath attaches to the ifindex there.
func (p *Palisade) Install(rules []Rule) error {
	pol, err := Policy(rules, policy.Deny)
	if err != nil {
		return err
	}
	return p.NS.Do(func() error { return p.Mgr.Activate(GuestID, VNIC, pol) })
}

func (p *Palisade) Remove() error {
	return p.NS.Do(func() error { return p.Mgr.Deactivate(GuestID) })
}

// Counters are the benchmark guest's datapath counters while it is active.
func (p *Palisade) Counters() (datapath.Counters, error) {
	link, err := p.NS.Netlink().LinkByName(VNIC)
	if err != nil {
		return datapath.Counters{}, err
	}
	vnics, err := p.D.VNICs()
	if err != nil {
		return datapath.Counters{}, err
	}
	slot, ok := vnics[link.Attrs().Index]
	if !ok {
		return datapath.Counters{}, errors.New("bench: the guest is not active")
	}
	return p.D.GuestCounters(slot)
}

// Close removes the datapath from the kernel (links and pins). It runs in
// the vNIC's namespace: Uninstall deletes the punt device in the namespace
// it runs in, and the root namespace's may be a real fastpathd's.
func (p *Palisade) Close() error { return p.NS.Do(p.D.Uninstall) }
