package punt

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/palisade/palisade/fastpath/bench"
)

func floodMedian(fs []FloodResult, f func(FloodResult) float64) float64 {
	v := make([]float64, len(fs))
	for i, x := range fs {
		v[i] = f(x)
	}
	return bench.Median(v)
}

func pingMedian(ps []PingResult, p float64) time.Duration {
	v := make([]float64, len(ps))
	for i, x := range ps {
		v[i] = float64(x.Percentile(p))
	}
	return time.Duration(bench.Median(v))
}

func us(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/1e3) }

func kpps(v float64) string { return fmt.Sprintf("%.1f", v/1e3) }

func ratio(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func per(a, b uint64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", float64(a)/float64(b))
}

func pct(a, b uint64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(a)/float64(b))
}

func mapString(m map[string]uint64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if m[k] != 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func senders(n int) string {
	if n == 1 {
		return "1 sender"
	}
	return fmt.Sprintf("%d senders", n)
}

// Medians are the figures the tables print.
type Medians struct {
	PPS, SentPPS map[Load]float64
	CPU          map[Load]CPU
	P50, P99     map[Mode]time.Duration
}

// Medians computes the tables' figures.
func (r *Results) Medians() Medians {
	md := Medians{PPS: map[Load]float64{}, SentPPS: map[Load]float64{}, CPU: map[Load]CPU{}, P50: map[Mode]time.Duration{}, P99: map[Mode]time.Duration{}}
	for k, fs := range r.Flood {
		md.PPS[k] = floodMedian(fs, FloodResult.PPS)
		md.SentPPS[k] = floodMedian(fs, FloodResult.SentPPS)
		md.CPU[k] = CPU{
			Bench:     floodMedian(fs, func(f FloodResult) float64 { return f.CPU.Bench }),
			Fastpathd: floodMedian(fs, func(f FloodResult) float64 { return f.CPU.Fastpathd }),
			Slowpathd: floodMedian(fs, func(f FloodResult) float64 { return f.CPU.Slowpathd }),
			Loop:      floodMedian(fs, func(f FloodResult) float64 { return f.CPU.Loop }),
			SoftIRQ:   floodMedian(fs, func(f FloodResult) float64 { return f.CPU.SoftIRQ }),
			Idle:      floodMedian(fs, func(f FloodResult) float64 { return f.CPU.Idle }),
		}
	}
	for _, m := range modes {
		md.P50[m] = pingMedian(r.Ping[m], 50)
		md.P99[m] = pingMedian(r.Ping[m], 99)
	}
	return md
}

// rowOrder is the configurations the tables show, in order: NFQUEUE only
// where it could run.
func (r *Results) rowOrder() []Mode {
	if r.NFQueueNA != "" {
		return []Mode{None, Palisade}
	}
	return []Mode{None, Palisade, NFQueue}
}

// nfqNA prints the line that stands for NFQUEUE's rows where it could not
// run, and says whether it did.
func (r *Results) nfqNA(out io.Writer) bool {
	if r.NFQueueNA == "" {
		return false
	}
	fmt.Fprintf(out, "NFQUEUE: n/a (%s)\n", r.NFQueueNA)
	return true
}

func (r *Results) print(out io.Writer, c Config) {
	md := r.Medians()
	r.printThroughput(out, c, md)
	r.printLatency(out, c, md)
	r.printOffload(out, c)
	r.printNotes(out, c, md)
}

func (r *Results) printThroughput(out io.Writer, c Config, md Medians) {
	fmt.Fprintf(out, "\nTable 1: UDP throughput, peer → guest through the host's vSwitch, %d-byte payload, one flow per sender, as fast as the senders can; delivered = received by the guest's NIC; median of %d × %s\n",
		c.Payload, c.Reps, c.Duration)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "load\tconfig\toffered kpps\tdelivered kpps\tof offered\tof no filter\tCPU: bench\tfastpathd\tslowpathd\tverdict loop\tsoftirq\tidle\t")
	cpu := func(v float64) string { return fmt.Sprintf("%.2f", v) }
	for _, n := range c.Senders {
		for _, m := range r.rowOrder() {
			k := Load{n, m}
			u := md.CPU[k]
			fast, slow, loop := "-", "-", "-"
			switch m {
			case Palisade:
				fast, slow = cpu(u.Fastpathd), cpu(u.Slowpathd)
			case NFQueue:
				loop = cpu(u.Loop)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", senders(n), m, kpps(md.SentPPS[k]), kpps(md.PPS[k]),
				ratio(md.PPS[k], md.SentPPS[k]), ratio(md.PPS[k], md.PPS[Load{n, None}]), cpu(u.Bench), fast, slow, loop, cpu(u.SoftIRQ), cpu(u.Idle))
		}
	}
	tw.Flush()
	if !r.nfqNA(out) {
		var ratios []string
		for _, n := range c.Senders {
			ratios = append(ratios, fmt.Sprintf("%s %s", senders(n), ratio(md.PPS[Load{n, Palisade}], md.PPS[Load{n, NFQueue}])))
		}
		fmt.Fprintf(out, "Palisade / NFQUEUE delivered: %s\n", strings.Join(ratios, ", "))
	}
	fmt.Fprintf(out, "CPU columns: share of one CPU (%d CPUs in all) over the measured window; a process's share includes the kernel work done in its context\n", numCPU())
	fmt.Fprintln(out, "Where the floods' packets went (all repetitions summed):")
	for _, n := range c.Senders {
		in, sl := r.FloodInspection[n], r.FloodSlow[n]
		failed := sumMap(in.FailClosed)
		fmt.Fprintf(out, "  %s, Palisade: fastpathd held %d, reinjected %d, failed closed %d (%s of held: %s), late verdicts %d; %d punt batches (%s packets each); the datapath shed %d in the kernel (%d times at the bound); slowpathd shed %d, verdict frames %d (%s verdicts each)\n",
			senders(n), in.Held, in.Reinjected, failed, pct(failed, in.Held), mapString(in.FailClosed), in.Late,
			in.Batches, per(in.Sent, in.Batches), r.FloodShed[n], in.Congestions, sl.Unanswered.Shed, sl.Verdicts.Frames, per(sl.Verdicts.Sent, sl.Verdicts.Frames))
		if r.NFQueueNA != "" {
			continue
		}
		q := r.FloodQueue[n]
		fmt.Fprintf(out, "  %s, NFQUEUE: queued %d, dropped in the kernel: queue full %d (%s of what reached the queue), socket full %d\n",
			senders(n), q.Queued, q.QueueFull, pct(q.QueueFull, q.Queued+q.QueueFull+q.UserDropped), q.UserDropped)
	}
	in := r.Inspection
	fmt.Fprintf(out, "Palisade, every flood and round trip: fail_open %s; fail_closed %s; in-kernel passes without a slow path (engine_offline) %d; verdicts %s\n",
		mapString(in.FailOpen), mapString(in.FailClosed), r.EngineOffline, mapString(in.Verdicts))
}

