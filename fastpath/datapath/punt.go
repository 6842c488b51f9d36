package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// The punt device: a veth pair in fastpathd's namespace. Held packets leave
// the datapath into PuntOut and are read by fastpathd on PuntIn (where the
// kernel then drops them); fastpathd writes allowed packets back into PuntIn,
// they arrive on PuntOut and the reinject program sends them home.
const (
	PuntOut = "palpunt0"
	PuntIn  = "palpunt1"
	// PuntMTU lets a GSO super-packet and its metadata through.
	PuntMTU = 65535
)

// PuntMetaSize is the metadata's size, between Ethernet header and payload.
const PuntMetaSize = 72

// Metadata flags (datapath.h).
const (
	MetaTap    = 1 << 0
	MetaInject = 1 << 1
)

// PuntMeta is what travels with a held packet.
type PuntMeta struct {
	Slot      uint32
	Ifindex   uint32
	FromGuest bool
	Flags     uint8
	FlowID    uint64
	PacketID  uint64
	Key       ConnKey
}

// ConnKey is a connection's key, oriented by the guest.
type ConnKey struct {
	Proto      uint8
	GuestAddr  netip.Addr
	GuestPort  uint16
	RemoteAddr netip.Addr
	RemotePort uint16
}

const puntMagic = 0x50554e54

// ParsePuntMeta reads the metadata of a frame from the punt device.
func ParsePuntMeta(frame []byte) (PuntMeta, error) {
	if len(frame) < 14+PuntMetaSize {
		return PuntMeta{}, fmt.Errorf("punted frame of %d bytes is shorter than its metadata", len(frame))
	}
	var raw dpPuntMeta
	if _, err := binary.Decode(frame[14:14+PuntMetaSize], binary.NativeEndian, &raw); err != nil {
		return PuntMeta{}, err
	}
	if raw.Magic != puntMagic {
		return PuntMeta{}, fmt.Errorf("punted frame without metadata (magic %#x)", raw.Magic)
	}
	k := raw.Key
	return PuntMeta{Slot: raw.Slot, Ifindex: raw.Ifindex, FromGuest: raw.Dir == 0, Flags: raw.Flags,
		FlowID: raw.FlowId, PacketID: raw.PacketId,
		Key: ConnKey{Proto: k.Proto, GuestAddr: addrOf(k.Family, k.GuestAddr), GuestPort: k.GuestPort,
			RemoteAddr: addrOf(k.Family, k.RemoteAddr), RemotePort: k.RemotePort}}, nil
}

// AppendInjectMeta writes metadata for a packet fastpathd makes (a reset)
// to go out of vNIC ifindex in the given direction, after ethernet header eth.
func AppendInjectMeta(b []byte, ifindex uint32, toGuest bool, slot uint32) []byte {
	m := dpPuntMeta{Magic: puntMagic, Slot: slot, Ifindex: ifindex, Flags: MetaInject}
	if toGuest {
		m.Dir = 1
	}
	out, _ := binary.Append(b, binary.NativeEndian, &m)
	return out
}

func (d *Datapath) puntLinkPath(name string) string {
	return filepath.Join(d.cfg.PinDir, "links", "punt-"+name)
}

