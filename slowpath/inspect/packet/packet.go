package packet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// IP protocol numbers the engines distinguish.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// TCP flags.
const (
	FIN = 0x01
	SYN = 0x02
	RST = 0x04
	PSH = 0x08
	ACK = 0x10
)

// ErrNotIP is returned for frames that carry neither IPv4 nor IPv6 (ARP,
// LLDP, …); engines let them through untouched.
var ErrNotIP = errors.New("not an IP packet")

// Packet is a decoded view of a frame; its slices alias the frame.
type Packet struct {
	L3      []byte // from the IP header to the end of the IP packet
	IPv6    bool
	Src     netip.Addr
	Dst     netip.Addr
	Proto   uint8
	TTL     uint8
	L4      []byte // from the transport header on; nil for fragments
	SrcPort uint16
	DstPort uint16
	// TCP only.
	Seq, Ack uint32
	Flags    uint8
	Window   uint16
	// ICMP only.
	ICMPType, ICMPCode uint8
	Payload            []byte
	// Fragment: an IP fragment, first or not. Fragments are not
	// reassembled: Payload is the IP payload (in a first fragment the
	// transport header and part of its payload), ports are unknown, and
	// the bytes never enter a TCP stream.
	Fragment bool
}

// Decode parses data as an Ethernet frame (ethernet true) or a raw IP packet.
func Decode(data []byte, ethernet bool, p *Packet) error {
	*p = Packet{}
	if ethernet {
		if len(data) < 14 {
			return fmt.Errorf("ethernet header: %d bytes", len(data))
		}
		et := binary.BigEndian.Uint16(data[12:])
		data = data[14:]
		for et == 0x8100 || et == 0x88a8 { // VLAN and QinQ tags
			if len(data) < 4 {
				return errors.New("truncated VLAN tag")
			}
			et = binary.BigEndian.Uint16(data[2:])
			data = data[4:]
		}
		if et != 0x0800 && et != 0x86dd {
			return ErrNotIP
		}
	}
	if len(data) < 1 {
		return ErrNotIP
	}
	switch data[0] >> 4 {
	case 4:
		return p.decodeIPv4(data)
	case 6:
		return p.decodeIPv6(data)
	}
	return ErrNotIP
}

func (p *Packet) decodeIPv4(b []byte) error {
	if len(b) < 20 {
		return fmt.Errorf("IPv4 header: %d bytes", len(b))
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:]))
	if ihl < 20 || total < ihl || total > len(b) {
		return fmt.Errorf("IPv4 header: length %d, total %d, have %d", ihl, total, len(b))
	}
	p.L3 = b[:total]
	p.Src = netip.AddrFrom4([4]byte(b[12:16]))
	p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	p.Proto, p.TTL = b[9], b[8]
	// Any fragment, the first (MF set, offset 0) included, carries only
	// part of its transport segment: fragments are not reassembled.
	if frag := binary.BigEndian.Uint16(b[6:]); frag&0x2000 != 0 || frag&0x1fff != 0 {
		p.Fragment = true
		p.Payload = b[ihl:total]
		return nil
	}
	return p.decodeL4(b[ihl:total])
}

func (p *Packet) decodeIPv6(b []byte) error {
	if len(b) < 40 {
		return fmt.Errorf("IPv6 header: %d bytes", len(b))
	}
	plen := int(binary.BigEndian.Uint16(b[4:]))
	if 40+plen > len(b) {
		return fmt.Errorf("IPv6 payload length %d, have %d", plen, len(b)-40)
	}
	p.IPv6 = true
	p.L3 = b[:40+plen]
	p.Src = netip.AddrFrom16([16]byte(b[8:24]))
	p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
	p.TTL = b[7]
	next, rest := b[6], b[40:40+plen]
	// Walk the extension headers the engines may meet; others end the walk.
	for {
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if len(rest) < 8 {
				return errors.New("truncated IPv6 extension header")
			}
			n := (int(rest[1]) + 1) * 8
			if n > len(rest) {
				return errors.New("truncated IPv6 extension header")
			}
			next, rest = rest[0], rest[n:]
			continue
		case 44: // fragment
			if len(rest) < 8 {
				return errors.New("truncated IPv6 fragment header")
			}
			fo := binary.BigEndian.Uint16(rest[2:])
			next, rest = rest[0], rest[8:]
			if fo&^7 != 0 || fo&1 != 0 { // an offset, or more fragments (M)
				p.Proto, p.Fragment, p.Payload = next, true, rest
				return nil
			}
			continue // an atomic fragment: the whole packet
		}
		break
	}
	p.Proto = next
	return p.decodeL4(rest)
}

func (p *Packet) decodeL4(b []byte) error {
	p.L4 = b
	switch p.Proto {
	case ProtoTCP:
		if len(b) < 20 {
			return fmt.Errorf("TCP header: %d bytes", len(b))
		}
		off := int(b[12]>>4) * 4
		if off < 20 || off > len(b) {
			return fmt.Errorf("TCP data offset %d, have %d", off, len(b))
		}
		p.SrcPort, p.DstPort = binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:])
		p.Seq, p.Ack = binary.BigEndian.Uint32(b[4:]), binary.BigEndian.Uint32(b[8:])
		p.Flags, p.Window = b[13], binary.BigEndian.Uint16(b[14:])
		p.Payload = b[off:]
	case ProtoUDP:
		if len(b) < 8 {
			return fmt.Errorf("UDP header: %d bytes", len(b))
		}
		p.SrcPort, p.DstPort = binary.BigEndian.Uint16(b), binary.BigEndian.Uint16(b[2:])
		ulen := int(binary.BigEndian.Uint16(b[4:]))
		if ulen < 8 || ulen > len(b) {
			return fmt.Errorf("UDP length %d, have %d", ulen, len(b))
		}
		p.Payload = b[8:ulen]
	case ProtoICMP, ProtoICMPv6:
		if len(b) < 4 {
			return fmt.Errorf("ICMP header: %d bytes", len(b))
		}
		p.ICMPType, p.ICMPCode = b[0], b[1]
		if len(b) >= 8 {
			p.Payload = b[8:]
		}
	default:
		p.Payload = b
	}
	return nil
}

// ProtoName is the protocol as EVE names it.
func (p *Packet) ProtoName() string {
	switch p.Proto {
	case ProtoTCP:
		return "TCP"
	case ProtoUDP:
		return "UDP"
	case ProtoICMP:
		return "ICMP"
	case ProtoICMPv6:
		return "IPv6-ICMP"
	}
	return fmt.Sprintf("%d", p.Proto)
}

// HasPorts says whether SrcPort and DstPort mean anything.
func (p *Packet) HasPorts() bool {
	return !p.Fragment && (p.Proto == ProtoTCP || p.Proto == ProtoUDP)
}
