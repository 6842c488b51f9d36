package inspect

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/slowpath/engine"
	"github.com/palisade/palisade/slowpath/eve"
	"github.com/palisade/palisade/slowpath/inspect/flow"
	"github.com/palisade/palisade/slowpath/inspect/packet"
)

// Mode is how verdicts are applied.
type Mode uint8

const (
	// IDS inspects a copy (as Suricata reading a capture): drop and
	// reject rules only alert, with action "allowed".
	IDS Mode = iota
	// IPS applies verdicts as inline: blocked flows' later packets are
	// dropped uninspected.
	IPS
)

// ParseMode reads "ids" or "ips".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "ids":
		return IDS, nil
	case "ips":
		return IPS, nil
	}
	return 0, fmt.Errorf("mode %q is not ids or ips", s)
}

// Summary counts what a run did.
type Summary struct {
	Packets     uint64 // read from the capture
	Inspected   uint64 // given to the engines
	Alerts      uint64
	Dropped     uint64 // given a drop or reject verdict, or dropped as part of a blocked flow
	FlowDropped uint64 // of Dropped: later packets of blocked flows, not inspected
	Offloaded   uint64 // later packets of offloaded flows, not inspected
}

// CorruptError says where a capture stops being readable.
type CorruptError struct {
	Path   string
	Offset int64
	Packet uint64 // the number the unreadable packet would have had
	Err    error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("capture %s: truncated or corrupt at byte offset %d (packet %d): %v", e.Path, e.Offset, e.Packet, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Stamp is the sink to give the engines offline: it sets each record's
// pcap_cnt to the number of the packet being inspected, counts the
// records, and passes them on.
type Stamp struct {
	sink  eve.Sink
	n     uint64
	count uint64
}

// NewStamp stamps records for sink.
func NewStamp(sink eve.Sink) *Stamp { return &Stamp{sink: sink} }

// Emit implements eve.Sink. Run inspects one packet at a time, so the
// fields need no lock.
func (s *Stamp) Emit(r *eve.Record) {
	r.PcapCnt = s.n
	s.count++
	s.sink.Emit(r)
}

// packetSource is what both pcapgo readers offer.
type packetSource interface {
	ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
}

// Run inspects the capture at path with e, whose engines emit to stamp. It
// stops at the first unreadable record with a *CorruptError, after every
// packet before it was inspected.
func Run(path string, e engine.Engine, stamp *Stamp, mode Mode) (Summary, error) {
	var sum Summary
	f, err := os.Open(path)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	magic, err := br.Peek(4)
	if err != nil {
		return sum, &CorruptError{Path: path, Offset: 0, Packet: 1, Err: fmt.Errorf("no capture header: %w", err)}
	}
	ng := binary.LittleEndian.Uint32(magic) == 0x0a0d0d0a
	var src packetSource
	var link engine.LinkType
	if ng {
		r, err := pcapgo.NewNgReader(br, pcapgo.NgReaderOptions{})
		if err != nil {
			return sum, &CorruptError{Path: path, Offset: 0, Packet: 1, Err: err}
		}
		if link, err = linkType(r.LinkType()); err != nil {
			return sum, fmt.Errorf("capture %s: %w", path, err)
		}
		src = r
	} else {
		r, err := pcapgo.NewReader(br)
		if err != nil {
			return sum, &CorruptError{Path: path, Offset: 0, Packet: 1, Err: err}
		}
		if link, err = linkType(r.LinkType()); err != nil {
			return sum, fmt.Errorf("capture %s: %w", path, err)
		}
		src = r
	}
	decided := newDecisions()
	offset := int64(24) // classic pcap: header, then 16 bytes and the data per record
	for {
		data, ci, err := src.ReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			ce := &CorruptError{Path: path, Offset: offset, Packet: sum.Packets + 1, Err: err}
			if ng {
				ce.Offset = ngBlockOffset(path, sum.Packets)
			}
			sum.Alerts = stamp.count
			return sum, ce
		}
		offset += 16 + int64(len(data))
		sum.Packets++
		var pk packet.Packet
		keyed := packet.Decode(data, link == engine.LinkEthernet, &pk) == nil
		if keyed {
			switch d, _ := decided.get(&pk, ci.Timestamp); d {
			case channel.FlowBlock:
				sum.Dropped++
				sum.FlowDropped++
				continue
			case channel.FlowOffload:
				sum.Offloaded++
				continue
			}
		}
		stamp.n = sum.Packets
		sum.Inspected++
		v := e.Inspect(&engine.Packet{PacketID: sum.Packets, Tap: mode == IDS, Time: ci.Timestamp, Link: link, Data: data,
			Direction: channel.FromGuest})
		if v.Action == channel.ActionDrop || v.Action == channel.ActionReject {
			sum.Dropped++
		}
		if keyed && (v.Flow == channel.FlowOffload || v.Flow == channel.FlowBlock && mode == IPS) {
			decided.set(&pk, 0, v.Flow, ci.Timestamp)
		}
	}
	sum.Alerts = stamp.count
	return sum, nil
}

// decisions are the flows offloaded or blocked, whose later packets the
// fast path would not punt. They are forgotten as the engines forget a
// flow: when a bare SYN opens a new connection on the 5-tuple, and after
// the flow table's idle timeouts (in packet time).
type decisions struct {
	m         map[flow.Key]*decision
	lastSweep time.Time
}

type decision struct {
	flow   channel.FlowDecision
	last   time.Time
	closed bool // a reset, or FINs both ways
	fin    [2]bool
}

func newDecisions() *decisions { return &decisions{m: map[flow.Key]*decision{}} }

func (d *decisions) len() int { return len(d.m) }

// set records the decision on pk's flow.
func (d *decisions) set(pk *packet.Packet, guest uint32, v channel.FlowDecision, now time.Time) {
	d.m[flow.KeyOf(guest, pk)] = &decision{flow: v, last: now}
}

// get returns the decision on pk's flow (0 if none) and notes pk's time
// and closing flags. A bare SYN clears it: a new connection.
func (d *decisions) get(pk *packet.Packet, now time.Time) (channel.FlowDecision, bool) {
	d.sweep(now)
	k := flow.KeyOf(0, pk)
	e := d.m[k]
	if e == nil {
		return 0, false
	}
	if e.expired(now) {
		delete(d.m, k)
		return 0, false
	}
	if pk.Proto == packet.ProtoTCP && !pk.Fragment {
		switch {
		case pk.Flags&(packet.SYN|packet.ACK|packet.RST) == packet.SYN:
			delete(d.m, k)
			return 0, false
		case pk.Flags&packet.RST != 0:
			e.closed = true
		case pk.Flags&packet.FIN != 0:
			side := 0
			if netip.AddrPortFrom(pk.Src, pk.SrcPort) != k.Lo {
				side = 1
			}
			e.fin[side] = true
			e.closed = e.fin[0] && e.fin[1]
		}
	}
	e.last = now
	return e.flow, true
}

// sweep forgets decisions idle past the flow table's timeouts.
func (d *decisions) sweep(now time.Time) {
	if now.Sub(d.lastSweep) < 10*time.Second {
		return
	}
	d.lastSweep = now
	for k, e := range d.m {
		if e.expired(now) {
			delete(d.m, k)
		}
	}
}

func (e *decision) expired(now time.Time) bool {
	limit := flow.DefaultIdleTimeout
	if e.closed {
		limit = flow.DefaultClosedTimeout
	}
	return now.Sub(e.last) > limit
}

func linkType(t layers.LinkType) (engine.LinkType, error) {
	switch t {
	case layers.LinkTypeEthernet:
		return engine.LinkEthernet, nil
	case layers.LinkTypeRaw, 12, 14, layers.LinkTypeIPv4, layers.LinkTypeIPv6:
		// 101 is LINKTYPE_RAW; 12 and 14 are DLT_RAW as BSDs number it.
		return engine.LinkRaw, nil
	}
	return 0, fmt.Errorf("link type %d is not Ethernet or raw IP", t)
}

// ngBlockOffset finds the byte offset of the pcapng block holding packet
// number n+1 (n packets were read), or of the first block that is cut
// short or malformed, by walking the block headers again.
func ngBlockOffset(path string, n uint64) int64 {
	f, err := os.Open(path)
	if err != nil {
		return -1
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var off int64
	var order binary.ByteOrder = binary.LittleEndian
	var packets uint64
	hdr := make([]byte, 12)
	for {
		if _, err := io.ReadFull(r, hdr[:8]); err != nil {
			return off
		}
		typ := order.Uint32(hdr[:4])
		if typ == 0x0a0d0d0a { // section header: learn its byte order
			if _, err := io.ReadFull(r, hdr[8:12]); err != nil {
				return off
			}
			if binary.LittleEndian.Uint32(hdr[8:12]) == 0x1a2b3c4d {
				order = binary.LittleEndian
			} else {
				order = binary.BigEndian
			}
		}
		length := int64(order.Uint32(hdr[4:8]))
		if length < 12 || length%4 != 0 {
			return off
		}
		isPacket := typ == 6 || typ == 3 || typ == 2 // enhanced, simple, obsolete packet blocks
		if isPacket && packets == n {
			return off
		}
		read := int64(8)
		if typ == 0x0a0d0d0a {
			read = 12
		}
		if _, err := io.CopyN(io.Discard, r, length-read); err != nil {
			return off
		}
		if isPacket {
			packets++
		}
		off += length
	}
}

// ErrNoEngines is returned when neither rules nor feeds were given.
var ErrNoEngines = errors.New("nothing to inspect with: give rules or web reputation feeds")
