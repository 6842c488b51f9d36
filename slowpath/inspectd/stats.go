package inspectd

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/palisade/palisade/fastpath/channel"
)

type counters struct {
	batches, punts, taps, inspected, decided atomic.Uint64
	verdictFrames                            atomic.Uint64
	actions                                  [channel.ActionReject + 1]atomic.Uint64
	flows                                    [channel.FlowBlock + 1]atomic.Uint64
	droppedUnbound, shed, engineFailures     atomic.Uint64
	repliesTooLarge                          atomic.Uint64
	stalls, stallNanos, sendRetries          atomic.Uint64
}

// Stats is what `slowpathd inspection` shows.
type Stats struct {
	Bound   bool     `json:"bound"`
	Workers int      `json:"workers"`
	Engines []string `json:"engines"`

	PuntBatches uint64 `json:"punt_batches"`
	Punts       uint64 `json:"punts"`      // packets received
	TapCopies   uint64 `json:"tap_copies"` // of Punts
	Inspected   uint64 `json:"inspected"`  // given to the engines
	// FromDecision are packets of a flow already offloaded or blocked,
	// punted before the fast path applied the decision: answered by it.
	FromDecision uint64 `json:"from_decision"`

	Verdicts   VerdictStats    `json:"verdicts"`
	Unanswered UnansweredStats `json:"unanswered"`
	Queue      QueueStats      `json:"queue"`
	Alerts     AlertStats      `json:"alerts"`
	Latency    LatencyStats    `json:"latency"`
}

// VerdictStats count the verdicts sent.
type VerdictStats struct {
	Sent    uint64 `json:"sent"`
	Frames  uint64 `json:"frames"`
	Allow   uint64 `json:"allow"`
	Drop    uint64 `json:"drop"`
	Reject  uint64 `json:"reject"`
	Inspect uint64 `json:"keep_inspecting"`
	Offload uint64 `json:"offload"`
	Block   uint64 `json:"block"`
	// RepliesTooLarge are block pages over 16 KiB, left out (the fast path
	// sends its default reset instead).
	RepliesTooLarge uint64 `json:"replies_too_large,omitempty"`
}

// UnansweredStats count punts that got no verdict.
type UnansweredStats struct {
	Unbound        uint64 `json:"unbound"`         // queued when their binding ended
	Shed           uint64 `json:"shed"`            // no room in the queue within the stall bound
	EngineFailures uint64 `json:"engine_failures"` // an engine panicked on the packet
}

// QueueStats describe backpressure.
type QueueStats struct {
	Queued       int64   `json:"queued"`        // packets waiting now, all workers
	Stalls       uint64  `json:"stalls"`        // times the reader waited for room
	StallSeconds float64 `json:"stall_seconds"` // total time it waited
	SendRetries  uint64  `json:"send_retries"`  // the session's send queue was full
}

// AlertStats count the engines' alerts.
type AlertStats struct {
	Emitted        uint64 `json:"emitted"`
	Sent           uint64 `json:"sent"`            // to the fast path
	DroppedRate    uint64 `json:"dropped_rate"`    // over the rate limit
	DroppedUnbound uint64 `json:"dropped_unbound"` // no binding (or no events capability)
	DroppedBody    uint64 `json:"dropped_body,omitempty"`
	Written        int    `json:"written"` // to the EVE file
}

// LatencyStats are percentiles over the last samples of each worker, in
// microseconds: from a punt's arrival to its verdict being ready (queueing
// included), and the engines' own time.
type LatencyStats struct {
	Samples     int     `json:"samples"`
	P50Micros   float64 `json:"p50_us"`
	P99Micros   float64 `json:"p99_us"`
	MaxMicros   float64 `json:"max_us"`
	EngineP50Us float64 `json:"engine_p50_us"`
	EngineP99Us float64 `json:"engine_p99_us"`
}

