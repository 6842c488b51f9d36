package packet_test

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/palisade/palisade/slowpath/inspect/craft"
	"github.com/palisade/palisade/slowpath/inspect/packet"
)

func TestDecodeLayers(t *testing.T) {
	for _, eth := range []bool{false, true} {
		e := &craft.Endpoints{Ethernet: eth}
		c := e.NewTCP("[2001:db8::1]:1234", "[2001:db8::2]:80")
		f := c.Send(true, []byte("hello"))
		var p packet.Packet
		if err := packet.Decode(f.Data, eth, &p); err != nil {
			t.Fatal(err)
		}
		if !p.IPv6 || p.Proto != packet.ProtoTCP || p.SrcPort != 1234 || p.DstPort != 80 || string(p.Payload) != "hello" ||
			p.Flags != packet.PSH|packet.ACK || p.Src != netip.MustParseAddr("2001:db8::1") || p.ProtoName() != "TCP" {
			t.Fatalf("eth=%v: %+v", eth, p)
		}
		if err := p.VerifyChecksums(); err != nil {
			t.Fatal(err)
		}
		f.Data[len(f.Data)-1] ^= 1
		if err := packet.Decode(f.Data, eth, &p); err != nil {
			t.Fatal(err)
		}
		if err := p.VerifyChecksums(); !errors.Is(err, packet.ErrChecksum) {
			t.Fatalf("corrupt payload: %v", err)
		}
	}
	e := &craft.Endpoints{}
	ic := e.ICMPEcho(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), []byte("ping"))
	var p packet.Packet
	if err := packet.Decode(ic.Data, false, &p); err != nil || p.ICMPType != 8 || string(p.Payload) != "ping" || p.HasPorts() || p.VerifyChecksums() != nil {
		t.Fatalf("icmp %+v %v", p, err)
	}
}

func TestDecodeErrors(t *testing.T) {
	var p packet.Packet
	if err := packet.Decode([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x08, 0x06, 0}, true, &p); !errors.Is(err, packet.ErrNotIP) {
		t.Fatalf("ARP: %v", err)
	}
	e := &craft.Endpoints{}
	f := e.UDP(netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:2"), []byte("data"))
	for n := 0; n < len(f.Data); n++ {
		if err := packet.Decode(f.Data[:n], false, &p); err == nil {
			t.Fatalf("truncated to %d bytes: decoded", n)
		}
	}
}

// An IPv4 first fragment (MF set, offset 0) carries only part of its
// transport segment: it is a fragment like the later ones.
func TestFirstFragment(t *testing.T) {
	e := &craft.Endpoints{}
	c := e.NewTCP("10.0.0.1:1234", "10.0.0.2:80")
	f := c.Send(true, []byte("GET /partial"))
	f.Data[6] |= 0x20 // MF
	var p packet.Packet
	if err := packet.Decode(f.Data, false, &p); err != nil {
		t.Fatal(err)
	}
	if !p.Fragment || p.HasPorts() || p.Proto != packet.ProtoTCP || len(p.Payload) != 20+len("GET /partial") {
		t.Fatalf("first fragment decoded as %+v", p)
	}
	// IPv6: the fragment header's M flag with offset 0.
	e6 := &craft.Endpoints{}
	u := e6.UDP(netip.MustParseAddrPort("[2001:db8::1]:5"), netip.MustParseAddrPort("[2001:db8::2]:53"), []byte("data"))
	b := u.Data
	frag := append(append([]byte{}, b[:40]...), 17, 0, 0, 1, 0, 0, 0, 7) // next UDP, offset 0, M
	frag = append(frag, b[40:]...)
	frag[6] = 44
	frag[5] += 8
	if err := packet.Decode(frag, false, &p); err != nil {
		t.Fatal(err)
	}
	if !p.Fragment || p.HasPorts() || p.Proto != packet.ProtoUDP {
		t.Fatalf("IPv6 first fragment decoded as %+v", p)
	}
}
