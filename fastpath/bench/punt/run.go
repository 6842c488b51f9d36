package punt

import (
	"context"
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/palisade/palisade/fastpath/punt"
	"github.com/palisade/palisade/hypervisor/lab"
	"github.com/palisade/palisade/slowpath/inspectd"
)

// Config sizes a run.
type Config struct {
	Duration      time.Duration // one throughput measurement
	Warmup        time.Duration // sending before a throughput measurement starts
	Reps          int           // measurements per figure (the median is reported)
	Senders       int           // UDP sender goroutines (one flow each)
	Payload       int           // UDP payload bytes of the flood
	RoundTrips    int           // measured round trips per latency measurement
	WarmTrips     int           // unmeasured round trips before them
	TransferBytes int64         // the long TCP flow
	TransferLimit time.Duration // the most one transfer may take
	OffloadAfter  int           // slowpathd's --offload-after for the offload part
	Verbose       io.Writer     // every measurement as it is taken; nil: none
}

// Defaults is a full run's configuration.
func Defaults() Config {
	return Config{Duration: 3 * time.Second, Warmup: 500 * time.Millisecond, Reps: 3, Senders: 4, Payload: 64,
		RoundTrips: 3000, WarmTrips: 100, TransferBytes: 50 << 20, TransferLimit: 15 * time.Second, OffloadAfter: 16}
}

// Quick is a short run's configuration.
func Quick() Config {
	c := Defaults()
	c.Duration, c.Warmup, c.Reps, c.RoundTrips, c.WarmTrips, c.TransferBytes = 500*time.Millisecond, 200*time.Millisecond, 1, 500, 50, 10<<20
	c.TransferLimit = 3 * time.Second
	return c
}

// modes is the order configurations are measured in; each repetition
// starts one further along, so slow drifts of the machine spread evenly.
var modes = []Mode{None, NFQueue, Palisade}

// Results are everything a run measured.
type Results struct {
	Flood map[Mode][]FloodResult
	Ping  map[Mode][]PingResult

	// Over the Palisade throughput and latency measurements.
	Inspection      punt.Stats     // fastpathd, summed
	Slow            inspectd.Stats // slowpathd, summed (latency: last latency run's)
	EngineOffline   uint64         // datapath: passes without a slow path (fail-open in the kernel)
	SlowPingLatency []inspectd.LatencyStats
	// Over the NFQUEUE throughput measurements.
	Queue QueueStats
	Loops []string // the verdict loop's exit lines

	// By whether the peer sends GSO super-packets (its default).
	Offload  map[bool][]OffloadResult
	Baseline map[bool][]TransferResult // the same transfer, no filter
}

// OffloadResult is one long TCP transfer through an inspected flow.
type OffloadResult struct {
	TransferResult
	Packets, Punted, OffloadedHit uint64 // of the guest, during the transfer
	ToGuest, FromGuest            uint64
	FailClosed, FailOpen          uint64
	Offloads                      uint64 // flows slowpathd offloaded (fastpathd took the decision)
	Verdict                       string // the flow's state in the datapath at the end: offload, punt…
	PuntDevDrops                  uint64 // held packets the punt device dropped before fastpathd saw them
}