// Stats returns the counters so far.
func (s *Service) Stats() Stats {
	n := &s.n
	st := Stats{
		Bound: s.cur.Load() != nil, Workers: len(s.workers), Engines: s.engines,
		PuntBatches: n.batches.Load(), Punts: n.punts.Load(), TapCopies: n.taps.Load(),
		Inspected: n.inspected.Load(), FromDecision: n.decided.Load(),
		Verdicts: VerdictStats{Frames: n.verdictFrames.Load(),
			Allow: n.actions[channel.ActionAllow].Load(), Drop: n.actions[channel.ActionDrop].Load(),
			Reject: n.actions[channel.ActionReject].Load(), Inspect: n.flows[channel.FlowKeepInspecting].Load(),
			Offload: n.flows[channel.FlowOffload].Load(), Block: n.flows[channel.FlowBlock].Load(),
			RepliesTooLarge: n.repliesTooLarge.Load()},
		Unanswered: UnansweredStats{Unbound: n.droppedUnbound.Load(), Shed: n.shed.Load(), EngineFailures: n.engineFailures.Load()},
		Queue: QueueStats{Stalls: n.stalls.Load(), StallSeconds: time.Duration(n.stallNanos.Load()).Seconds(),
			SendRetries: n.sendRetries.Load()},
		Alerts: AlertStats{Emitted: s.alerts.emitted.Load(), Sent: s.alerts.sent.Load(), DroppedRate: s.alerts.droppedRate.Load(),
			DroppedUnbound: s.alerts.droppedUnbound.Load(), DroppedBody: s.alerts.droppedBody.Load()},
	}
	st.Verdicts.Sent = st.Verdicts.Allow + st.Verdicts.Drop + st.Verdicts.Reject
	if s.cfg.EVE != nil {
		st.Alerts.Written = s.cfg.EVE.Count()
	}
	var total, eng []int64
	for _, w := range s.workers {
		st.Queue.Queued += w.queuedPackets.Load()
		total = w.total.appendTo(total)
		eng = w.engine.appendTo(eng)
	}
	st.Latency = LatencyStats{Samples: len(total), P50Micros: percentile(total, 50), P99Micros: percentile(total, 99),
		MaxMicros:   percentile(total, 100),
		EngineP50Us: percentile(eng, 50), EngineP99Us: percentile(eng, 99)}
	return st
}

// percentile of samples in nanoseconds, in microseconds (nearest rank).
func percentile(samples []int64, p int) float64 {
	if len(samples) == 0 {
		return 0
	}
	slices.Sort(samples)
	i := (len(samples)*p+99)/100 - 1
	return float64(samples[max(i, 0)]) / 1e3
}

// Print renders st for people; extra rows (name, value) follow the engines.
func (st Stats) Print(w io.Writer, extra ...[2]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, format string, args ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, args...)...) }
	bound := "no"
	if st.Bound {
		bound = "yes"
	}
	row("bound", "%s", bound)
	row("engines", "%s (%d workers)", strings.Join(st.Engines, ", "), st.Workers)
	for _, e := range extra {
		row(e[0], "%s", e[1])
	}
	row("punts", "%d in %d batches (%d tap copies); %d inspected, %d answered from the flow's decision",
		st.Punts, st.PuntBatches, st.TapCopies, st.Inspected, st.FromDecision)
	v := st.Verdicts
	row("verdicts", "%d in %d frames: allow %d, drop %d, reject %d", v.Sent, v.Frames, v.Allow, v.Drop, v.Reject)
	row("flow decisions", "keep inspecting %d, offload %d, block %d", v.Inspect, v.Offload, v.Block)
	if v.RepliesTooLarge > 0 {
		row("block pages left out", "%d (over 16 KiB)", v.RepliesTooLarge)
	}
	u := st.Unanswered
	row("unanswered", "unbound %d, shed %d, engine failures %d", u.Unbound, u.Shed, u.EngineFailures)
	q := st.Queue
	row("queue", "%d queued; %d stalls (%.3fs); %d send retries", q.Queued, q.Stalls, q.StallSeconds, q.SendRetries)
	a := st.Alerts
	row("alerts", "%d emitted, %d sent, %d over the rate limit, %d unbound; %d written to the EVE file",
		a.Emitted, a.Sent, a.DroppedRate, a.DroppedUnbound, a.Written)
	l := st.Latency
	row("latency", "p50 %.1fµs p99 %.1fµs max %.1fµs (engines p50 %.1fµs p99 %.1fµs) over %d samples",
		l.P50Micros, l.P99Micros, l.MaxMicros, l.EngineP50Us, l.EngineP99Us, l.Samples)
	_ = tw.Flush()
}
