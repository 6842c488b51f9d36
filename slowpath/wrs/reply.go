package wrs

import (
	"fmt"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/palisade/palisade/slowpath/inspect/packet"
)

// blockPage is the HTTP response sent in place of a blocked page.
func blockPage(host string, m Match) []byte {
	body := fmt.Sprintf("<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head><body>\n"+
		"<h1>Access blocked</h1>\n<p>Palisade web reputation blocked %s (category %s, score %d).</p>\n</body></html>\n",
		htmlEscape(host), htmlEscape(m.Category), m.Score)
	return fmt.Appendf(nil, "HTTP/1.1 403 Forbidden\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: %d\r\n"+
		"Cache-Control: no-store\r\nConnection: close\r\n\r\n%s", len(body), body)
}

func htmlEscape(s string) string {
	var b []byte
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '<':
			b = append(b, "&lt;"...)
		case '>':
			b = append(b, "&gt;"...)
		case '&':
			b = append(b, "&amp;"...)
		case '"':
			b = append(b, "&quot;"...)
		default:
			b = append(b, c)
		}
	}
	return string(b)
}

// replyPacket builds the server's answer to the client's packet req: an IP
// packet from the server carrying payload with FIN, sequenced to continue
// what the client acknowledged and acknowledging all the client sent.
func replyPacket(req *packet.Packet, payload []byte) ([]byte, error) {
	var ip gopacket.SerializableLayer
	var nl gopacket.NetworkLayer
	if req.IPv6 {
		v6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: req.Dst.AsSlice(), DstIP: req.Src.AsSlice()}
		ip, nl = v6, v6
	} else {
		v4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment,
			SrcIP: req.Dst.AsSlice(), DstIP: req.Src.AsSlice()}
		ip, nl = v4, v4
	}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(req.DstPort), DstPort: layers.TCPPort(req.SrcPort),
		Seq: req.Ack, Ack: req.Seq + uint32(len(req.Payload)) + uint32(req.Flags&packet.FIN),
		ACK: true, PSH: true, FIN: true, Window: 65535}
	if err := tcp.SetNetworkLayerForChecksum(nl); err != nil {
		return nil, err
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, tcp, gopacket.Payload(payload))
	if err != nil {
		return nil, fmt.Errorf("building the block page: %w", err)
	}
	return append([]byte(nil), buf.Bytes()...), nil
}