// EnsurePuntDevice creates the punt device in the namespace nl works in
// (nil: the caller's), attaches its programs with pinned links, and tells
// the datapath where held packets go. Idempotent.
func (d *Datapath) EnsurePuntDevice(nl *netlink.Handle) (inIfindex int, err error) {
	if nl == nil {
		if nl, err = netlink.NewHandle(); err != nil {
			return 0, err
		}
		defer nl.Close()
	}
	out, err := nl.LinkByName(PuntOut)
	if err != nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.MTU = PuntOut, PuntMTU
		if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: PuntIn}); err != nil {
			return 0, fmt.Errorf("punt device: %w", err)
		}
		if out, err = nl.LinkByName(PuntOut); err != nil {
			return 0, fmt.Errorf("punt device: %w", err)
		}
	}
	in, err := nl.LinkByName(PuntIn)
	if err != nil {
		return 0, fmt.Errorf("punt device: %w", err)
	}
	for _, l := range []netlink.Link{out, in} {
		// Only held packets may cross the punt device: no IPv6
		// autoconfiguration chatter. (The caller is in the device's
		// namespace; /proc/sys/net is per namespace.)
		_ = os.WriteFile(filepath.Join("/proc/sys/net/ipv6/conf", l.Attrs().Name, "disable_ipv6"), []byte("1"), 0o644)
		if err := nl.LinkSetMTU(l, PuntMTU); err != nil {
			return 0, fmt.Errorf("punt device %s: mtu: %w", l.Attrs().Name, err)
		}
		if err := nl.LinkSetUp(l); err != nil {
			return 0, fmt.Errorf("punt device %s: up: %w", l.Attrs().Name, err)
		}
	}
	for _, p := range []struct {
		name string
		dev  netlink.Link
		prog *ebpf.Program
	}{{"reinject", out, d.objs.Reinject}, {"sink", in, d.objs.PuntSink}} {
		path := d.puntLinkPath(p.name)
		if l, err := link.LoadPinnedLink(path, nil); err == nil {
			err = l.Update(p.prog)
			l.Close()
			if err == nil {
				continue
			}
			_ = os.Remove(path)
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: p.dev.Attrs().Index, Program: p.prog, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return 0, fmt.Errorf("punt device %s: attach %s: %w", p.dev.Attrs().Name, p.name, err)
		}
		err = l.Pin(path)
		l.Close()
		if err != nil {
			return 0, fmt.Errorf("punt device: pin %s: %w", p.name, err)
		}
	}
	d.mu.Lock()
	d.settings.PuntIfindex = uint32(out.Attrs().Index)
	err = d.putSettings()
	d.mu.Unlock()
	return in.Attrs().Index, err
}

// RemovePuntDevice detaches the punt programs and deletes the device.
func (d *Datapath) RemovePuntDevice(nl *netlink.Handle) error {
	var errs []error
	for _, name := range []string{"reinject", "sink"} {
		if l, err := link.LoadPinnedLink(d.puntLinkPath(name), nil); err == nil {
			errs = append(errs, l.Unpin(), l.Close())
		}
	}
	if nl == nil {
		var err error
		if nl, err = netlink.NewHandle(); err != nil {
			return err
		}
		defer nl.Close()
	}
	if l, err := nl.LinkByName(PuntOut); err == nil {
		errs = append(errs, nl.LinkDel(l))
	}
	return errors.Join(errs...)
}

func (d *Datapath) putSettings() error {
	if err := d.objs.SettingsMap.Put(uint32(0), d.settings); err != nil {
		return fmt.Errorf("datapath settings: %w", err)
	}
	return nil
}

// SetSlowPath says whether a slow path that inspects is bound. While it is
// not, inspected flows follow their guests' fail-open or fail-closed policy
// in the kernel.
func (d *Datapath) SetSlowPath(bound bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.settings.SlowpathBound = 0
	if bound {
		d.settings.SlowpathBound = 1
	}
	return d.putSettings()
}

// Heartbeat tells the datapath fastpathd is alive for another ttl. A
// fastpathd that dies stops beating; then held packets are no longer
// punted into a socket nobody reads.
func (d *Datapath) Heartbeat(ttl time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.settings.AliveUntilNs = uint64(Monotonic() + ttl)
	return d.putSettings()
}

// Flow verdicts the slow path can set.
const (
	DecideOffload = 2 // FV_OFFLOAD
	DecideBlock   = 3 // FV_BLOCK
)

// SetFlowDecision asks the datapath to offload or block a flow. Offload
// takes effect once every held packet of the flow has come back or been
// dropped (dropped counts those fastpathd dropped).
func (d *Datapath) SetFlowDecision(slot uint32, flowID uint64, verdict uint8, dropped uint32) error {
	k := dpDecisionKey{Slot: slot, FlowId: flowID}
	if err := d.objs.FlowDecisions.Put(k, dpFlowDecision{Verdict: verdict, Dropped: dropped}); err != nil {
		return fmt.Errorf("flow %d decision: %w", flowID, err)
	}
	return nil
}
