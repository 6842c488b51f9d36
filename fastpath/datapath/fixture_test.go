package datapath

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/palisade/palisade/fastpath/policy"
	"github.com/palisade/palisade/hypervisor/lab"
)

// fixture is a loaded datapath with one guest on a vNIC of a lab namespace.
// Packets go through BPF_PROG_TEST_RUN, attributed to that vNIC: nothing is
// sent anywhere, and state, counters and events change as for real packets.
type fixture struct {
	t       *testing.T
	ns      *lab.Namespace
	vnics   []int
	d       *Datapath
	slot    uint32
	ifindex int
	pol     *policy.Policy
	comp    *policy.Compiled
	ip      *InstalledPolicy
	nextID  uint32
	pickup  bool
	inspect bool // the guest's allowed flows go to the slow path
}

const (
	guest4  = "198.51.100.10"
	remote4 = "203.0.113.5"
	guest6  = "2001:db8:10::10"
	remote6 = "2001:db8:20::5"
)

func newFixture(t *testing.T, p *policy.Policy) *fixture {
	t.Helper()
	f := &fixture{t: t, d: openForTest(t), slot: 3, nextID: 1}
	l := lab.ForTest(t)
	ns, err := l.Namespace("dp")
	if err != nil {
		t.Fatal(err)
	}
	f.ns = ns
	for _, name := range []string{"vnic1", "vnic2"} {
		a, _, err := l.Link(lab.End{NS: ns, Name: name}, lab.End{NS: ns, Name: name + "p"})
		if err != nil {
			t.Fatal(err)
		}
		f.vnics = append(f.vnics, a.Index)
	}
	f.ifindex = f.vnics[0]
	if err := f.d.CreateTables(f.slot, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if err := f.d.ResetCounters(f.slot); err != nil {
		t.Fatal(err)
	}
	f.setPolicy(p)
	return f
}

func (f *fixture) setPolicy(p *policy.Policy) {
	f.t.Helper()
	if err := p.Normalize(); err != nil {
		f.t.Fatal(err)
	}
	c, err := policy.Compile(p)
	if err != nil {
		f.t.Fatal(err)
	}
	ip, err := f.d.InstallPolicy(f.nextID, c)
	if err != nil {
		f.t.Fatal(err)
	}
	f.nextID++
	var until = Monotonic() - 1
	if f.pickup {
		until = Monotonic() + time.Duration(p.PickupGrace)
	}
	if err := f.d.SetVNIC(f.ifindex, GuestConfig{Slot: f.slot, Policy: ip, Rules: p, PickupUntil: until, Inspect: f.inspect}); err != nil {
		f.t.Fatal(err)
	}
	if f.ip != nil {
		if err := f.d.Barrier(); err != nil {
			f.t.Fatal(err)
		}
		if err := f.d.RemovePolicy(f.ip, f.comp); err != nil {
			f.t.Fatal(err)
		}
	}
	f.pol, f.comp, f.ip = p, c, ip
}

// out sends a frame from the guest; in sends one to it.
func (f *fixture) out(frame []byte) Verdict { return f.run(Ingress, frame) }
func (f *fixture) in(frame []byte) Verdict  { return f.run(Egress, frame) }

func (f *fixture) run(h Hook, frame []byte) Verdict {
	f.t.Helper()
	var v Verdict
	err := f.ns.Do(func() (err error) {
		v, err = f.d.Run(h, f.ifindex, frame)
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return v
}

func (f *fixture) counters() Counters {
	f.t.Helper()
	c, err := f.d.GuestCounters(f.slot)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func (f *fixture) conns() []Conn {
	f.t.Helper()
	var out []Conn
	if err := f.d.Conns(f.slot, func(c Conn) bool { out = append(out, c); return true }); err != nil {
		f.t.Fatal(err)
	}
	return out
}

func (f *fixture) conn(proto uint8, guestPort uint16) *Conn {
	for _, c := range f.conns() {
		if c.Proto == proto && c.GuestPort == guestPort {
			return &c
		}
	}
	return nil
}

// withTables calls fn with the guest's tables (TCP, other).
func (f *fixture) withTables(fn func(tcp, other *ebpf.Map)) {
	f.t.Helper()
	tcp, other, err := f.d.Tables(f.slot)
	if err != nil {
		f.t.Fatal(err)
	}
	defer tcp.Close()
	defer other.Close()
	fn(tcp, other)
}

// clearTables empties the guest's tables. (Replacing them would wait for an
// RCU grace period per table: map-of-maps updates synchronize.)
func (f *fixture) clearTables() {
	f.t.Helper()
	f.withTables(func(tcp, other *ebpf.Map) {
		for _, m := range []*ebpf.Map{tcp, other} {
			var keys [][]byte
			var k, v []byte
			it := m.Iterate()
			for it.Next(&k, &v) {
				keys = append(keys, append([]byte(nil), k...))
			}
			for _, k := range keys {
				if err := m.Delete(k); err != nil {
					f.t.Fatal(err)
				}
			}
		}
	})
}

// rawConn reads a TCP (proto 6) or other connection's kernel entry by guest
// port, with the fields Conn leaves out (punted, returned).
func (f *fixture) rawConn(proto uint8, guestPort uint16) (val dpConnVal, found bool) {
	f.t.Helper()
	f.withTables(func(tcp, other *ebpf.Map) {
		m := other
		if proto == 6 {
			m = tcp
		}
		var k dpConnKey
		var v dpConnVal
		it := m.Iterate()
		for it.Next(&k, &v) {
			if k.Proto == proto && k.GuestPort == guestPort {
				val, found = v, true
				return
			}
		}
	})
	return val, found
}

// slowPathReady makes the datapath believe a slow path is bound and
// fastpathd alive, with held packets going to the fixture's second vNIC.
// BPF_PROG_TEST_RUN only reports a redirect; nothing is sent.
func (f *fixture) slowPathReady() {
	f.t.Helper()
	f.d.mu.Lock()
	f.d.settings.PuntIfindex = uint32(f.vnics[1])
	err := f.d.putSettings()
	f.d.mu.Unlock()
	if err == nil {
		err = f.d.SetSlowPath(true)
	}
	if err == nil {
		err = f.d.Heartbeat(time.Hour)
	}
	if err != nil {
		f.t.Fatal(err)
	}
}

// Frame builders.

var (
	macGuest  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x10}
	macRemote = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x20}
)

type tcpFlags struct{ syn, ack, fin, rst, psh, urg bool }

var (
	SYN    = tcpFlags{syn: true}
	SYNACK = tcpFlags{syn: true, ack: true}
	ACK    = tcpFlags{ack: true}
	FINACK = tcpFlags{fin: true, ack: true}
	RST    = tcpFlags{rst: true}
	PSHACK = tcpFlags{psh: true, ack: true}
)

func ipLayers(src, dst string, proto layers.IPProtocol) (gopacket.SerializableLayer, gopacket.SerializableLayer, gopacket.NetworkLayer) {
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	if s.Is4() {
		eth := &layers.Ethernet{SrcMAC: macGuest, DstMAC: macRemote, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: s.AsSlice(), DstIP: d.AsSlice(), Id: 7}
		return eth, ip, ip
	}
	eth := &layers.Ethernet{SrcMAC: macGuest, DstMAC: macRemote, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: s.AsSlice(), DstIP: d.AsSlice()}
	return eth, ip, ip
}

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func tcpFrame(t testing.TB, src, dst string, sport, dport uint16, fl tcpFlags) []byte {
	eth, ip, nl := ipLayers(src, dst, layers.IPProtocolTCP)
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), SYN: fl.syn, ACK: fl.ack,
		FIN: fl.fin, RST: fl.rst, PSH: fl.psh, URG: fl.urg, Window: 1000, Seq: 1}
	_ = tcp.SetNetworkLayerForChecksum(nl)
	if fl.psh {
		return serialize(t, eth, ip, tcp, gopacket.Payload([]byte("x")))
	}
	return serialize(t, eth, ip, tcp)
}

