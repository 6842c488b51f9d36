package bench

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Endpoint is one side of a flow.
type Endpoint struct {
	MAC  net.HardwareAddr
	Addr netip.Addr
	Port uint16
}

// TCPFlags of a segment.
type TCPFlags struct{ SYN, ACK, PSH bool }

func serialize(ls ...gopacket.SerializableLayer) ([]byte, error) {
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		return nil, fmt.Errorf("build frame: %w", err)
	}
	return append([]byte(nil), buf.Bytes()...), nil
}

func ipv4(src, dst Endpoint, proto layers.IPProtocol) (*layers.Ethernet, *layers.IPv4) {
	return &layers.Ethernet{SrcMAC: src.MAC, DstMAC: dst.MAC, EthernetType: layers.EthernetTypeIPv4},
		&layers.IPv4{Version: 4, TTL: 64, Id: 1, Protocol: proto, SrcIP: src.Addr.AsSlice(), DstIP: dst.Addr.AsSlice()}
}

// TCPFrame is an Ethernet/IPv4/TCP frame with payload bytes of data.
func TCPFrame(src, dst Endpoint, f TCPFlags, seq, ack uint32, payload int) ([]byte, error) {
	eth, ip := ipv4(src, dst, layers.IPProtocolTCP)
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port), DstPort: layers.TCPPort(dst.Port), SYN: f.SYN, ACK: f.ACK, PSH: f.PSH,
		Seq: seq, Ack: ack, Window: 65535}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		return nil, err
	}
	return serialize(eth, ip, tcp, gopacket.Payload(make([]byte, payload)))
}

// UDPFrame is an Ethernet/IPv4/UDP frame of frameLen bytes (without FCS)
// with UDP checksum 0 ("none", valid for IPv4), so a generator may rewrite
// ports without touching any checksum.
func UDPFrame(src, dst Endpoint, frameLen int) ([]byte, error) {
	const headers = 14 + 20 + 8
	if frameLen < headers {
		return nil, fmt.Errorf("frame of %d bytes cannot hold the %d bytes of headers", frameLen, headers)
	}
	eth, ip := ipv4(src, dst, layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(src.Port), DstPort: layers.UDPPort(dst.Port)}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		return nil, err
	}
	b, err := serialize(eth, ip, udp, gopacket.Payload(make([]byte, frameLen-headers)))
	if err != nil {
		return nil, err
	}
	b[headers-2], b[headers-1] = 0, 0 // no UDP checksum
	return b, nil
}
