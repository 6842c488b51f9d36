package ips

import (
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/slowpath/engine"
	"github.com/palisade/palisade/slowpath/eve"
	"github.com/palisade/palisade/slowpath/inspect/appproto"
	"github.com/palisade/palisade/slowpath/inspect/flow"
	"github.com/palisade/palisade/slowpath/inspect/http1"
	"github.com/palisade/palisade/slowpath/inspect/packet"
	"github.com/palisade/palisade/slowpath/inspect/stream"
	"github.com/palisade/palisade/slowpath/inspect/tlshello"
	"github.com/palisade/palisade/slowpath/ips/rule"
)

// Bounds on re-inspecting a stream's older bytes.
const (
	// maxPending bounds the stream rules of one direction whose fast
	// pattern was seen but whose other matches may still arrive.
	maxPending = 1024
	// streamLookback is how far before a segment's new bytes a stream
	// rule's unanchored contents and pcres are looked for (offset/depth
	// windows and matches relative to another are searched wherever they
	// lie).
	streamLookback = 64 << 10
	// recheckBudget bounds, per direction, the older bytes stream rules
	// may look back over in total; past it the lookback is cut to
	// shortLookback and pending rules are re-run only on a content of
	// theirs in new bytes, for the rest of the flow.
	recheckBudget = 16 << 20
	shortLookback = 4 << 10
)

// Option configures an Engine.
type Option func(*Engine)

// WithSink sends alerts to s (default: discarded).
func WithSink(s eve.Sink) Option { return func(e *Engine) { e.sink = s } }

// WithChecksumValidation skips packets whose checksums do not verify, as
// Suricata does with checksum validation on.
func WithChecksumValidation(on bool) Option { return func(e *Engine) { e.verify = on } }

// WithStreamDepth overrides the configured stream depth.
func WithStreamDepth(n int) Option { return func(e *Engine) { e.limits.Depth = n } }

// Stats are an engine's counters.
type Stats struct {
	Packets      uint64 // inspected
	Undecodable  uint64 // not IP, or malformed: allowed uninspected
	BadChecksum  uint64 // skipped by checksum validation
	Alerts       uint64
	Blocked      uint64 // packets given a drop or reject verdict
	FlowsOffload uint64
	// StreamGaps counts holes in streams skipped because the peer
	// acknowledged data that never reached the engine (a lost copy).
	StreamGaps uint64
	// ThresholdOverflow counts threshold and detection_filter events not
	// tracked because the bucket table was full (each taken as the first
	// event of its period).
	ThresholdOverflow uint64
	// LookbackCut counts stream directions that spent their re-check
	// budget and look back only shortLookback bytes since.
	LookbackCut uint64
}

type counters struct {
	packets, undecodable, badChecksum, alerts, blocked, offloads, lookbackCut, gaps atomic.Uint64
}

// Engine is the IPS; it implements engine.Engine.
type Engine struct {
	rs     *RuleSet
	sink   eve.Sink
	limits stream.Limits
	verify bool
	flows  *flow.Table[*flowState]
	rates  *rates
	n      counters
}

var _ engine.Engine = (*Engine)(nil)

// New returns an engine over a compiled rule set.
func New(rs *RuleSet, cfg *Config, opts ...Option) *Engine {
	if cfg == nil {
		cfg = DefaultConfig()
	}
	e := &Engine{rs: rs, sink: eve.Discard, limits: cfg.limits(), flows: flow.NewTable[*flowState](), rates: newRates()}
	for _, o := range opts {
		o(e)
	}
	return e
}

func (e *Engine) Name() string { return "ips" }

// Stats returns the counters so far.
func (e *Engine) Stats() Stats {
	return Stats{Packets: e.n.packets.Load(), Undecodable: e.n.undecodable.Load(), BadChecksum: e.n.badChecksum.Load(),
		Alerts: e.n.alerts.Load(), Blocked: e.n.blocked.Load(), FlowsOffload: e.n.offloads.Load(), LookbackCut: e.n.lookbackCut.Load(), StreamGaps: e.n.gaps.Load(),
		ThresholdOverflow: e.rates.overflow()}
}

// FlowEnd forgets a flow the fast path forgot.
func (e *Engine) FlowEnd(guest uint32, flowID uint64) { e.flows.End(guest, flowID) }

// flowState is the engine's per-flow state.
type flowState struct {
	app       appproto.Proto
	requests  http1.RequestParser
	responses http1.ResponseParser
	tls       [2]tlshello.RecordWalker
	pending   [2]map[int32]struct{}
	rechecked [2]int // older bytes looked back over, per direction
	inspected [2]int // bytes of each direction's stream inspected so far
	blocked   channel.Action
	offloaded bool
}

