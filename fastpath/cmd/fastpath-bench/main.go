package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/palisade/palisade/fastpath/bench"
	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/hypervisor/lab"
)

// prefix names every namespace of a run; a run first removes what a killed
// one left.
const prefix = "palbench"

type config struct {
	quick         bool
	dur, warmup   time.Duration
	reps          int
	repeat        int
	kernelCounts  []int
	trafficCounts []int
	cpu           int
	split         bool
	seed          uint64
	tables        string
	verbose       bool
}

func main() {
	var c config
	var kernelCounts, trafficCounts string
	flag.BoolVar(&c.quick, "quick", false, "short run: 0.3 s per traffic measurement, 200,000 runs per in-kernel one")
	flag.DurationVar(&c.dur, "duration", time.Second, "length of one traffic measurement")
	flag.IntVar(&c.reps, "reps", 3, "measurements per figure; the median is reported")
	flag.IntVar(&c.repeat, "repeat", 1_000_000, "BPF_PROG_TEST_RUN runs per in-kernel measurement")
	flag.StringVar(&kernelCounts, "kernel-rules", "10,1000,10000", "rule counts of table 1")
	flag.StringVar(&trafficCounts, "traffic-rules", "1000,10000", "rule counts of table 2")
	flag.IntVar(&c.cpu, "cpu", -1, "CPU for the generator and the in-kernel runs (default: the last)")
	flag.BoolVar(&c.split, "split-cpus", false, "receive and forward on another CPU than the generator's (threaded NAPI)")
	flag.Uint64Var(&c.seed, "seed", 1, "rule generator seed")
	flag.StringVar(&c.tables, "tables", "1,2", "which tables to produce")
	flag.BoolVar(&c.verbose, "v", false, "print every traffic measurement to stderr")
	flag.Parse()
	var err error
	if c.kernelCounts, err = ints(kernelCounts); err == nil {
		c.trafficCounts, err = ints(trafficCounts)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fastpath-bench:", err)
		os.Exit(2)
	}
	if c.quick { // short runs, unless set explicitly
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["duration"] {
			c.dur = 300 * time.Millisecond
		}
		if !set["repeat"] {
			c.repeat = 200_000
		}
	}
	c.warmup = max(c.dur/5, 100*time.Millisecond)
	if c.cpu < 0 || c.cpu >= runtime.NumCPU() {
		c.cpu = runtime.NumCPU() - 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err = run(ctx, c, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fastpath-bench:", err)
		os.Exit(1)
	}
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("rule count %q: want a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// run owns every resource: the session (lock and bpffs), the namespaces.
// Each is released by a deferred call, also when ctx is cancelled by a
// signal.
func run(ctx context.Context, c config, out io.Writer) (err error) {
	sess, err := lab.StartSession("palisade-fastpath-bench", prefix+"-", os.Stderr)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, sess.Close()) }()
	l, err := lab.New(prefix)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, l.Close()) }()
	stateDir := sess.Dir

	start := time.Now()
	p := printer{w: out}
	if err := p.machine(l, c); err != nil {
		return err
	}
	if strings.Contains(c.tables, "1") {
		if err := table1(ctx, &p, l, c, filepath.Join(sess.BPFFS, "table1")); err != nil {
			return err
		}
	}
	if strings.Contains(c.tables, "2") {
		if err := table2(ctx, &p, l, c, filepath.Join(sess.BPFFS, "table2"), stateDir); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "\nrun took %s\n", time.Since(start).Round(time.Second))
	return nil
}

func table1(ctx context.Context, p *printer, l *lab.Lab, c config, pinDir string) error {
	ns, err := l.Namespace("kernel")
	if err != nil {
		return err
	}
	sizes, err := bench.PolicySizes(c.kernelCounts, bench.KernelTarget, c.seed)
	if err != nil {
		return err
	}
	k := &bench.KernelBench{NS: ns, PinDir: pinDir, Repeat: c.repeat, Reps: c.reps, CPU: c.cpu, Seed: c.seed, WordPool: bench.WordPool(sizes)}
	fmt.Fprintln(os.Stderr, "table 1: in-kernel runs...")
	rows, err := k.Run(ctx, c.kernelCounts)
	if err != nil {
		return fmt.Errorf("table 1: %w", err)
	}
	p.table1(rows, sizes, k.WordPool, c)
	p.verified(k.Verified)
	return nil
}

