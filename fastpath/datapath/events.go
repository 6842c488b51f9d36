package datapath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// EventKind says why the datapath reported a packet.
type EventKind string

const (
	EventDeny      EventKind = "deny"       // a rule or the default denied it
	EventLog       EventKind = "log"        // a log-only rule matched
	EventInvalid   EventKind = "invalid"    // it fit no connection state, or had impossible flags
	EventTableFull EventKind = "table_full" // its connection was recorded with the guest at its max_* (see docs/fastpath.md)
	EventDrop      EventKind = "drop"       // dropped for another reason (fragment, non-IP, ARP)
)

var eventKinds = map[dpEventKind]EventKind{
	dpEventKindEV_DENY: EventDeny, dpEventKindEV_LOG: EventLog, dpEventKindEV_INVALID: EventInvalid,
	dpEventKindEV_TABLE_FULL: EventTableFull, dpEventKindEV_DROP: EventDrop,
}

// Event is one packet the datapath reported.
type Event struct {
	Time      time.Duration // CLOCK_MONOTONIC
	Slot      uint32
	Kind      EventKind
	Reason    string // drop reason, if dropped
	RuleID    uint32
	FromGuest bool
	Proto     uint8
	Src, Dst  netip.Addr
	Sport     uint16
	Dport     uint16 // the ICMP type for ICMP
	TCPFlags  uint8
	Tap       bool // tap mode: reported, not dropped
	State     string
}

// EventReader reads the datapath's ring buffer.
type EventReader struct{ rd *ringbuf.Reader }

// Events opens a reader on the ring buffer; Close it to stop a blocked Read.
func (d *Datapath) Events() (*EventReader, error) {
	rd, err := ringbuf.NewReader(d.objs.Events)
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	return &EventReader{rd: rd}, nil
}

// ErrClosed is returned by Read after Close.
var ErrClosed = os.ErrClosed

// SetDeadline makes Read give up at t (os.ErrDeadlineExceeded).
func (r *EventReader) SetDeadline(t time.Time) { r.rd.SetDeadline(t) }

// Read blocks for the next event.
func (r *EventReader) Read() (Event, error) {
	rec, err := r.rd.Read()
	if err != nil {
		if errors.Is(err, ringbuf.ErrClosed) {
			return Event{}, ErrClosed
		}
		return Event{}, err
	}
	var e dpEvent
	if err := binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &e); err != nil {
		return Event{}, fmt.Errorf("events: malformed record of %d bytes: %w", len(rec.RawSample), err)
	}
	ev := Event{Time: time.Duration(e.TsNs), Slot: e.Slot, Kind: eventKinds[dpEventKind(e.Kind)], RuleID: e.RuleId,
		FromGuest: dpDirection(e.Dir) == dpDirectionDIR_FROM_GUEST, Proto: e.Proto, Src: addrOf(e.Family, e.Src), Dst: addrOf(e.Family, e.Dst),
		Sport: e.Sport, Dport: e.Dport, TCPFlags: e.TcpFlags, Tap: e.Tap != 0}
	if r := dpDropReason(e.Reason); r != dpDropReasonDR_NONE && r < dpDropReasonDR_COUNT {
		ev.Reason = dropReasonNames[r]
	}
	if e.Proto == unix.IPPROTO_TCP {
		ev.State = tcpStateNames[dpTcpState(e.State)]
	}
	if ev.Kind == "" {
		ev.Kind = EventKind(fmt.Sprintf("kind%d", e.Kind))
	}
	return ev, nil
}

// Close stops the reader.
func (r *EventReader) Close() error { return r.rd.Close() }
