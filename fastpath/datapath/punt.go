package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// The punt device: a veth pair in fastpathd's namespace. Held packets leave
// the datapath into PuntOut (whose egress program prepends their metadata)
// and are read by fastpathd on PuntIn (where the kernel then drops them);
// fastpathd writes allowed packets back into PuntIn, exactly as they were
// taken, with a mark saying where they go (BackMark); they arrive on PuntOut
// and the reinject program sends them home.
const (
	PuntOut = "palpunt0"
	PuntIn  = "palpunt1"
	// PuntMTU lets a GSO super-packet and its metadata through.
	PuntMTU = 65535
)

// PuntMetaSize is the metadata's size, in front of a held packet's frame.
const PuntMetaSize = int(unsafe.Sizeof(dpPuntMeta{}))

// MetaTap flags a tap copy in PuntMeta.Flags (META_TAP).
const MetaTap = uint8(dpPuntFlagsMETA_TAP)

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

// ParsePuntMeta reads the metadata in front of a frame from the punt device.
func ParsePuntMeta(frame []byte) (PuntMeta, error) {
	if len(frame) < 14+PuntMetaSize {
		return PuntMeta{}, fmt.Errorf("punted frame of %d bytes is shorter than its metadata", len(frame))
	}
	var raw dpPuntMeta
	if _, err := binary.Decode(frame[:PuntMetaSize], binary.NativeEndian, &raw); err != nil {
		return PuntMeta{}, err
	}
	if dpPuntMagic(raw.Magic) != dpPuntMagicPUNT_MAGIC {
		return PuntMeta{}, fmt.Errorf("punted frame without metadata (magic %#x)", raw.Magic)
	}
	k := raw.Key
	return PuntMeta{Slot: raw.Slot, Ifindex: raw.Ifindex, FromGuest: dpDirection(raw.Dir) == dpDirectionDIR_FROM_GUEST, Flags: raw.Flags,
		FlowID: raw.FlowId, PacketID: raw.PacketId,
		Key: ConnKey{Proto: k.Proto, GuestAddr: addrOf(k.Family, k.GuestAddr), GuestPort: k.GuestPort,
			RemoteAddr: addrOf(k.Family, k.RemoteAddr), RemotePort: k.RemotePort}}, nil
}

// BackMark is the mark a packet written back into the punt device carries:
// the vNIC it goes to, whether it goes to the guest (out of the vNIC) or
// from it (into the host), and whether fastpathd made it (a reset) rather
// than it being a held packet.
func BackMark(ifindex uint32, toGuest, inject bool) uint32 {
	m := dpBackMark(ifindex) & dpBackMarkBACK_IFINDEX
	if toGuest {
		m |= dpBackMarkBACK_TO_GUEST
	}
	if inject {
		m |= dpBackMarkBACK_INJECT
	}
	return uint32(m)
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
		name   string
		dev    netlink.Link
		prog   *ebpf.Program
		attach ebpf.AttachType
	}{{"out", out, d.objs.PuntOut, ebpf.AttachTCXEgress}, {"reinject", out, d.objs.Reinject, ebpf.AttachTCXIngress},
		{"sink", in, d.objs.PuntSink, ebpf.AttachTCXIngress}} {
		path := d.puntLinkPath(p.name)
		if l, err := link.LoadPinnedLink(path, nil); err == nil {
			err = l.Update(p.prog)
			l.Close()
			if err == nil {
				continue
			}
			_ = os.Remove(path)
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: p.dev.Attrs().Index, Program: p.prog, Attach: p.attach})
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
	for _, name := range []string{"out", "reinject", "sink"} {
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
	DecideOffload = uint8(dpFlowVerdictFV_OFFLOAD)
	DecideBlock   = uint8(dpFlowVerdictFV_BLOCK)
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

// SetCongested says fastpathd holds as much of guest slot's traffic as it
// may (or no longer): while it does, the datapath sheds the guest's inspected
// packets by the guest's fail policy itself.
func (d *Datapath) SetCongested(slot uint32, congested bool) error {
	v := uint32(0)
	if congested {
		v = 1
	}
	if err := d.objs.PuntCongested.Put(slot, v); err != nil {
		return fmt.Errorf("guest slot %d congestion: %w", slot, err)
	}
	return nil
}