// Run builds the lab in l, measures and prints the report to out.
func Run(ctx context.Context, l *lab.Lab, o Options, c Config, out io.Writer) (*Results, error) {
	start := time.Now()
	o.OffloadAfter = 0
	cpus, model, kernel := machineFacts()
	fmt.Fprintf(out, "punt-bench: inline inspection round trip, Palisade vs NFQUEUE\n")
	fmt.Fprintf(out, "machine: %d CPUs (%s), kernel %s, %s", cpus, model, kernel, runtime.Version())
	e, err := Setup(ctx, l, o)
	if err != nil {
		return nil, err
	}
	if v, err := e.hostCmd("iptables", "--version"); err == nil {
		fmt.Fprintf(out, ", %s", strings.TrimSpace(v))
	}
	fmt.Fprintf(out, "\nrun: %s per throughput measurement after %s warm-up, median of %d; %d senders, %d-byte UDP payload; %d round trips per latency measurement; %d MiB TCP transfer\n",
		c.Duration, c.Warmup, c.Reps, c.Senders, c.Payload, c.RoundTrips, c.TransferBytes>>20)

	r := &Results{Flood: map[Mode][]FloodResult{}, Ping: map[Mode][]PingResult{}}
	r.Inspection.FailOpen, r.Inspection.FailClosed, r.Inspection.Verdicts = map[string]uint64{}, map[string]uint64{}, map[string]uint64{}
	for rep := 0; rep < c.Reps; rep++ {
		for i := range modes {
			m := modes[(i+rep)%len(modes)]
			if err := measureMode(ctx, e, c, m, r); err != nil {
				return r, fmt.Errorf("%s: %w", m, err)
			}
		}
	}
	if err := measureOffload(ctx, e, c, r); err != nil {
		return r, fmt.Errorf("offload: %w", err)
	}
	r.print(out, c)
	fmt.Fprintf(out, "\nrun took %s\n", time.Since(start).Round(time.Second))
	return r, nil
}

func (c Config) logf(format string, args ...any) {
	if c.Verbose != nil {
		fmt.Fprintf(c.Verbose, format+"\n", args...)
	}
}

// measureMode installs m, floods, ping-pongs and removes it again.
func measureMode(ctx context.Context, e *Env, c Config, m Mode, r *Results) (err error) {
	if err := e.Use(ctx, m); err != nil {
		return err
	}
	defer func() {
		if cerr := e.Clear(context.WithoutCancel(ctx)); err == nil {
			err = cerr
		}
		if m == NFQueue {
			if lines := loopSummary(e.Logs()); len(lines) > 0 {
				r.Loops = append(r.Loops, lines[len(lines)-1])
			}
		}
	}()
	var insp0 punt.Stats
	var slow0 inspectd.Stats
	var dp0 map[string]uint64
	var q0 QueueStats
	switch m {
	case Palisade:
		if insp0, err = e.Inspection(ctx); err == nil {
			if slow0, err = e.SlowInspection(ctx); err == nil {
				dp0, err = e.guestCounters(ctx)
			}
		}
	case NFQueue:
		q0, err = e.QueueStats()
	}
	if err != nil {
		return err
	}
	f, err := e.Flood(ctx, c.Senders, c.Payload, c.Warmup, c.Duration)
	if err != nil {
		return err
	}
	r.Flood[m] = append(r.Flood[m], f)
	c.logf("%-10s flood: offered %.0f pps, delivered %.0f pps, send errors %d, cpu %+v", m, f.SentPPS(), f.PPS(), f.SendErrors, f.CPU)
	if m == NFQueue {
		q1, err := e.QueueStats()
		if err != nil {
			return err
		}
		r.Queue.Queued += q1.Queued - q0.Queued
		r.Queue.QueueFull += q1.QueueFull - q0.QueueFull
		r.Queue.UserDropped += q1.UserDropped - q0.UserDropped
	}
	// Let what is queued drain before the latency measurement.
	if err := sleep(ctx, 300*time.Millisecond); err != nil {
		return err
	}
	p, err := e.PingPong(ctx, c.RoundTrips, c.WarmTrips)
	if err != nil {
		return err
	}
	r.Ping[m] = append(r.Ping[m], p)
	c.logf("%-10s ping-pong: p50 %s p99 %s lost %d", m, p.Percentile(50), p.Percentile(99), p.Lost)
	if m == Palisade {
		insp1, err := e.Inspection(ctx)
		if err != nil {
			return err
		}
		slow1, err := e.SlowInspection(ctx)
		if err != nil {
			return err
		}
		dp1, err := e.guestCounters(ctx)
		if err != nil {
			return err
		}
		addInspection(&r.Inspection, insp0, insp1)
		addSlow(&r.Slow, slow0, slow1)
		r.EngineOffline += dp1["engine_offline"] - dp0["engine_offline"]
		r.SlowPingLatency = append(r.SlowPingLatency, slow1.Latency)
		c.logf("%-10s fastpathd: held %d reinjected %d fail_open %v fail_closed %v; slowpathd punts %d batches %d shed %d",
			m, insp1.Held-insp0.Held, insp1.Reinjected-insp0.Reinjected, insp1.FailOpen, insp1.FailClosed,
			slow1.Punts-slow0.Punts, slow1.PuntBatches-slow0.PuntBatches, slow1.Unanswered.Shed-slow0.Unanswered.Shed)
	}
	return nil
}