func udpFrame(t testing.TB, src, dst string, sport, dport uint16) []byte {
	eth, ip, nl := ipLayers(src, dst, layers.IPProtocolUDP)
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	_ = udp.SetNetworkLayerForChecksum(nl)
	return serialize(t, eth, ip, udp, gopacket.Payload([]byte("hello")))
}

func icmpFrame(t testing.TB, src, dst string, typ, code uint8, id uint16, payload []byte) []byte {
	if netip.MustParseAddr(src).Is4() {
		eth, ip, _ := ipLayers(src, dst, layers.IPProtocolICMPv4)
		ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code), Id: id, Seq: 1}
		return serialize(t, eth, ip, ic, gopacket.Payload(payload))
	}
	eth, ip, nl := ipLayers(src, dst, layers.IPProtocolICMPv6)
	ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, code)}
	_ = ic.SetNetworkLayerForChecksum(nl)
	body := append([]byte{byte(id >> 8), byte(id), 0, 1}, payload...)
	return serialize(t, eth, ip, ic, gopacket.Payload(body))
}

func otherFrame(t testing.TB, src, dst string, proto uint8) []byte {
	eth, ip, _ := ipLayers(src, dst, layers.IPProtocol(proto))
	return serialize(t, eth, ip, gopacket.Payload([]byte("0123456789abcdef")))
}

// reported returns the events the datapath has reported that nobody has
// read yet. A test run completes the program before it returns, so they are
// all in the ring buffer already: a deadline that has passed reads them all
// without waiting for more.
func reported(t testing.TB, ev *EventReader) []Event {
	t.Helper()
	ev.SetDeadline(time.Now())
	var out []Event
	for {
		e, err := ev.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out
		}
		if err != nil {
			t.Fatalf("read events: %v", err)
		}
		out = append(out, e)
	}
}
