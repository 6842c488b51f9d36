package craft

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/palisade/palisade/slowpath/inspect/packet"
)

// Frame is one packet with its capture time.
type Frame struct {
	Time     time.Time
	Data     []byte
	Ethernet bool // Data is an Ethernet frame, else an IP packet
}

// Decoded is the frame decoded as the engines see it. Frames built here
// always decode; a failure is a bug in this package.
func (f Frame) Decoded() *packet.Packet {
	var p packet.Packet
	if err := packet.Decode(f.Data, f.Ethernet, &p); err != nil {
		panic(fmt.Sprintf("craft: a crafted frame does not decode: %v", err))
	}
	return &p
}

// Clock hands out packet times, a millisecond apart.
type Clock struct {
	Now  time.Time
	Step time.Duration
}

func (c *Clock) tick() time.Time {
	if c.Step == 0 {
		c.Step = time.Millisecond
	}
	t := c.Now
	c.Now = c.Now.Add(c.Step)
	return t
}

// Epoch is the fixed start of generated captures, so they are reproducible.
var Epoch = time.Date(2026, 11, 21, 5, 36, 0, 0, time.UTC)

// Endpoints say how to frame packets.
type Endpoints struct {
	Ethernet bool // Ethernet frames; raw IP packets otherwise
	Clock    *Clock
}

var (
	clientMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	serverMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 2}
)

func (e *Endpoints) clock() *Clock {
	if e.Clock == nil {
		e.Clock = &Clock{Now: Epoch}
	}
	return e.Clock
}

// serialize frames the layers, computing lengths and checksums.
func (e *Endpoints) serialize(src, dst netip.Addr, l4 gopacket.SerializableLayer, network gopacket.NetworkLayer, payload []byte, fromClient bool) Frame {
	var ls []gopacket.SerializableLayer
	if e.Ethernet {
		eth := &layers.Ethernet{SrcMAC: clientMAC, DstMAC: serverMAC, EthernetType: layers.EthernetTypeIPv4}
		if !fromClient {
			eth.SrcMAC, eth.DstMAC = serverMAC, clientMAC
		}
		if src.Is6() {
			eth.EthernetType = layers.EthernetTypeIPv6
		}
		ls = append(ls, eth)
	}
	ls = append(ls, network.(gopacket.SerializableLayer))
	if l4 != nil {
		ls = append(ls, l4)
	}
	ls = append(ls, gopacket.Payload(payload))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		panic(err) // the layers are built here; a failure is a bug
	}
	return Frame{Time: e.clock().tick(), Data: append([]byte(nil), buf.Bytes()...), Ethernet: e.Ethernet}
}

// IP returns the network layer for src → dst carrying proto.
func IP(src, dst netip.Addr, proto layers.IPProtocol) gopacket.NetworkLayer {
	if src.Is4() {
		return &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), Flags: layers.IPv4DontFragment}
	}
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
}

// UDP builds one UDP datagram.
func (e *Endpoints) UDP(src, dst netip.AddrPort, payload []byte) Frame {
	ip := IP(src.Addr(), dst.Addr(), layers.IPProtocolUDP)
	u := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
	u.SetNetworkLayerForChecksum(ip)
	return e.serialize(src.Addr(), dst.Addr(), u, ip, payload, true)
}

// ICMPEcho builds an IPv4 echo request.
func (e *Endpoints) ICMPEcho(src, dst netip.Addr, payload []byte) Frame {
	ip := IP(src, dst, layers.IPProtocolICMPv4)
	ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1}
	return e.serialize(src, dst, ic, ip, payload, true)
}

// TCP is a TCP connection being crafted, with both sides' next sequence
// numbers.
type TCP struct {
	e              *Endpoints
	Client, Server netip.AddrPort
	CSeq, SSeq     uint32 // next sequence number each side sends
}

// NewTCP starts a connection; call Handshake for its first packets.
func (e *Endpoints) NewTCP(client, server string) *TCP {
	return &TCP{e: e, Client: netip.MustParseAddrPort(client), Server: netip.MustParseAddrPort(server), CSeq: 1000, SSeq: 50000}
}

// Segment builds one segment with explicit fields (flags are packet.SYN,
// packet.ACK, …); it changes no state.
func (t *TCP) Segment(fromClient bool, seq, ack uint32, flags uint8, payload []byte) Frame {
	src, dst := t.Client, t.Server
	if !fromClient {
		src, dst = dst, src
	}
	ip := IP(src.Addr(), dst.Addr(), layers.IPProtocolTCP)
	tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), Seq: seq, Ack: ack, Window: 65535,
		FIN: flags&packet.FIN != 0, SYN: flags&packet.SYN != 0, RST: flags&packet.RST != 0, PSH: flags&packet.PSH != 0, ACK: flags&packet.ACK != 0}
	tcp.SetNetworkLayerForChecksum(ip)
	return t.e.serialize(src.Addr(), dst.Addr(), tcp, ip, payload, fromClient)
}

// Handshake returns SYN, SYN/ACK and ACK.
func (t *TCP) Handshake() []Frame {
	f := []Frame{
		t.Segment(true, t.CSeq, 0, packet.SYN, nil),
		t.Segment(false, t.SSeq, t.CSeq+1, packet.SYN|packet.ACK, nil),
		t.Segment(true, t.CSeq+1, t.SSeq+1, packet.ACK, nil),
	}
	t.CSeq++
	t.SSeq++
	return f
}

// Send returns one data segment from the client (fromClient) or the server
// and advances that side's sequence number.
func (t *TCP) Send(fromClient bool, payload []byte) Frame {
	if fromClient {
		f := t.Segment(true, t.CSeq, t.SSeq, packet.PSH|packet.ACK, payload)
		t.CSeq += uint32(len(payload))
		return f
	}
	f := t.Segment(false, t.SSeq, t.CSeq, packet.PSH|packet.ACK, payload)
	t.SSeq += uint32(len(payload))
	return f
}

// SendChunks splits payload into segments of at most n bytes.
func (t *TCP) SendChunks(fromClient bool, payload []byte, n int) []Frame {
	var fs []Frame
	for len(payload) > 0 {
		k := min(n, len(payload))
		fs = append(fs, t.Send(fromClient, payload[:k]))
		payload = payload[k:]
	}
	return fs
}

// Close returns FIN/ACK from the client, the server's FIN/ACK, and the last ACK.
func (t *TCP) Close() []Frame {
	f := []Frame{
		t.Segment(true, t.CSeq, t.SSeq, packet.FIN|packet.ACK, nil),
		t.Segment(false, t.SSeq, t.CSeq+1, packet.FIN|packet.ACK, nil),
		t.Segment(true, t.CSeq+1, t.SSeq+1, packet.ACK, nil),
	}
	t.CSeq++
	t.SSeq++
	return f
}

// Seq flattens frames and slices of frames into one sequence.
func Seq(parts ...any) []Frame {
	var out []Frame
	for _, p := range parts {
		switch v := p.(type) {
		case Frame:
			out = append(out, v)
		case []Frame:
			out = append(out, v...)
		default:
			panic(fmt.Sprintf("craft.Seq: %T is not a Frame or []Frame", p))
		}
	}
	return out
}
