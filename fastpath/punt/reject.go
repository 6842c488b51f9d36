package punt

import (
	"fmt"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// rejectPacket builds what a reject verdict answers the sender of frame (an
// Ethernet frame): a TCP reset for TCP, an ICMP "administratively
// prohibited" unreachable for anything else. It returns the L3 packet.
func rejectPacket(frame []byte) ([]byte, error) {
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	buf := gopacket.NewSerializeBuffer()
	var ip4 *layers.IPv4
	var ip6 *layers.IPv6
	var net gopacket.NetworkLayer
	if l, ok := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		ip4 = &layers.IPv4{Version: 4, TTL: 64, SrcIP: l.DstIP, DstIP: l.SrcIP}
		net = ip4
	} else if l, ok := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6); ok {
		ip6 = &layers.IPv6{Version: 6, HopLimit: 64, SrcIP: l.DstIP, DstIP: l.SrcIP}
		net = ip6
	} else {
		return nil, fmt.Errorf("reject: not an IP packet")
	}
	if tcp, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
		rst := &layers.TCP{SrcPort: tcp.DstPort, DstPort: tcp.SrcPort, RST: true}
		// RFC 793: answer an ACK with its acknowledgement number as
		// sequence; otherwise acknowledge what the segment occupied.
		if tcp.ACK {
			rst.Seq = tcp.Ack
		} else {
			rst.ACK = true
			rst.Ack = tcp.Seq + uint32(len(tcp.Payload))
			if tcp.SYN {
				rst.Ack++
			}
			if tcp.FIN {
				rst.Ack++
			}
		}
		if err := rst.SetNetworkLayerForChecksum(net); err != nil {
			return nil, fmt.Errorf("reject: %w", err)
		}
		if ip4 != nil {
			ip4.Protocol = layers.IPProtocolTCP
			return serialize(buf, opts, ip4, rst)
		}
		ip6.NextHeader = layers.IPProtocolTCP
		return serialize(buf, opts, ip6, rst)
	}
	// ICMP errors quote the offending packet (as much as fits in a
	// minimum-MTU answer).
	quoted := net.LayerContents()
	quoted = append(append([]byte(nil), quoted...), net.LayerPayload()...)
	if ip4 != nil {
		if len(quoted) > 548 {
			quoted = quoted[:548]
		}
		ip4.Protocol = layers.IPProtocolICMPv4
		return serialize(buf, opts, ip4, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 13)}, gopacket.Payload(quoted))
	}
	if len(quoted) > 1232 {
		quoted = quoted[:1232]
	}
	ip6.NextHeader = layers.IPProtocolICMPv6
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(1, 1)}
	if err := icmp.SetNetworkLayerForChecksum(ip6); err != nil {
		return nil, fmt.Errorf("reject: %w", err)
	}
	return serialize(buf, opts, ip6, icmp, gopacket.Payload(append([]byte{0, 0, 0, 0}, quoted...)))
}

func serialize(buf gopacket.SerializeBuffer, opts gopacket.SerializeOptions, ls ...gopacket.SerializableLayer) ([]byte, error) {
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		return nil, fmt.Errorf("reject: %w", err)
	}
	return append([]byte(nil), buf.Bytes()...), nil
}
