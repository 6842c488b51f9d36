package punt

import (
	"context"
	"fmt"
	"io"
	"maps"
	"runtime"
	"strings"
	"time"

	"github.com/palisade/palisade/fastpath/bench"
	"github.com/palisade/palisade/fastpath/punt"
	"github.com/palisade/palisade/hypervisor/lab"
	"github.com/palisade/palisade/slowpath/inspectd"
)

// Config sizes a run.
type Config struct {
	Duration      time.Duration // one throughput measurement
	Warmup        time.Duration // sending before a throughput measurement starts
	Reps          int           // measurements per figure (the median is reported)
	Senders       []int         // offered loads: UDP sender goroutines (one flow each)
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
	return Config{Duration: 3 * time.Second, Warmup: 500 * time.Millisecond, Reps: 3, Senders: []int{1, 4}, Payload: 64,
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

// Load is one throughput measurement's offered load and configuration.
type Load struct {
	Senders int
	Mode    Mode
}

// Results are everything a run measured.
type Results struct {
	// NFQueueNA says why NFQUEUE was not measured ("" if it was).
	NFQueueNA string

	Flood map[Load][]FloodResult
	Ping  map[Mode][]PingResult

	// Over the Palisade floods, by sender count: fastpathd's and
	// slowpathd's counters, summed.
	FloodInspection map[int]*punt.Stats
	FloodSlow       map[int]*inspectd.Stats
	// Held packets the datapath dropped itself while their guest was at
	// its pending bound (fail-closed shedding), by sender count.
	FloodShed map[int]uint64
	// Over the NFQUEUE floods, by sender count.
	FloodQueue map[int]*QueueStats

	// Over every Palisade measurement (floods and round trips): fastpathd's
	// counters, and the datapath's in-kernel fail-open passes.
	Inspection    punt.Stats
	EngineOffline uint64
	// slowpathd's own latency window after each Palisade ping-pong, and
	// the binding's last keepalive round trip as fastpathd measured it.
	SlowPingLatency []inspectd.LatencyStats
	BindingRTT      []time.Duration

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

func newStats() *punt.Stats {
	return &punt.Stats{FailOpen: map[string]uint64{}, FailClosed: map[string]uint64{}, Verdicts: map[string]uint64{}}
}

// newResults are a run's empty results.
func newResults(c Config, nfqNA string) *Results {
	r := &Results{Flood: map[Load][]FloodResult{}, Ping: map[Mode][]PingResult{},
		FloodInspection: map[int]*punt.Stats{}, FloodSlow: map[int]*inspectd.Stats{}, FloodShed: map[int]uint64{}, FloodQueue: map[int]*QueueStats{},
		Inspection: *newStats(), NFQueueNA: nfqNA}
	for _, n := range c.Senders {
		r.FloodInspection[n], r.FloodSlow[n], r.FloodQueue[n] = newStats(), &inspectd.Stats{}, &QueueStats{}
	}
	return r
}

// Run builds the lab in l, measures and prints the report to out.
func Run(ctx context.Context, l *lab.Lab, o Options, c Config, out io.Writer) (*Results, error) {
	start := time.Now()
	o.OffloadAfter = 0 // tables 1 and 2: an inspected flow is never offloaded
	model, kernel := bench.Machine()
	fmt.Fprintf(out, "punt-bench: inline inspection round trip, Palisade vs NFQUEUE\n")
	fmt.Fprintf(out, "machine: %d CPUs (%s), kernel %s, %s", numCPU(), model, kernel, runtime.Version())
	e, err := Setup(ctx, l, o)
	if err != nil {
		return nil, err
	}
	if v, err := e.hostCmd("iptables", "--version"); err == nil {
		fmt.Fprintf(out, ", %s", strings.TrimSpace(v))
	}
	if e.NFQueueNA != "" {
		fmt.Fprintf(out, "\nNFQUEUE: n/a (%s)", e.NFQueueNA)
	}
	fmt.Fprintf(out, "\nrun: %s per throughput measurement after %s warm-up, median of %d; %s senders, %d-byte UDP payload; %d round trips per latency measurement; %d MiB TCP transfer\n",
		c.Duration, c.Warmup, c.Reps, strings.Trim(strings.ReplaceAll(fmt.Sprint(c.Senders), " ", ","), "[]"), c.Payload, c.RoundTrips, c.TransferBytes>>20)

	r := newResults(c, e.NFQueueNA)
	withLogs := func(err error) error {
		if ctx.Err() != nil {
			return err
		}
		lines := strings.Split(strings.TrimSpace(e.Logs()), "\n")
		return fmt.Errorf("%w\n--- the daemons' last output ---\n%s", err, strings.Join(lines[max(0, len(lines)-30):], "\n"))
	}
	for rep := 0; rep < c.Reps; rep++ {
		for i := range modes {
			m := modes[(i+rep)%len(modes)]
			if m == NFQueue && e.NFQueueNA != "" {
				continue
			}
			if err := measureMode(ctx, e, c, m, r); err != nil {
				return r, withLogs(fmt.Errorf("%s: %w", m, err))
			}
		}
	}
	if err := measureOffload(ctx, e, c, r); err != nil {
		return r, withLogs(fmt.Errorf("offload: %w", err))
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

// counters is one reading of the counters a configuration's figures
// come from.
type counters struct {
	insp  punt.Stats
	slow  inspectd.Stats
	dp    map[string]uint64
	queue QueueStats
}

func (e *Env) readCounters(ctx context.Context, m Mode) (counters, error) {
	var c counters
	var err error
	switch m {
	case Palisade:
		if c.insp, err = e.Inspection(ctx); err == nil {
			if c.slow, err = e.SlowInspection(ctx); err == nil {
				c.dp, err = e.guestCounters(ctx)
			}
		}
	case NFQueue:
		c.queue, err = e.QueueStats()
	}
	return c, err
}

// measureMode installs m, ping-pongs, floods at each load and removes it
// again.
func measureMode(ctx context.Context, e *Env, c Config, m Mode, r *Results) (err error) {
	if err := e.Use(ctx, m); err != nil {
		return err
	}
	defer func() {
		if cerr := e.Clear(context.WithoutCancel(ctx)); err == nil {
			err = cerr
		}
	}()
	first, err := e.readCounters(ctx, m)
	if err != nil {
		return err
	}
	// The round trips first, on a quiet host: after a flood, queues and
	// heaps are still settling.
	p, err := e.PingPong(ctx, c.RoundTrips, c.WarmTrips)
	if err != nil {
		return err
	}
	r.Ping[m] = append(r.Ping[m], p)
	c.logf("%-10s ping-pong: p50 %s p99 %s lost %d", m, p.Percentile(50), p.Percentile(99), p.Lost)
	if m == Palisade {
		slow, err := e.SlowInspection(ctx)
		if err != nil {
			return err
		}
		r.SlowPingLatency = append(r.SlowPingLatency, slow.Latency)
		if st, err := e.API.Status(ctx); err == nil && st.RTT > 0 {
			r.BindingRTT = append(r.BindingRTT, st.RTT)
		}
	}
	for _, n := range c.Senders {
		before, err := e.readCounters(ctx, m)
		if err != nil {
			return err
		}
		f, err := e.Flood(ctx, n, c.Payload, c.Warmup, c.Duration)
		if err != nil {
			return err
		}
		r.Flood[Load{n, m}] = append(r.Flood[Load{n, m}], f)
		c.logf("%-10s flood, %d senders: offered %.0f pps, delivered %.0f pps, send errors %d, cpu %+v", m, n, f.SentPPS(), f.PPS(), f.SendErrors, f.CPU)
		// Let what is queued drain before the next measurement.
		if err := sleep(ctx, 300*time.Millisecond); err != nil {
			return err
		}
		after, err := e.readCounters(ctx, m)
		if err != nil {
			return err
		}
		switch m {
		case Palisade:
			addInspection(r.FloodInspection[n], before.insp, after.insp)
			addSlow(r.FloodSlow[n], before.slow, after.slow)
			r.FloodShed[n] += after.dp["drop:punt_shed"] - before.dp["drop:punt_shed"]
		case NFQueue:
			q := r.FloodQueue[n]
			q.Queued += after.queue.Queued - before.queue.Queued
			q.QueueFull += after.queue.QueueFull - before.queue.QueueFull
			q.UserDropped += after.queue.UserDropped - before.queue.UserDropped
		}
	}
	if m == Palisade {
		last, err := e.readCounters(ctx, m)
		if err != nil {
			return err
		}
		addInspection(&r.Inspection, first.insp, last.insp)
		r.EngineOffline += last.dp["engine_offline"] - first.dp["engine_offline"]
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
	sum.Pending = max(sum.Pending, b.Pending)
	sum.WriteErrors += b.WriteErrors - a.WriteErrors
	sum.Congestions += b.Congestions - a.Congestions
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
	// The transfer's connection: the one with the most packets (a stalled
	// earlier one may still be closing).
	if conns, err := e.API.Connections(ctx, GuestID, 64); err == nil {
		var most uint64
		for _, cn := range conns {
			if n := cn.Packets[0] + cn.Packets[1]; cn.Proto == 6 && cn.GuestPort == TCPPort && n >= most {
				o.Verdict, most = cn.Verdict, n
			}
		}
	}
	return o, e.Clear(ctx)
}