// hit is a rule that matched the current packet.
type hit struct {
	r    *compiled
	http *eve.HTTP
}

// evaluation is the context of one packet's inspection.
type evaluation struct {
	p    *engine.Packet
	pk   *packet.Packet
	f    *flow.Flow[*flowState]
	side flow.Side
	hits []hit
}

func (e *Engine) Inspect(p *engine.Packet) engine.Verdict {
	var pk packet.Packet
	if err := packet.Decode(p.Data, p.Link == engine.LinkEthernet, &pk); err != nil {
		e.n.undecodable.Add(1)
		return engine.Allow
	}
	if e.verify && pk.VerifyChecksums() != nil {
		e.n.badChecksum.Add(1)
		return engine.Allow
	}
	e.n.packets.Add(1)
	f, side := e.flows.Get(p.Guest, p.FlowID, &pk, p.Time)
	st := f.State
	if st == nil {
		st = &flowState{}
		f.State = st
	}
	switch {
	case st.blocked != 0:
		if p.Tap {
			return engine.Verdict{Action: channel.ActionAllow, Flow: channel.FlowBlock}
		}
		e.n.blocked.Add(1)
		return engine.Verdict{Action: st.blocked, Flow: channel.FlowBlock}
	case st.offloaded:
		return engine.Verdict{Action: channel.ActionAllow, Flow: channel.FlowOffload}
	}
	gaps := f.StreamGaps()
	f.Track(&pk, side, e.limits)
	if n := f.StreamGaps() - gaps; n > 0 {
		e.n.gaps.Add(uint64(n))
	}
	ev := &evaluation{p: p, pk: &pk, f: f, side: side}
	e.evalPacket(ev)
	for _, s := range [2]flow.Side{side, 1 - side} {
		str := f.Stream(s)
		if str == nil || len(str.Data()) <= st.inspected[s] {
			continue
		}
		sev := ev
		if s != side {
			// The other direction's bytes, delivered by this packet's
			// acknowledgement skipping a gap: judged as that direction.
			rev := pk
			rev.Src, rev.Dst, rev.SrcPort, rev.DstPort, rev.Payload = pk.Dst, pk.Src, pk.DstPort, pk.SrcPort, nil
			sev = &evaluation{p: p, pk: &rev, f: f, side: s}
		}
		data := str.Data()
		from := st.inspected[s]
		st.inspected[s] = len(data)
		e.evalStream(sev, st, data, from)
		e.appLayer(sev, st, data)
		if sev != ev {
			ev.hits = append(ev.hits, sev.hits...)
		}
	}
	v := e.decide(ev, st)
	if v.Flow == channel.FlowKeepInspecting && e.offloadable(f, st) {
		st.offloaded = true
		e.n.offloads.Add(1)
		v.Flow = channel.FlowOffload
	}
	return v
}

// offloadable says inspecting the flow further is pointless: the stream
// depth is reached, or a TLS handshake is over and only ciphertext follows.
func (e *Engine) offloadable(f *flow.Flow[*flowState], st *flowState) bool {
	for _, s := range []flow.Side{flow.ToServer, flow.ToClient} {
		if str := f.Stream(s); str != nil && str.Full() {
			return true
		}
	}
	return st.app == appproto.TLS && st.tls[flow.ToServer].Handshake && st.tls[flow.ToClient].ServerHello &&
		(st.tls[flow.ToServer].AppData || st.tls[flow.ToClient].AppData)
}

func (e *Engine) evalPacket(ev *evaluation) {
	pf := e.rs.pre[atPacket]
	var cands []int32
	if bp := pf.buffers[rule.BufPayload]; bp != nil && len(ev.pk.Payload) > 0 {
		bp.scan(ev.pk.Payload, 0, func(i int32) { cands = append(cands, i) })
	}
	cands = mergeSorted(cands, pf.always)
	var bufs [rule.NumBuffers][]byte
	bufs[rule.BufPayload] = ev.pk.Payload
	for _, idx := range cands {
		r := e.rs.rules[idx]
		if e.header(ev, r) && matchAll(r, &bufs) && e.filter(ev, r) {
			ev.hits = append(ev.hits, hit{r: r})
		}
	}
}