// guestCounters are the guest's datapath counters (drops included, as
// "drop:<reason>").
func (e *Env) guestCounters(ctx context.Context) (map[string]uint64, error) {
	st, err := e.API.Stats(ctx, GuestID)
	if err != nil {
		return nil, err
	}
	m := maps.Clone(st.Counters)
	for k, v := range st.Drops {
		m["drop:"+k] = v
	}
	return m, nil
}

func addInspection(sum *punt.Stats, a, b punt.Stats) {
	sum.Held += b.Held - a.Held
	sum.Sent += b.Sent - a.Sent
	sum.Batches += b.Batches - a.Batches
	sum.Reinjected += b.Reinjected - a.Reinjected
	sum.DroppedByVerdict += b.DroppedByVerdict - a.DroppedByVerdict
	sum.Late += b.Late - a.Late
	sum.WriteErrors += b.WriteErrors - a.WriteErrors
	for k, v := range b.FailOpen {
		sum.FailOpen[k] += v - a.FailOpen[k]
	}
	for k, v := range b.FailClosed {
		sum.FailClosed[k] += v - a.FailClosed[k]
	}
	for k, v := range b.Verdicts {
		sum.Verdicts[k] += v - a.Verdicts[k]
	}
}

func addSlow(sum *inspectd.Stats, a, b inspectd.Stats) {
	sum.Punts += b.Punts - a.Punts
	sum.PuntBatches += b.PuntBatches - a.PuntBatches
	sum.Verdicts.Sent += b.Verdicts.Sent - a.Verdicts.Sent
	sum.Verdicts.Frames += b.Verdicts.Frames - a.Verdicts.Frames
	sum.Unanswered.Shed += b.Unanswered.Shed - a.Unanswered.Shed
	sum.Queue.Stalls += b.Queue.Stalls - a.Queue.Stalls
	sum.Queue.StallSeconds += b.Queue.StallSeconds - a.Queue.StallSeconds
	sum.Queue.SendRetries += b.Queue.SendRetries - a.Queue.SendRetries
}

func loopSummary(logs string) []string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "verdicts,") {
			out = append(out, strings.TrimSpace(strings.TrimPrefix(l, "nfqueue: ")))
		}
	}
	return out
}

// measureOffload restarts slowpathd to offload after c.OffloadAfter packets
// and runs the long TCP transfer with no filter and through Palisade, with
// the peer sending GSO super-packets (as Linux does by default) and without.
func measureOffload(ctx context.Context, e *Env, c Config, r *Results) error {
	if err := e.StartSlowpathd(ctx, c.OffloadAfter); err != nil {
		return err
	}
	r.Offload, r.Baseline = map[bool][]OffloadResult{}, map[bool][]TransferResult{}
	defer func() { _ = e.SetPeerGSO(true) }()
	for _, gso := range []bool{true, false} {
		if err := e.SetPeerGSO(gso); err != nil {
			return err
		}
		for rep := 0; rep < c.Reps; rep++ {
			if err := e.Use(ctx, None); err != nil {
				return err
			}
			b, err := e.Transfer(ctx, c.TransferBytes, c.TransferLimit)
			if err != nil {
				return fmt.Errorf("no filter: %w", err)
			}
			r.Baseline[gso] = append(r.Baseline[gso], b)
			c.logf("%-10s transfer (peer GSO %v): %+v", None, gso, b)
			o, err := offloadOnce(ctx, e, c)
			if err != nil {
				return err
			}
			r.Offload[gso] = append(r.Offload[gso], o)
			c.logf("%-10s transfer (peer GSO %v): %+v", Palisade, gso, o)
			if !o.Done {
				break // one stalled transfer tells it; three would take minutes
			}
		}
	}
	return e.Clear(ctx)
}

