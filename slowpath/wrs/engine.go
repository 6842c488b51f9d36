package wrs

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/slowpath/engine"
	"github.com/palisade/palisade/slowpath/eve"
	"github.com/palisade/palisade/slowpath/inspect/appproto"
	"github.com/palisade/palisade/slowpath/inspect/flow"
	"github.com/palisade/palisade/slowpath/inspect/http1"
	"github.com/palisade/palisade/slowpath/inspect/packet"
	"github.com/palisade/palisade/slowpath/inspect/stream"
	"github.com/palisade/palisade/slowpath/inspect/tlshello"
)

// Signature ids of web reputation alerts (gid 1), in a range local rules
// do not use.
const (
	// Blocks and, in tap mode, the same detections (action "allowed").
	SIDHTTPBlocked = 9000001 // an HTTP request to a blocked host or URL
	SIDTLSBlocked  = 9000002 // a TLS ClientHello naming a blocked host
)

// Option configures an Engine.
type Option func(*Engine)

// WithSink sends alerts to s.
func WithSink(s eve.Sink) Option { return func(e *Engine) { e.sink = s } }

// WithChecksumValidation skips packets whose checksums do not verify.
func WithChecksumValidation(on bool) Option { return func(e *Engine) { e.verify = on } }

// WithLogger logs failures to build block pages.
func WithLogger(l logrus.FieldLogger) Option { return func(e *Engine) { e.log = l } }

// Stats are the engine's counters.
type Stats struct {
	Lookups uint64
	Blocked uint64
}

// Engine is the web reputation engine; it implements engine.Engine.
type Engine struct {
	feed     *Feed
	policies *Policies
	sink     eve.Sink
	verify   bool
	log      logrus.FieldLogger
	flows    *flow.Table[*flowState]
	lookups  atomic.Uint64
	blocked  atomic.Uint64
}

var _ engine.Engine = (*Engine)(nil)

// New returns an engine over a feed and policies (nil: the defaults).
func New(feed *Feed, policies *Policies, opts ...Option) *Engine {
	if policies == nil {
		policies = &Policies{}
	}
	e := &Engine{feed: feed, policies: policies, sink: eve.Discard, log: logrus.StandardLogger(), flows: flow.NewTable[*flowState]()}
	for _, o := range opts {
		o(e)
	}
	return e
}

func (e *Engine) Name() string { return "wrs" }

// Stats returns the counters so far.
func (e *Engine) Stats() Stats { return Stats{e.lookups.Load(), e.blocked.Load()} }

func (e *Engine) FlowEnd(guest uint32, flowID uint64) { e.flows.End(guest, flowID) }

type flowState struct {
	app      appproto.Proto
	requests http1.RequestParser
	verdict  engine.Verdict // final, once the flow is judged (blocked or offloaded)
	judged   bool
}

var keep = engine.Verdict{Action: channel.ActionAllow, Flow: channel.FlowKeepInspecting}

// The ClientHello and request heads are all this engine reads: a small
// depth bounds its memory per flow.
var limits = stream.Limits{Depth: 256 << 10}

func (e *Engine) Inspect(p *engine.Packet) engine.Verdict {
	var pk packet.Packet
	if packet.Decode(p.Data, p.Link == engine.LinkEthernet, &pk) != nil || pk.Proto != packet.ProtoTCP || pk.Fragment {
		// Web reputation judges TCP only; leave everything else alone.
		return engine.Verdict{Action: channel.ActionAllow, Flow: channel.FlowOffload}
	}
	if e.verify && pk.VerifyChecksums() != nil {
		return keep
	}
	f, side := e.flows.Get(p.Guest, p.FlowID, &pk, p.Time)
	st := f.State
	if st == nil {
		st = &flowState{}
		f.State = st
	}
	if st.judged {
		v := st.verdict
		v.Reply = nil // the page is sent once
		return v
	}
	added := f.Track(&pk, side, limits)
	if added == 0 || side != flow.ToServer {
		return keep
	}
	data := f.Stream(side).Data()
	if st.app == appproto.Unknown {
		st.app = appproto.Detect(data)
	}
	switch st.app {
	case appproto.HTTP:
		return e.http(p, &pk, f, st, data)
	case appproto.TLS:
		return e.tls(p, &pk, f, st, data)
	case appproto.Other:
		return e.judge(st, engine.Verdict{Action: channel.ActionAllow, Flow: channel.FlowOffload})
	}
	return keep
}

func (e *Engine) judge(st *flowState, v engine.Verdict) engine.Verdict {
	st.judged, st.verdict = true, v
	return v
}