// evalStream runs the stream rules over a direction whose reassembled data
// grew: the bytes before from were inspected by earlier calls.
func (e *Engine) evalStream(ev *evaluation, st *flowState, data []byte, from int) {
	pf := e.rs.pre[atStream]
	var cands []int32
	if bp := pf.buffers[rule.BufPayload]; bp != nil {
		bp.scan(data, from, func(i int32) { cands = append(cands, i) })
	}
	pend := st.pending[ev.side]
	budget := st.rechecked[ev.side] < recheckBudget
	if len(pend) > 0 {
		// A pending rule can only gain a new match through new bytes: run
		// it again when one of its contents is among them, or, while the
		// direction's re-check budget lasts, when it has a pcre (which
		// the new bytes may complete).
		if pf.contents != nil {
			pf.contents.scan(data, from, func(i int32) {
				if _, ok := pend[i]; ok {
					cands = append(cands, i)
				}
			})
		}
		if budget {
			for i := range pend {
				if e.rs.rules[i].pcre {
					cands = append(cands, i)
				}
			}
		}
	}
	cands = mergeSorted(cands, pf.always)
	lookback := streamLookback
	if !budget {
		lookback = shortLookback
	}
	lo := max(0, from-lookback)
	for _, idx := range cands {
		r := e.rs.rules[idx]
		if !e.header(ev, r) {
			continue
		}
		if st.rechecked[ev.side] < recheckBudget {
			if st.rechecked[ev.side] += from - lo; st.rechecked[ev.side] >= recheckBudget {
				e.n.lookbackCut.Add(1)
			}
		}
		// Only a match ending in the new bytes is new: the older ones
		// were reported when their bytes arrived.
		if !matchStream(r.byBuffer[rule.BufPayload], data, from, lo) {
			// Its other contents may arrive with later segments.
			if r.fast != nil && len(pend) < maxPending {
				if pend == nil {
					pend = map[int32]struct{}{}
					st.pending[ev.side] = pend
				}
				pend[idx] = struct{}{}
			}
			continue
		}
		delete(pend, idx)
		if e.filter(ev, r) {
			ev.hits = append(ev.hits, hit{r: r})
		}
	}
}

// appLayer detects HTTP and TLS on a flow and runs the HTTP rules on each
// complete request.
func (e *Engine) appLayer(ev *evaluation, st *flowState, data []byte) {
	if st.app == appproto.Unknown && ev.side == flow.ToServer {
		st.app = appproto.Detect(data)
	}
	switch st.app {
	case appproto.HTTP:
		if ev.side == flow.ToClient {
			// Responses are parsed only to stay in step; one that cannot
			// be parsed stops response parsing (its error is kept), never
			// the inspection of the requests.
			st.responses.Parse(data, nil)
			return
		}
		// A request that cannot be parsed stops request parsing; the
		// requests before it, and one whose body alone is malformed, were
		// inspected.
		if st.requests.Parse(data, func(req *http1.Request) {
			st.responses.Expect(req.Method)
			e.evalHTTP(ev, data, req)
		}) != nil {
			st.app = appproto.Other
		}
	case appproto.TLS:
		st.tls[ev.side].Walk(data)
	}
}

func (e *Engine) evalHTTP(ev *evaluation, stream []byte, req *http1.Request) {
	pf := e.rs.pre[atHTTP]
	bufs := httpBuffers(stream, req)
	var cands []int32
	for b, bp := range pf.buffers {
		if bp != nil && len(bufs[b]) > 0 {
			bp.scan(bufs[b], 0, func(i int32) { cands = append(cands, i) })
		}
	}
	cands = mergeSorted(cands, pf.always)
	var info *eve.HTTP
	for _, idx := range cands {
		r := e.rs.rules[idx]
		if e.header(ev, r) && matchAll(r, &bufs) && e.filter(ev, r) {
			if info == nil {
				info = &eve.HTTP{Hostname: string(bufs[rule.BufHost]), URL: string(req.URI), UserAgent: string(bufs[rule.BufUserAgent]),
					Method: string(req.Method), Protocol: string(req.Protocol)}
			}
			ev.hits = append(ev.hits, hit{r: r, http: info})
		}
	}
}

// mergeSorted sorts and de-duplicates candidates and merges the
// always-evaluated rules in, so rules run in load order once each.
func mergeSorted(cands, always []int32) []int32 {
	if len(cands) == 0 {
		return always
	}
	cands = append(cands, always...)
	slices.Sort(cands)
	return slices.Compact(cands)
}

func matchAll(r *compiled, bufs *[rule.NumBuffers][]byte) bool {
	for b, ms := range r.byBuffer {
		if len(ms) > 0 && !matchBuffer(ms, bufs[b]) {
			return false
		}
	}
	return true
}