func table2(ctx context.Context, p *printer, l *lab.Lab, c config, pinDir, stateDir string) (err error) {
	topo, err := bench.NewTopology(l, bench.Options{GenCPU: c.cpu, SplitCPUs: c.split, FwdCPU: -1})
	if err != nil {
		return fmt.Errorf("table 2: %w", err)
	}
	defer func() { err = errors.Join(err, topo.Close()) }()
	sizes, err := bench.PolicySizes(c.trafficCounts, bench.TrafficTarget, c.seed)
	if err != nil {
		return err
	}
	pal, err := bench.NewPalisade(topo.Host, datapath.Config{PinDir: pinDir, WordPool: bench.WordPool(sizes)}, stateDir)
	if err != nil {
		return fmt.Errorf("table 2: %w", err)
	}
	defer func() { err = errors.Join(err, pal.Close()) }()

	fmt.Fprintln(os.Stderr, "table 2: generator alone...")
	var gen [3][]bench.Result // generator alone, with hand-off, delivered without filter
	for i := 0; i < c.reps; i++ {
		for j, m := range []bench.Mode{bench.GenOnly, bench.HandOffOnly, bench.Deliver} {
			r, err := topo.Send(ctx, bench.OneFlow, m, c.dur)
			if err != nil {
				return err
			}
			gen[j] = append(gen[j], r)
		}
	}
	filters := []bench.Filter{bench.NoFilter{}, pal, bench.NFT{NS: topo.Host}, bench.IPT{NS: topo.Host}, bench.NFT{NS: topo.Host, Set: true}}
	plan := bench.TrafficPlan{Counts: c.trafficCounts, Shapes: []bench.Shape{bench.OneFlow, bench.NewFlows}, Filters: filters,
		Cycles: c.reps, Dur: c.dur, Warmup: c.warmup, Seed: c.seed}
	done, total := 0, len(plan.Counts)*plan.Cycles*len(filters)*len(plan.Shapes)
	_, err = unix.IoctlGetTermios(int(os.Stderr.Fd()), unix.TCGETS)
	tty := err == nil
	plan.Progress = func(n int, f bench.Filter, s bench.Shape, r bench.Result) {
		done++
		switch {
		case c.verbose:
			fmt.Fprintf(os.Stderr, "  %d rules, %s, %s: %.0f pps (generated %d, at host %d, delivered %d)\n",
				n, f.Name(), s.Name, r.PPS(), r.Generated, r.Relayed, r.Delivered)
		case tty:
			fmt.Fprintf(os.Stderr, "\rtable 2: %d/%d measurements", done, total)
		}
	}
	fmt.Fprintf(os.Stderr, "table 2: %d measurements of %s...\n", total, c.dur)
	res, err := bench.RunTraffic(ctx, topo, plan)
	if tty && !c.verbose {
		fmt.Fprintln(os.Stderr)
	}
	if err != nil {
		return fmt.Errorf("table 2: %w", err)
	}
	p.table2(topo, gen, plan, res, c)
	return nil
}

type printer struct {
	w        io.Writer
	iptables string // the version the run found ("1.8.9")
}

func (p *printer) f(format string, args ...any) { fmt.Fprintf(p.w, format, args...) }

// para prints a paragraph wrapped at 116 columns, indented by two spaces;
// leading newlines are kept.
func (p *printer) para(format string, args ...any) {
	text := fmt.Sprintf(format, args...)
	trimmed := strings.TrimLeft(text, "\n")
	p.f("%s", text[:len(text)-len(trimmed)])
	line := " "
	for _, w := range strings.Fields(trimmed) {
		if len(line)+1+len(w) > 116 {
			p.f("%s\n", line)
			line = " "
		}
		line += " " + w
	}
	p.f("%s\n", line)
}