func (r *Results) printLatency(out io.Writer, c Config, md Medians) {
	fmt.Fprintf(out, "\nTable 2: UDP round trip, one outstanding, %d per measurement, median of %d; each round trip crosses inspection twice (request in, reply out) in both systems\n",
		c.RoundTrips, c.Reps)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "config\tp50 µs\tp99 µs\tadded p50 µs\tadded p99 µs\tlost\t")
	for _, m := range r.rowOrder() {
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
	if !r.nfqNA(out) {
		fmt.Fprintf(out, "Palisade / NFQUEUE added latency: p50 %s, p99 %s\n",
			ratio(float64(md.P50[Palisade]-md.P50[None]), float64(md.P50[NFQueue]-md.P50[None])),
			ratio(float64(md.P99[Palisade]-md.P99[None]), float64(md.P99[NFQueue]-md.P99[None])))
	}
	if len(r.SlowPingLatency) > 0 {
		var p50, p99, e50 []float64
		for _, l := range r.SlowPingLatency {
			p50, p99, e50 = append(p50, l.P50Micros), append(p99, l.P99Micros), append(e50, l.EngineP50Us)
		}
		fmt.Fprintf(out, "of Palisade's, inside slowpathd (punt batch read → verdict ready, slowpathd's own window): p50 %.1f µs, p99 %.1f µs per crossing, of which its engines p50 %.2f µs\n",
			bench.Median(p50), bench.Median(p99), bench.Median(e50))
	}
	if len(r.BindingRTT) > 0 {
		v := make([]float64, len(r.BindingRTT))
		for i, d := range r.BindingRTT {
			v[i] = float64(d)
		}
		fmt.Fprintf(out, "the binding's keepalive round trip (fastpathd ↔ slowpathd, one frame each way, as fastpathd measures it): median %s µs\n", us(time.Duration(bench.Median(v))))
	}
}