// header checks protocol, addresses, ports, flow and dsize.
func (e *Engine) header(ev *evaluation, r *compiled) bool {
	pk := ev.pk
	switch r.Proto {
	case rule.ProtoTCP, rule.ProtoHTTP:
		if pk.Proto != packet.ProtoTCP {
			return false
		}
	case rule.ProtoUDP:
		if pk.Proto != packet.ProtoUDP {
			return false
		}
	case rule.ProtoICMP:
		if pk.Proto != packet.ProtoICMP && pk.Proto != packet.ProtoICMPv6 {
			return false
		}
	}
	if !e.endpoints(r, pk.Src, pk.SrcPort, pk.Dst, pk.DstPort, pk.HasPorts()) &&
		!(r.Bidirectional && e.endpoints(r, pk.Dst, pk.DstPort, pk.Src, pk.SrcPort, pk.HasPorts())) {
		return false
	}
	fl := r.Flow
	switch {
	case fl.Dir == rule.FlowToServer && ev.side != flow.ToServer,
		fl.Dir == rule.FlowToClient && ev.side != flow.ToClient,
		fl.Established && !ev.f.Established(),
		fl.NotEstablished && ev.f.Established():
		return false
	}
	return r.Dsize == nil || r.Dsize.Matches(len(pk.Payload))
}

func (e *Engine) endpoints(r *compiled, src netip.Addr, sport uint16, dst netip.Addr, dport uint16, ports bool) bool {
	if !r.src.Contains(src) || !r.dst.Contains(dst) {
		return false
	}
	if !ports {
		return r.sport.IsAny() && r.dport.IsAny()
	}
	return r.sport.Contains(sport) && r.dport.Contains(dport)
}

// filter applies detection_filter: a rule only matches once its rate is
// exceeded.
func (e *Engine) filter(ev *evaluation, r *compiled) bool {
	df := r.DetectionFilter
	return df == nil || e.rates.detectionFilter(int32(r.idx), df, ev.pk.Src, ev.pk.Dst, e.now(ev))
}

func (e *Engine) now(ev *evaluation) time.Time {
	if ev.p.Time.IsZero() {
		return time.Now()
	}
	return ev.p.Time
}

// actionOrder is Suricata's default: pass first, then drop, reject, alert.
func actionOrder(a rule.Action) int {
	switch a {
	case rule.Pass:
		return 0
	case rule.Drop:
		return 1
	case rule.Reject:
		return 2
	}
	return 3
}

// decide turns the packet's hits into alerts and a verdict.
func (e *Engine) decide(ev *evaluation, st *flowState) engine.Verdict {
	if len(ev.hits) == 0 {
		return engine.Allow
	}
	slices.SortStableFunc(ev.hits, func(a, b hit) int {
		if d := actionOrder(a.r.Action) - actionOrder(b.r.Action); d != 0 {
			return d
		}
		return a.r.idx - b.r.idx
	})
	if ev.hits[0].r.Action == rule.Pass {
		return engine.Allow // pass ends the packet's inspection: no alerts
	}
	action := channel.ActionAllow
	for _, h := range ev.hits {
		r := h.r
		blocks := (r.Action == rule.Drop || r.Action == rule.Reject) && !ev.p.Tap
		if blocks {
			a := channel.ActionDrop
			if r.Action == rule.Reject {
				a = channel.ActionReject
			}
			if a > action {
				action = a
			}
		}
		if r.Threshold != nil && !e.rates.threshold(int32(r.idx), r.Threshold, ev.pk.Src, ev.pk.Dst, e.now(ev)) {
			continue
		}
		e.emit(ev, st, h, blocks)
	}
	if action == channel.ActionAllow {
		return engine.Allow
	}
	st.blocked = action
	e.n.blocked.Add(1)
	return engine.Verdict{Action: action, Flow: channel.FlowBlock}
}

func (e *Engine) emit(ev *evaluation, st *flowState, h hit, blocked bool) {
	e.n.alerts.Add(1)
	rec := eve.NewAlert(e.now(ev), ev.f.ID, ev.pk.Src, ev.pk.SrcPort, ev.pk.Dst, ev.pk.DstPort, ev.pk.HasPorts(), ev.pk.ProtoName())
	rec.Guest, rec.FastFlowID = ev.p.Guest, ev.p.FlowID
	rec.Alert = &eve.Alert{Action: eve.ActionAllowed, GID: 1, SignatureID: h.r.SID, Rev: h.r.Rev, Signature: h.r.Msg,
		Category: h.r.category, Severity: h.r.severity}
	if blocked {
		rec.Alert.Action = eve.ActionBlocked
	}
	switch st.app {
	case appproto.HTTP:
		rec.AppProto = "http"
	case appproto.TLS:
		rec.AppProto = "tls"
	}
	rec.HTTP = h.http
	e.sink.Emit(rec)
}