func (p *printer) machine(l *lab.Lab, c config) error {
	model, kernel := bench.Machine()
	// Tool versions, asked inside a lab namespace like every nft and
	// iptables command of the run; iptables must use nf_tables.
	ns, err := l.Namespace("tools")
	if err != nil {
		return err
	}
	var tools []string
	for _, t := range [][]string{{"nft", "--version"}, {"iptables", "--version"}} {
		out, err := ns.Run("", t[0], t[1:]...)
		if err != nil {
			return fmt.Errorf("%s: %w: %s", t[0], err, out)
		}
		tools = append(tools, strings.TrimSpace(out))
	}
	if p.iptables, err = bench.IPTablesVersion(ns); err != nil {
		return err
	}
	p.f("fastpath-bench: Palisade datapath benchmark\n")
	p.f("machine: %d CPUs (%s), kernel %s, %s; %s\n", runtime.NumCPU(), model, kernel, runtime.Version(), strings.Join(tools, ", "))
	p.f("pinned to CPU %d: the generator and the in-kernel runs\n", c.cpu)
	return nil
}

func (p *printer) table1(rows []bench.KernelCase, sizes []bench.PolicySize, pool uint32, c config) {
	p.f("\nTable 1 — in-kernel cost per packet: BPF_PROG_TEST_RUN of the to-guest (TCX egress) program,\n")
	p.f("          median of %d measurements of %s runs each, CPU %d\n\n", c.reps, thousands(c.repeat), c.cpu)
	tw := tabwriter.NewWriter(p.w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  case\trules\tns/packet\truns (ns)")
	byCount := map[int]time.Duration{}
	for _, r := range rows {
		var runs []string
		for _, d := range r.Runs {
			runs = append(runs, strconv.FormatInt(d.Nanoseconds(), 10))
		}
		rules := "-"
		if r.Rules > 0 {
			rules = thousands(r.Rules)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\n", r.Name, rules, r.Median.Nanoseconds(), strings.Join(runs, " "))
		if strings.HasPrefix(r.Name, "new flow") {
			byCount[r.Rules] = r.Median
		}
	}
	tw.Flush()
	lo, hi := c.kernelCounts[0], c.kernelCounts[0]
	for _, n := range c.kernelCounts {
		lo, hi = min(lo, n), max(hi, n)
	}
	if lo != hi && byCount[lo] > 0 {
		p.f("\n  new-flow classification, %s rules / %s rules: %.2f\n", thousands(hi), thousands(lo), float64(byCount[hi])/float64(byCount[lo]))
	}
	p.para("\nNotes: the new-flow frame is a TCP SYN from 203.0.113.1 to the guest's port 7000; rules 1..N-1 (hosts and " +
		"networks of 10/8 and 172.16/12 to single ports, popular ones and 7000 among them, and to port ranges; about 8%% " +
		"from any source to ports of their own) do not match it, rule N does. Every rule is a deny (one action and " +
		"priority, so evaluation order is the order written) and the default allows: the frame never creates connection " +
		"state, so every run is classified, and a frame that missed rule N would pass and create state. Each case is " +
		"checked: verdict drop, only rule N counted hits, no connection. A denied packet also goes through the event rate " +
		"limiter (beyond a burst of 200, events are counted as suppressed). The established case follows a full handshake " +
		"(SYN, SYN-ACK from the guest, ACK), then times a 64-byte data segment to the guest, checked to have hit the " +
		"ESTABLISHED connection every run.")
	p.f("  Compiled policies (classification-trie entries, rule-bitmap words of 8 bytes):\n")
	for _, s := range sizes {
		p.f("    %6s rules: %7s entries, %9s words (%.1f MB)\n", thousands(s.Rules), thousands(s.Entries), thousands(s.Words), float64(s.Words)*8/1e6)
	}
	p.para("The datapath here has a pool of %s words, room for two of the largest (fastpathd's default, "+
		"--rule-bitmap-words, is %s).", thousands(int(pool)), thousands(bench.DefaultWordPool))
}

// verified prints the verifier's instruction count per program: the
// datapath's complexity, which a change must not raise unnoticed.
func (p *printer) verified(counts map[string]uint32) {
	names := make([]string, 0, len(counts))
	for n := range counts {
		names = append(names, n)
	}
	sort.Strings(names)
	p.f("\n  Instructions the verifier processed, per program:")
	for _, n := range names {
		p.f(" %s %s", n, thousands(int(counts[n])))
	}
	p.f("\n")
}

func (p *printer) table2(topo *bench.Topology, gen [3][]bench.Result, plan bench.TrafficPlan, res *bench.TrafficResults, c config) {
	med := func(rs []bench.Result, f func(bench.Result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		return bench.Median(v)
	}
	genAlone := med(gen[0], bench.Result.GenPPS)
	handOff := med(gen[1], bench.Result.RelayPPS)
	plain := med(gen[2], bench.Result.PPS)
	lost := 0.0
	for _, r := range gen[2] {
		lost = max(lost, 1-float64(r.Delivered)/float64(max(r.Generated, 1)))
	}

	p.f("\nTable 2 — real traffic: delivered packets/s, %d-byte UDP frames, gen —veth— host (IPv4 forwarding, filter on\n", bench.FrameLen)
	p.f("          vNIC %q) —veth— guest; median of %d cycles of %s per figure, each cycle measuring every configuration\n", bench.VNIC, plan.Cycles, plan.Dur)
	p.f("          once, back to back (ratios are medians of the per-cycle ratios)\n\n")
	if topo.FwdCPU < 0 {
		p.para("Generator: XDP program run with BPF_PROG_TEST_RUN in live-frames mode on CPU %d, XDP_TX out of the gen "+
			"veth. The host receives each batch in softirq context on the same CPU right after it is sent, so every cost "+
			"of a packet (generator, veth hand-off, forwarding, filter, delivery, sink) is paid on CPU %d and costs add up:",
			topo.GenCPU, topo.GenCPU)
	} else {
		p.f("  Generator: XDP live frames on CPU %d; the host's receive path is a NAPI thread on CPU %d (-split-cpus).\n", topo.GenCPU, topo.FwdCPU)
	}
	p.f("    generator alone (frames dropped by itself)     %9s pps  %6.0f ns/packet\n", thousands(int(genAlone)), 1e9/genAlone)
	p.f("    + veth hand-off (dropped by the host's XDP)    %9s pps  %6.0f ns/packet\n", thousands(int(handOff)), 1e9/handOff)
	p.f("    + forwarding and delivery, no filter           %9s pps  %6.0f ns/packet   (lost on the way: %.2f%%)\n", thousands(int(plain)), 1e9/plain, 100*lost)
	switch {
	case topo.FwdCPU >= 0:
		bottleneck := "the forwarding path"
		if lost < 0.01 {
			bottleneck = "the generator"
		}
		p.para("Bottleneck: %s. With no filter the generator sent %.1fx what the host's CPU forwarded; up to %.0f%% of "+
			"the frames were dropped at the host's veth ring. The forwarding CPU's time per packet: %.0f ns.",
			bottleneck, med(gen[2], bench.Result.GenPPS)/plain, 100*lost, 1e9/plain)
	case 1e9/genAlone > 1e9/plain-1e9/genAlone:
		p.para("Bottleneck: the generator: it takes %.0f of the %.0f ns a packet costs without a filter.", 1e9/genAlone, 1e9/plain)
	default:
		p.para("Bottleneck: the forwarding path. Of the %.0f ns a packet costs without a filter, the generator takes %.0f "+
			"ns (%.0f%%), the veth hand-off to the host %.0f ns, forwarding to the guest and its sink %.0f ns. The generator "+
			"alone runs %.1fx faster than the path it feeds; every filter below only adds to the path.",
			1e9/plain, 1e9/genAlone, 100*(1e9/genAlone)/(1e9/plain), 1e9/handOff-1e9/genAlone, 1e9/plain-1e9/handOff, genAlone/plain)
	}

	row := "    %7s  %-30s %13s %7s %16s   %s\n"
	for _, s := range plan.Shapes {
		p.f("\n  Traffic: %s\n", s.Name)
		p.f(row, "rules", "configuration", "delivered pps", "vs (a)", "ns/packet added", "runs (pps)")
		for _, n := range plan.Counts {
			base := plan.Filters[0].Name()
			baseRate := res.Cells[bench.CellKey{Rules: n, Shape: s.Name, Filter: base}].Median()
			for _, f := range plan.Filters {
				cell := res.Cells[bench.CellKey{Rules: n, Shape: s.Name, Filter: f.Name()}]
				var runs []string
				for _, r := range cell.Runs {
					runs = append(runs, thousands(int(r.PPS())))
				}
				added := "-"
				if f.Name() != base {
					added = fmt.Sprintf("%+.0f", 1e9/cell.Median()-1e9/baseRate)
				}
				p.f(row, thousands(n), f.Name(), thousands(int(cell.Median())),
					fmt.Sprintf("%.2f", res.Ratio(n, s.Name, f.Name(), base)), added, strings.Join(runs, " "))
			}
			pal := plan.Filters[1].Name()
			var vs []string
			for _, f := range plan.Filters[2:] {
				vs = append(vs, fmt.Sprintf("%s %.2fx", f.Name()[:3], res.Ratio(n, s.Name, pal, f.Name())))
			}
			p.f("    %7s  Palisade's rate vs %s\n", "", strings.Join(vs, ", "))
		}
	}
	p.f("\n  Palisade's datapath counters over the measured runs (per delivered packet):\n")
	for _, s := range plan.Shapes {
		for _, n := range plan.Counts {
			cell := res.Cells[bench.CellKey{Rules: n, Shape: s.Name, Filter: plan.Filters[1].Name()}]
			var delivered uint64
			for _, r := range cell.Runs {
				delivered += r.Delivered
			}
			per := func(k string) float64 { return float64(cell.Counters[k]) / float64(max(delivered, 1)) }
			p.f("    %-38s %6s rules: new connections %.3f, established hits %.3f, table full %.3f, drops %.3f\n",
				s.Name, thousands(n), per("new_connections"), per("established_hits"), per("table_full"), per("dropped"))
		}
	}
	ct := "conntrack is not loaded"
	if res.Conntrack >= 0 {
		ct = fmt.Sprintf("the host namespace held at most %d conntrack entries", res.Conntrack)
	}
	p.para("\nNotes: rules 1..N-1 are the generator's varied rules (as in table 1, all allow here) and do not match the "+
		"traffic; rule N allows UDP from 203.0.113.0/24 to port %d, the default denies. (b)-(e) hold the same rules and "+
		"actions: (b) one Palisade policy, inbound rules, activated through the guest manager on the vNIC (TCX); (c) one "+
		"nft rule per rule in a forward chain (policy drop), source tested first, output interface last; (d) the same in "+
		"iptables' FORWARD (policy DROP; iptables "+p.iptables+" turns them into nf_tables rules), with ip6tables for the rules "+
		"that apply to IPv6; (e) the vNIC's traffic jumps to three verdict-map lookups over concatenated fields: protocol "+
		". port for any-source rules and source . protocol . port for host rules (hash maps), the same for networks and "+
		"port ranges (interval map); the rules never overlap, so this is exact. None of (c)-(e) uses conntrack (%s). "+
		"Palisade is stateful (replies of admitted flows pass); the baselines are stateless, which the one-way traffic "+
		"does not exercise, and a stateless filter pays nothing for a new flow. Each filter is removed completely before "+
		"the next is installed (guest deactivated, or the namespace's ruleset flushed and checked empty).", bench.GuestPort, ct)
	p.para("'ns/packet added' is 1/pps(config) - 1/pps(a): the filter's own cost per packet, since all costs add up on one CPU.")
	p.para("New flow every packet: the UDP source port cycles through %s values, so a Palisade guest's UDP table "+
		"(10,000 connections) never holds the next packet's flow: each packet is classified, inserted, and evicts one.",
		thousands(bench.NewFlowTuples))
}

// thousands formats n with thousands separators.
func thousands(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		s = "-" + s
	}
	return s
}
