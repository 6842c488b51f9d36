package datapath

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// AppendBinary appends m as the punt device's egress program lays it in
// front of a held frame: the inverse of ParsePuntMeta, for code that plays
// the datapath's part (the punt engine's tests).
func (m PuntMeta) AppendBinary(b []byte) ([]byte, error) {
	raw := dpPuntMeta{Magic: uint32(dpPuntMagicPUNT_MAGIC), Slot: m.Slot, Ifindex: m.Ifindex, Flags: m.Flags,
		FlowId: m.FlowID, PacketId: m.PacketID, Dir: uint8(dpDirectionDIR_TO_GUEST)}
	if m.FromGuest {
		raw.Dir = uint8(dpDirectionDIR_FROM_GUEST)
	}
	k := m.Key
	raw.Key = dpConnKey{Proto: k.Proto, GuestPort: k.GuestPort, RemotePort: k.RemotePort}
	switch {
	case !k.GuestAddr.IsValid() && !k.RemoteAddr.IsValid():
	case k.GuestAddr.Is4() && k.RemoteAddr.Is4():
		raw.Key.Family = 4
	case k.GuestAddr.Is6() && k.RemoteAddr.Is6():
		raw.Key.Family = 6
	default:
		return b, fmt.Errorf("punt metadata: connection key mixes %s and %s", k.GuestAddr, k.RemoteAddr)
	}
	raw.Key.GuestAddr, raw.Key.RemoteAddr = addrWords(k.GuestAddr), addrWords(k.RemoteAddr)
	return binary.Append(b, binary.NativeEndian, &raw)
}

// addrWords is addrOf's inverse: an address as the C key's four words.
func addrWords(a netip.Addr) [4]uint32 {
	var w [4]uint32
	if !a.IsValid() {
		return w
	}
	b := a.As16()
	if a.Is4() {
		b = [16]byte{}
		v4 := a.As4()
		copy(b[:], v4[:])
	}
	for i := range w {
		w[i] = binary.NativeEndian.Uint32(b[i*4:])
	}
	return w
}