func offloadOnce(ctx context.Context, e *Env, c Config) (OffloadResult, error) {
	if err := e.Use(ctx, Palisade); err != nil {
		return OffloadResult{}, err
	}
	dp0, err := e.guestCounters(ctx)
	if err != nil {
		return OffloadResult{}, err
	}
	i0, err := e.Inspection(ctx)
	if err != nil {
		return OffloadResult{}, err
	}
	drops0 := e.puntDevDrops()
	t, err := e.Transfer(ctx, c.TransferBytes, c.TransferLimit)
	if err != nil {
		return OffloadResult{}, fmt.Errorf("Palisade: %w", err)
	}
	// Settle: the last ACKs pass the datapath after the guest read.
	if err := sleep(ctx, 50*time.Millisecond); err != nil {
		return OffloadResult{}, err
	}
	dp1, err := e.guestCounters(ctx)
	if err != nil {
		return OffloadResult{}, err
	}
	i1, err := e.Inspection(ctx)
	if err != nil {
		return OffloadResult{}, err
	}
	o := OffloadResult{TransferResult: t,
		ToGuest:      dp1["packets_to_guest"] - dp0["packets_to_guest"],
		FromGuest:    dp1["packets_from_guest"] - dp0["packets_from_guest"],
		Punted:       dp1["punted"] - dp0["punted"],
		OffloadedHit: dp1["offloaded_hits"] - dp0["offloaded_hits"],
		FailClosed:   sumMap(i1.FailClosed) - sumMap(i0.FailClosed),
		FailOpen:     sumMap(i1.FailOpen) - sumMap(i0.FailOpen),
		Offloads:     i1.Offloads - i0.Offloads,
		PuntDevDrops: e.puntDevDrops() - drops0}
	o.Packets = o.ToGuest + o.FromGuest
	if conns, err := e.API.Connections(ctx, GuestID, 64); err == nil {
		for _, cn := range conns {
			if cn.Proto == 6 && cn.GuestPort == TCPPort {
				o.Verdict = cn.Verdict
			}
		}
	}
	return o, e.Clear(ctx)
}

func countDone(ts []TransferResult) int {
	n := 0
	for _, t := range ts {
		if t.Done {
			n++
		}
	}
	return n
}

func sumMap(m map[string]uint64) uint64 {
	var n uint64
	for _, v := range m {
		n += v
	}
	return n
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func floodMedian(fs []FloodResult, f func(FloodResult) float64) float64 {
	v := make([]float64, len(fs))
	for i, x := range fs {
		v[i] = f(x)
	}
	return median(v)
}

func pingMedian(ps []PingResult, p float64) time.Duration {
	v := make([]float64, len(ps))
	for i, x := range ps {
		v[i] = float64(x.Percentile(p))
	}
	return time.Duration(median(v))
}

func us(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/1e3) }

