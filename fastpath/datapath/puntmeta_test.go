package datapath

import (
	"net/netip"
	"testing"
)

// TestPuntMetaRoundTrip: what AppendBinary lays down, ParsePuntMeta reads
// back, for both families and both directions.
func TestPuntMetaRoundTrip(t *testing.T) {
	for _, m := range []PuntMeta{
		{Slot: 3, Ifindex: 17, FromGuest: true, Flags: MetaTap, FlowID: 1 << 40, PacketID: 99,
			Key: ConnKey{Proto: 6, GuestAddr: netip.MustParseAddr("198.51.100.10"), GuestPort: 80,
				RemoteAddr: netip.MustParseAddr("203.0.113.5"), RemotePort: 40000}},
		{Slot: 511, Ifindex: 2, FlowID: 7, PacketID: 1<<63 + 1,
			Key: ConnKey{Proto: 17, GuestAddr: netip.MustParseAddr("2001:db8::a"), GuestPort: 53,
				RemoteAddr: netip.MustParseAddr("2001:db8::1"), RemotePort: 5353}},
	} {
		b, err := m.AppendBinary(nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != PuntMetaSize {
			t.Fatalf("%d bytes of metadata, want %d", len(b), PuntMetaSize)
		}
		got, err := ParsePuntMeta(append(b, make([]byte, 14)...))
		if err != nil {
			t.Fatal(err)
		}
		if got != m {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, m)
		}
	}
	mixed := PuntMeta{Key: ConnKey{GuestAddr: netip.MustParseAddr("198.51.100.10"), RemoteAddr: netip.MustParseAddr("2001:db8::1")}}
	if _, err := mixed.AppendBinary(nil); err == nil {
		t.Error("a key mixing IPv4 and IPv6 was encoded")
	}
}
