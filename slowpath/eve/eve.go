package eve

import (
	"net/netip"
	"sync"
	"time"
)

// TimeFormat is Suricata's EVE timestamp layout: microseconds and a numeric
// zone without a colon, e.g. 2026-11-21T05:36:00.123456+0000.
const TimeFormat = "2006-01-02T15:04:05.000000-0700"

// FormatTime renders t as Suricata does, in UTC.
func FormatTime(t time.Time) string { return t.UTC().Format(TimeFormat) }

// Record is one EVE event. Only the fields alerts use are modelled; field
// names and nesting follow Suricata's eve.json so existing tooling reads it.
type Record struct {
	Timestamp string `json:"timestamp"`
	FlowID    uint64 `json:"flow_id"`
	// PcapCnt is the 1-based number of the packet in the capture; offline only.
	PcapCnt   uint64 `json:"pcap_cnt,omitempty"`
	EventType string `json:"event_type"`
	SrcIP     string `json:"src_ip"`
	SrcPort   uint16 `json:"src_port,omitempty"`
	DestIP    string `json:"dest_ip"`
	DestPort  uint16 `json:"dest_port,omitempty"`
	Proto     string `json:"proto"`
	AppProto  string `json:"app_proto,omitempty"`
	Alert     *Alert `json:"alert,omitempty"`
	HTTP      *HTTP  `json:"http,omitempty"`
	TLS       *TLS   `json:"tls,omitempty"`

	// Guest and FastFlowID are those of the packet that raised the record
	// (engine.Packet's Guest and FlowID), for the live service: it sends
	// the alert to that guest's events and uses FastFlowID as flow_id.
	// They are not part of the EVE line.
	Guest      uint32 `json:"-"`
	FastFlowID uint64 `json:"-"`
}

// Alert actions as EVE spells them.
const (
	ActionAllowed = "allowed"
	ActionBlocked = "blocked"
)

// Alert is the record's alert object.
type Alert struct {
	Action      string `json:"action"`
	GID         uint32 `json:"gid"`
	SignatureID uint32 `json:"signature_id"`
	Rev         uint32 `json:"rev"`
	Signature   string `json:"signature"`
	Category    string `json:"category"`
	Severity    int    `json:"severity"`
}

// HTTP is the record's http object: the request that raised the alert.
type HTTP struct {
	Hostname  string `json:"hostname,omitempty"`
	URL       string `json:"url,omitempty"`
	UserAgent string `json:"http_user_agent,omitempty"`
	Method    string `json:"http_method,omitempty"`
	Protocol  string `json:"protocol,omitempty"`
}

// TLS is the record's tls object.
type TLS struct {
	SNI string `json:"sni,omitempty"`
}

// Sink receives records. Engines call Emit from whichever goroutine inspects
// the packet, so implementations must be safe for concurrent use. Emit must
// not keep r past the call unless it copies it.
type Sink interface {
	Emit(r *Record)
}

// Discard drops every record.
var Discard Sink = discard{}

type discard struct{}

func (discard) Emit(*Record) {}

// Memory keeps every record it is given, in order; tests and callers that
// batch records read them with Records.
type Memory struct {
	mu      sync.Mutex
	records []Record
}

func (m *Memory) Emit(r *Record) {
	m.mu.Lock()
	m.records = append(m.records, *r)
	m.mu.Unlock()
}

// Records returns a copy of what was emitted so far.
func (m *Memory) Records() []Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Record(nil), m.records...)
}

// Fanout emits every record to each of its sinks in turn.
type Fanout []Sink

func (f Fanout) Emit(r *Record) {
	for _, s := range f {
		s.Emit(r)
	}
}

// NewAlert starts an alert record for a packet; the caller fills Alert and
// the application-layer objects.
func NewAlert(ts time.Time, flowID uint64, src netip.Addr, sport uint16, dst netip.Addr, dport uint16, ports bool, proto string) *Record {
	r := &Record{Timestamp: FormatTime(ts), FlowID: flowID, EventType: "alert",
		SrcIP: src.Unmap().String(), DestIP: dst.Unmap().String(), Proto: proto}
	if ports {
		r.SrcPort, r.DestPort = sport, dport
	}
	return r
}