func kpps(v float64) string { return fmt.Sprintf("%.1f", v/1e3) }

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func mapString(m map[string]uint64) string {
	keys := slices.Sorted(maps.Keys(m))
	var parts []string
	for _, k := range keys {
		if m[k] != 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// Medians are the figures the tables print.
type Medians struct {
	PPS, SentPPS map[Mode]float64
	CPU          map[Mode]CPU
	P50, P99     map[Mode]time.Duration
}

// Medians computes the tables' figures.
func (r *Results) Medians() Medians {
	md := Medians{PPS: map[Mode]float64{}, SentPPS: map[Mode]float64{}, CPU: map[Mode]CPU{}, P50: map[Mode]time.Duration{}, P99: map[Mode]time.Duration{}}
	for _, m := range modes {
		fs := r.Flood[m]
		md.PPS[m] = floodMedian(fs, FloodResult.PPS)
		md.SentPPS[m] = floodMedian(fs, FloodResult.SentPPS)
		md.CPU[m] = CPU{
			Bench:     floodMedian(fs, func(f FloodResult) float64 { return f.CPU.Bench }),
			Fastpathd: floodMedian(fs, func(f FloodResult) float64 { return f.CPU.Fastpathd }),
			Slowpathd: floodMedian(fs, func(f FloodResult) float64 { return f.CPU.Slowpathd }),
			Loop:      floodMedian(fs, func(f FloodResult) float64 { return f.CPU.Loop }),
			SoftIRQ:   floodMedian(fs, func(f FloodResult) float64 { return f.CPU.SoftIRQ }),
			Idle:      floodMedian(fs, func(f FloodResult) float64 { return f.CPU.Idle }),
		}
		md.P50[m] = pingMedian(r.Ping[m], 50)
		md.P99[m] = pingMedian(r.Ping[m], 99)
	}
	return md
}

func (r *Results) print(out io.Writer, c Config) {
	md := r.Medians()
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(out, "\nTable 1: UDP throughput, peer → guest through the host's vSwitch (%d flows, %d-byte payload), delivered = received by the guest's NIC\n", c.Senders, c.Payload)
	fmt.Fprintln(tw, "config\toffered kpps\tdelivered kpps\tof offered\tof no filter\tCPU: senders\tfastpathd\tslowpathd\tverdict loop\tsoftirq\tidle\t")
	cpu := func(v float64) string { return fmt.Sprintf("%.2f", v) }
	for _, m := range []Mode{None, Palisade, NFQueue} {
		u := md.CPU[m]
		fast, slow, loop := "-", "-", "-"
		switch m {
		case Palisade:
			fast, slow = cpu(u.Fastpathd), cpu(u.Slowpathd)
		case NFQueue:
			loop = cpu(u.Loop)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", m, kpps(md.SentPPS[m]), kpps(md.PPS[m]),
			ratio(md.PPS[m], md.SentPPS[m]), ratio(md.PPS[m], md.PPS[None]), cpu(u.Bench), fast, slow, loop, cpu(u.SoftIRQ), cpu(u.Idle))
	}
	tw.Flush()
	fmt.Fprintf(out, "Palisade / NFQUEUE delivered: %s   (CPU columns: share of one CPU, %d in all; medians of %d)\n",
		ratio(md.PPS[Palisade], md.PPS[NFQueue]), numCPU(), c.Reps)
	in := r.Inspection
	fmt.Fprintf(out, "fastpathd inspection (Palisade runs): held %d, reinjected %d, verdicts %s; fail_open: %s; fail_closed: %s; in-kernel passes without a slow path (engine_offline): %d\n",
		in.Held, in.Reinjected, mapString(in.Verdicts), mapString(in.FailOpen), mapString(in.FailClosed), r.EngineOffline)
	per := func(a, b uint64) string {
		if b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f", float64(a)/float64(b))
	}
	fmt.Fprintf(out, "  punt batches to slowpathd: %d (%s packets each); slowpathd: %d punts, %d verdict frames (%s verdicts each), shed %d, reader stalls %d (%.3fs)\n",
		in.Batches, per(in.Sent, in.Batches), r.Slow.Punts, r.Slow.Verdicts.Frames, per(r.Slow.Verdicts.Sent, r.Slow.Verdicts.Frames),
		r.Slow.Unanswered.Shed, r.Slow.Queue.Stalls, r.Slow.Queue.StallSeconds)
	fmt.Fprintf(out, "NFQUEUE queue %d (NFQUEUE runs, floods): queued %d, dropped: queue full %d, socket full %d; verdict loop: %s\n",
		NFQueueNum, r.Queue.Queued, r.Queue.QueueFull, r.Queue.UserDropped, strings.Join(r.Loops, "; "))

	fmt.Fprintf(out, "\nTable 2: UDP round trip, one outstanding, %d per measurement; each crosses inspection twice (request in, reply out) in both systems\n", c.RoundTrips)
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "config\tp50 µs\tp99 µs\tadded p50 µs\tadded p99 µs\tlost\t")
	for _, m := range []Mode{None, Palisade, NFQueue} {
		lost := 0
		for _, p := range r.Ping[m] {
			lost += p.Lost
		}
		added50, added99 := "-", "-"
		if m != None {
			added50, added99 = us(md.P50[m]-md.P50[None]), us(md.P99[m]-md.P99[None])
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t\n", m, us(md.P50[m]), us(md.P99[m]), added50, added99, lost)
	}
	tw.Flush()
	fmt.Fprintf(out, "Palisade / NFQUEUE added latency: p50 %s, p99 %s\n",
		ratio(float64(md.P50[Palisade]-md.P50[None]), float64(md.P50[NFQueue]-md.P50[None])),
		ratio(float64(md.P99[Palisade]-md.P99[None]), float64(md.P99[NFQueue]-md.P99[None])))
	if n := len(r.SlowPingLatency); n > 0 {
		var p50, p99 []float64
		for _, l := range r.SlowPingLatency {
			p50, p99 = append(p50, l.P50Micros), append(p99, l.P99Micros)
		}
		fmt.Fprintf(out, "  of which inside slowpathd (punt frame read → verdict ready, its own window): p50 %.1f µs, p99 %.1f µs per crossing\n",
			median(p50), median(p99))
	}

	fmt.Fprintf(out, "\nTable 3: offload, one %d MiB TCP transfer peer → guest through an inspected flow (slowpathd --offload-after %d), at most %s, median of up to %d\n",
		c.TransferBytes>>20, c.OffloadAfter, c.TransferLimit, c.Reps)
	tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "config\tpeer GSO\tMB/s\tof no filter\tcompleted\tpackets to/from guest\tpunted\tfraction punted\toffloaded hits\tpunt device drops\tfail closed/open\tflow ends\t")
	for _, gso := range []bool{true, false} {
		onOff := map[bool]string{true: "on", false: "off"}[gso]
		var base []float64
		for _, b := range r.Baseline[gso] {
			base = append(base, b.MBps())
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t1.00\t%d/%d\t-\t-\t-\t-\t-\t-\t-\t\n", None, onOff, median(base), countDone(r.Baseline[gso]), len(r.Baseline[gso]))
		os := slices.Clone(r.Offload[gso])
		if len(os) == 0 {
			continue
		}
		fraction := func(o OffloadResult) float64 {
			if o.Packets == 0 {
				return 0
			}
			return float64(o.Punted) / float64(o.Packets)
		}
		sort.Slice(os, func(i, j int) bool { return fraction(os[i]) < fraction(os[j]) })
		var pal []float64
		done := 0
		for _, o := range os {
			pal = append(pal, o.MBps())
			if o.Done {
				done++
			}
		}
		m := os[len(os)/2]
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%s\t%d/%d\t%d\t%d\t%.5f\t%d\t%d\t%d/%d\t%s\t\n", Palisade, onOff, median(pal), ratio(median(pal), median(base)),
			done, len(os), m.Packets, m.Punted, fraction(m), m.OffloadedHit, m.PuntDevDrops, m.FailClosed, m.FailOpen, m.Verdict)
	}
	tw.Flush()
	fmt.Fprintln(out, "  packets are what the vNIC's programs see (GSO super-packets of up to 64 KB count once); the Palisade row's counts are those of its transfer with the median fraction")
	fmt.Fprintln(out, "  peer GSO off: the peer's eth0 has gso_max_segs 1, so its TCP sends wire-size segments only (see the notes)")
}