func (e *Engine) http(p *engine.Packet, pk *packet.Packet, f *flow.Flow[*flowState], st *flowState, data []byte) engine.Verdict {
	var block *eve.HTTP
	var hit Match
	var host string
	err := st.requests.Parse(data, func(req *http1.Request) {
		if block != nil {
			return
		}
		h, path := requestTarget(req)
		e.lookups.Add(1)
		m, ok := e.feed.Lookup(h, path)
		if !ok || e.policies.For(p.Guest).Decide(m) == Pass {
			return
		}
		hit, host = m, http1.NormalizeHost(h)
		block = &eve.HTTP{Hostname: host, URL: string(req.URI), UserAgent: string(req.Header("User-Agent")),
			Method: string(req.Method), Protocol: string(req.Protocol)}
	})
	if block == nil {
		if err != nil || f.Stream(flow.ToServer).Full() {
			// Not HTTP any more, or too much of it: nothing left to judge.
			return e.judge(st, engine.Verdict{Action: channel.ActionAllow, Flow: channel.FlowOffload})
		}
		return keep
	}
	rec := e.alert(p, pk, f, SIDHTTPBlocked, fmt.Sprintf("Palisade WRS: HTTP request to %s", hit.Key), hit)
	rec.AppProto, rec.HTTP = "http", block
	if p.Tap { // detect only: the alert says "allowed"
		e.sink.Emit(rec)
		return keep
	}
	rec.Alert.Action = eve.ActionBlocked
	e.sink.Emit(rec)
	e.blocked.Add(1)
	v := engine.Verdict{Action: channel.ActionReject, Flow: channel.FlowBlock}
	reply, rerr := replyPacket(pk, blockPage(host, hit))
	if rerr != nil {
		// The reset the fast path sends by default still blocks.
		e.log.WithError(rerr).WithField("host", host).Warn("web reputation block page not built; resetting instead")
	}
	v = e.judge(st, v)
	v.Reply = reply
	return v
}

// requestTarget gives the host and path of a request, from an absolute URI
// (proxy form) or the Host header.
func requestTarget(req *http1.Request) (string, string) {
	uri := string(req.URI)
	for _, scheme := range []string{"http://", "https://"} {
		if len(uri) > len(scheme) && strings.EqualFold(uri[:len(scheme)], scheme) {
			rest := uri[len(scheme):]
			host, path, _ := strings.Cut(rest, "/")
			return host, "/" + path
		}
	}
	return string(req.Header("Host")), uri
}

func (e *Engine) tls(p *engine.Packet, pk *packet.Packet, f *flow.Flow[*flowState], st *flowState, data []byte) engine.Verdict {
	hello, err := tlshello.ParseClientHello(data)
	switch {
	case errors.Is(err, tlshello.ErrNeedMore):
		return keep
	case err != nil || hello.ServerName == "":
		return e.judge(st, engine.Verdict{Action: channel.ActionAllow, Flow: channel.FlowOffload})
	}
	e.lookups.Add(1)
	m, ok := e.feed.Lookup(hello.ServerName, "")
	if !ok || e.policies.For(p.Guest).Decide(m) == Pass {
		return e.judge(st, engine.Verdict{Action: channel.ActionAllow, Flow: channel.FlowOffload})
	}
	rec := e.alert(p, pk, f, SIDTLSBlocked, fmt.Sprintf("Palisade WRS: TLS connection to %s", m.Key), m)
	rec.AppProto, rec.TLS = "tls", &eve.TLS{SNI: hello.ServerName}
	if p.Tap {
		e.sink.Emit(rec)
		return e.judge(st, engine.Verdict{Action: channel.ActionAllow, Flow: channel.FlowOffload})
	}
	rec.Alert.Action = eve.ActionBlocked
	e.sink.Emit(rec)
	e.blocked.Add(1)
	return e.judge(st, engine.Verdict{Action: channel.ActionReject, Flow: channel.FlowBlock})
}

// alert starts the EVE record of a block.
func (e *Engine) alert(p *engine.Packet, pk *packet.Packet, f *flow.Flow[*flowState], sid uint32, sig string, m Match) *eve.Record {
	ts := p.Time
	if ts.IsZero() {
		ts = time.Now()
	}
	rec := eve.NewAlert(ts, f.ID, pk.Src, pk.SrcPort, pk.Dst, pk.DstPort, true, pk.ProtoName())
	rec.Guest, rec.FastFlowID = p.Guest, p.FlowID
	severity := 2
	if m.Score >= 90 {
		severity = 1
	}
	rec.Alert = &eve.Alert{Action: eve.ActionAllowed, GID: 1, SignatureID: sid, Rev: 1, Signature: sig,
		Category: "Web Reputation: " + m.Category, Severity: severity}
	return rec
}