func (r *Results) printOffload(out io.Writer, c Config) {
	fmt.Fprintf(out, "\nTable 3: offload, one %d MiB TCP transfer peer → guest through an inspected flow (slowpathd --offload-after %d), at most %s each, median of up to %d\n",
		c.TransferBytes>>20, c.OffloadAfter, c.TransferLimit, c.Reps)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "config\tpeer GSO\tMB/s\tof no filter\tcompleted\tpackets to/from guest\tpunted\tfraction punted\toffloaded hits\tpunt device drops\tfail closed/open\tflow ends\t")
	fraction := func(o OffloadResult) float64 {
		if o.Packets == 0 {
			return 0
		}
		return float64(o.Punted) / float64(o.Packets)
	}
	for _, gso := range []bool{true, false} {
		onOff := map[bool]string{true: "on", false: "off"}[gso]
		var base []float64
		for _, b := range r.Baseline[gso] {
			base = append(base, b.MBps())
		}
		if len(base) == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t1.00\t%d/%d\t-\t-\t-\t-\t-\t-\t-\t\n", None, onOff, bench.Median(base), countDone(r.Baseline[gso]), len(r.Baseline[gso]))
		os := slices.Clone(r.Offload[gso])
		if len(os) == 0 {
			continue
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
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%s\t%d/%d\t%d\t%d\t%.5f\t%d\t%d\t%d/%d\t%s\t\n", Palisade, onOff, bench.Median(pal), ratio(bench.Median(pal), bench.Median(base)),
			done, len(os), m.Packets, m.Punted, fraction(m), m.OffloadedHit, m.PuntDevDrops, m.FailClosed, m.FailOpen, m.Verdict)
	}
	tw.Flush()
	fmt.Fprintln(out, "packets are what the vNIC's programs see (a GSO super-packet of up to 64 KB counts once); the Palisade row's counts are its transfer with the median fraction;")
	fmt.Fprintln(out, "peer GSO off: the peer's eth0 has gso_max_segs 1, so its TCP sends wire-size segments only; a stalled transfer is not repeated")
}

