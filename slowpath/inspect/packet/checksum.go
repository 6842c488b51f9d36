package packet

import (
	"encoding/binary"
	"errors"
)

// ErrChecksum reports a header or transport checksum that does not verify.
var ErrChecksum = errors.New("bad checksum")

// VerifyChecksums checks the IPv4 header checksum and the TCP, UDP or ICMP
// checksum. Fragments are checked only at the IP layer.
func (p *Packet) VerifyChecksums() error {
	if !p.IPv6 {
		ihl := int(p.L3[0]&0x0f) * 4
		if fold(sum(p.L3[:ihl], 0)) != 0xffff {
			return errors.Join(ErrChecksum, errors.New("IPv4 header"))
		}
	}
	if p.Fragment || p.L4 == nil {
		return nil
	}
	var s uint32
	switch p.Proto {
	case ProtoTCP, ProtoUDP, ProtoICMPv6:
		if p.Proto == ProtoUDP && !p.IPv6 && binary.BigEndian.Uint16(p.L4[6:]) == 0 {
			return nil // no checksum sent
		}
		s = p.pseudoHeader(len(p.L4))
	case ProtoICMP:
	default:
		return nil
	}
	if fold(sum(p.L4, s)) != 0xffff {
		return errors.Join(ErrChecksum, errors.New(p.ProtoName()))
	}
	return nil
}

func (p *Packet) pseudoHeader(l4len int) uint32 {
	var s uint32
	s = sum(p.Src.AsSlice(), s)
	s = sum(p.Dst.AsSlice(), s)
	return s + uint32(p.Proto) + uint32(l4len)
}

// TransportChecksum computes the checksum to store in a TCP, UDP or ICMPv6
// header whose checksum field is zero, for a packet from src to dst.
func TransportChecksum(src, dst []byte, proto uint8, l4 []byte) uint16 {
	s := sum(src, 0)
	s = sum(dst, s)
	s += uint32(proto) + uint32(len(l4))
	return ^fold(sum(l4, s))
}

// HeaderChecksum computes an IPv4 header checksum (field zeroed).
func HeaderChecksum(h []byte) uint16 { return ^fold(sum(h, 0)) }

func sum(b []byte, s uint32) uint32 {
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}
