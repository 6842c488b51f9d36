package datapath

import (
	"net/netip"
	"testing"

	"github.com/palisade/palisade/fastpath/policy"
)

// ipv4Fragment is a UDP datagram's first fragment (UDP header to port 4789,
// more fragments) or a later one (offset 1480, the last), from remote4 to
// guest4.
func ipv4Fragment(t *testing.T, sport, id uint16, first bool) []byte {
	dport := uint16(4789)
	if !first {
		dport = 0
	}
	fr := udpFrame(t, remote4, guest4, sport, dport)
	ip := fr[14:]
	ip[4], ip[5] = byte(id>>8), byte(id)
	fo := uint16(0x2000) // first: offset 0, more fragments
	if !first {
		fo = 1480 / 8
	}
	ip[6], ip[7] = byte(fo>>8), byte(fo)
	ip[10], ip[11] = 0, 0 // checksums are not the datapath's business
	return fr
}

// ipv6Frame builds Ethernet and IPv6 headers (next header nh) around body.
func ipv6Frame(src, dst string, nh uint8, body []byte) []byte {
	fr := append(append([]byte{}, macRemote...), macGuest...)
	fr = append(fr, 0x86, 0xdd, 0x60, 0, 0, 0, byte(len(body)>>8), byte(len(body)), nh, 64)
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	fr = append(append(fr, s[:]...), d[:]...)
	return append(fr, body...)
}

// fragHeader is an IPv6 fragment header.
func fragHeader(nh uint8, offset uint16, more bool, id uint32) []byte {
	fo := offset &^ 7
	if more {
		fo |= 1
	}
	return []byte{nh, 0, byte(fo >> 8), byte(fo), byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}
}

func (f *fixture) fragKeys() []dpFragKey {
	f.t.Helper()
	var out []dpFragKey
	var k dpFragKey
	var v dpFragVal
	it := f.d.objs.Frags.Iterate()
	for it.Next(&k, &v) {
		out = append(out, k)
	}
	if err := it.Err(); err != nil {
		f.t.Fatal(err)
	}
	return out
}

// TestFragmentRecordsNeedAKey: a first fragment passed or dropped before its
// fragment key is known (neighbour discovery, malformed, fragments: drop)
// records nothing, rather than a verdict under an all-zero key.
func TestFragmentRecordsNeedAKey(t *testing.T) {
	f := newFixture(t, &policy.Policy{DefaultAction: policy.Deny, InvalidPackets: policy.InvalidPass})
	// A neighbour solicitation in a first fragment: passes as ND.
	ns := append(fragHeader(58, 0, true, 9), 135, 0, 0, 0, 0, 0, 0, 0)
	ns = append(ns, make([]byte, 16)...)
	if v := f.in(ipv6Frame(remote6, guest6, 44, ns)); v != Next {
		t.Fatalf("fragmented neighbour solicitation: %s", v)
	}
	// A first fragment cut short of its TCP header: malformed.
	trunc := truncatedTCP(t, remote4, guest4)
	trunc[20] = 0x20 // more fragments
	if v := f.in(trunc); v != Drop {
		t.Fatalf("malformed first fragment: %s", v)
	}
	f.setPolicy(&policy.Policy{DefaultAction: policy.Allow, Fragments: policy.FragmentsDrop})
	if v := f.in(ipv4Fragment(t, 1000, 300, true)); v != Drop {
		t.Fatalf("fragments: drop: %s", v)
	}
	for _, k := range f.fragKeys() {
		if k.Family == 0 {
			t.Fatalf("fragment verdict recorded under an empty key: %+v", k)
		}
	}
}

// TestIPv6LaterFragmentsFollowTheirFirst: a later fragment's headers end at
// its fragment header; what follows is payload, not more headers. Its key
// names the fragment header's next header, as its first fragment's does,
// even when the first fragment has more extension headers after it.
func TestIPv6LaterFragmentsFollowTheirFirst(t *testing.T) {
	f := newFixture(t, &policy.Policy{DefaultAction: policy.Deny, Rules: []policy.Rule{
		{ID: 1, Action: policy.Allow, Protocol: "udp", DestinationPorts: []string{"4789"}},
	}})
	for _, c := range []struct {
		name string
		nh   uint8  // after the fragment header
		ext  []byte // then, in the first fragment only
	}{
		{"udp", 17, nil},
		{"destination options, then udp", 60, []byte{17, 0, 1, 4, 0, 0, 0, 0}},
	} {
		id := uint32(len(c.ext) + 1)
		udp := []byte{0x03, 0xe8, 0x12, 0xb5, 0, 16, 0, 0, 'p', 'a', 'y', 'l', 'o', 'a', 'd', '!'}
		first := append(append(fragHeader(c.nh, 0, true, id), c.ext...), udp...)
		if v := f.in(ipv6Frame(remote6, guest6, 44, first)); v != Next {
			t.Fatalf("%s: allowed first fragment: %s", c.name, v)
		}
		// The later fragment's payload starts with bytes that read as
		// a destination-options header announcing TCP.
		later := append(fragHeader(c.nh, 24, false, id), 6, 0, 1, 4, 0, 0, 0, 0, 'm', 'o', 'r', 'e')
		if v := f.in(ipv6Frame(remote6, guest6, 44, later)); v != Next {
			t.Fatalf("%s: later fragment of an allowed first: %s", c.name, v)
		}
		// A later fragment too short to hold another header is not
		// malformed: nothing after its fragment header is parsed.
		short := append(fragHeader(c.nh, 40, false, id), 'x')
		if v := f.in(ipv6Frame(remote6, guest6, 44, short)); v != Next {
			t.Fatalf("%s: short later fragment: %s", c.name, v)
		}
	}
	if d := f.counters().Drops; d["fragment"] != 0 || d["malformed"] != 0 {
		t.Fatalf("drops %+v", d)
	}
}