// printNotes names what limited each configuration, from the numbers above.
func (r *Results) printNotes(out io.Writer, c Config, md Medians) {
	fmt.Fprintln(out, "\nNotes:")
	note := func(format string, args ...any) { fmt.Fprintf(out, "- "+format+"\n", args...) }
	for _, n := range c.Senders {
		none, pal, nfq := Load{n, None}, Load{n, Palisade}, Load{n, NFQueue}
		u := md.CPU[none]
		note("%s, no filter: %s kpps with %.0f%% of the machine idle: the ceiling is the senders themselves (their sends carry the veth, bridge and receive path: bench process %.2f CPU, softirq %.2f).",
			senders(n), kpps(md.PPS[none]), 100*u.Idle/float64(max(1, numCPU())), u.Bench, u.SoftIRQ)
		if r.NFQueueNA == "" {
			q := r.FloodQueue[n]
			u = md.CPU[nfq]
			lim := "the machine is saturated (idle %.2f): the loop gets only part of a CPU against the senders"
			if u.Loop >= 0.8 {
				lim = "the verdict loop is the bottleneck: it is on a CPU nearly all the time (idle %.2f) and each packet costs it two recvmsg (go-nfqueue peeks, then reads) and one sendmsg"
			}
			note("%s, NFQUEUE: %s kpps delivered, %s of what reached the queue dropped there by the kernel (queue full, 1,024 packets); verdict loop %.2f CPU; "+lim+".",
				append([]any{senders(n), kpps(md.PPS[nfq]), pct(q.QueueFull, q.Queued+q.QueueFull+q.UserDropped), u.Loop}, u.Idle)...)
		}
		in := r.FloodInspection[n]
		u = md.CPU[pal]
		failed := sumMap(in.FailClosed)
		if failed*2 > in.Held && in.Held > 0 {
			note("%s, Palisade: %s kpps delivered; %s of held packets failed closed (%s), %d verdicts came after the 50 ms timeout, %d more shed by the datapath in the kernel; fastpathd %.2f CPU, slowpathd %.2f: fastpathd's punt loop is the bottleneck and the load is past it. A packet over the guest's %d-packet bound fails closed as soon as it is read and leaves the queue at once, and while the guest is at its bound the datapath drops its held packets itself, so the overload costs fastpathd little more than its reads; %s packets per punt batch (at most 64).",
				senders(n), kpps(md.PPS[pal]), pct(failed, in.Held), mapString(in.FailClosed), in.Late, r.FloodShed[n], u.Fastpathd, u.Slowpathd, 256, per(in.Sent, in.Batches))
		} else {
			note("%s, Palisade: %s kpps delivered; %s of held packets failed closed (%s); fastpathd %.2f CPU, slowpathd %.2f; %s packets per punt batch: fastpathd's per-packet read and reinjection (one recvfrom and one sendto per packet) are the cost, slowpathd is mostly idle.",
				senders(n), kpps(md.PPS[pal]), pct(failed, in.Held), mapString(in.FailClosed), u.Fastpathd, u.Slowpathd, per(in.Sent, in.Batches))
		}
	}
	nfqAdds := us(md.P50[NFQueue]-md.P50[None]) + " µs"
	if r.NFQueueNA != "" {
		nfqAdds = "n/a"
	}
	note("Round trips: no filter %s µs p50; NFQUEUE adds %s, Palisade %s µs at p50 for two crossings. An NFQUEUE crossing wakes one thread (the verdict loop) and is one netlink message each way. A Palisade crossing wakes four: fastpathd's punt reader (poll), which writes the punt batch itself when the session is idle, slowpathd's session reader (TCP), its worker, which writes the verdict, and fastpathd's session reader (TCP), which writes the packet back; the engines' own time is negligible. On this VM a thread woken on an idle CPU costs tens of µs, so the hand-offs, not the work, are Palisade's latency.",
		us(md.P50[None]), nfqAdds, us(md.P50[Palisade]-md.P50[None]))
	if os := r.Offload[true]; len(os) > 0 && !os[0].Done {
		o := os[0]
		note("Offload with GSO (the peer's default): the transfer stalled (%d of %d bytes in %s): %d held super-packets were dropped by the punt device before fastpathd saw them, so the flow's held count never matches what came back and the datapath never switches it to offload; TCP recovers each loss by retransmission timeout.",
			o.Bytes, c.TransferBytes, o.Elapsed.Round(time.Millisecond), o.PuntDevDrops)
	}
	note("Both systems hold packets without a verdict fail-closed: Palisade's guest has inspection_failure closed (its fail_open counters above are the proof), NFQUEUE has no fail-open flag and no bypass. Palisade holds at most %d packets per guest (--punt-queue), NFQUEUE 1,024 per queue.", 256)
	if r.NFQueueNA == "" {
		note("br_netfilter (bridge-nf-call-iptables) is on in the host namespace only while NFQUEUE is measured; its cost is NFQUEUE's.")
	}
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
