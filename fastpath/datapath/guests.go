package datapath

import (
	"errors"
	"fmt"
	"sync"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/palisade/palisade/fastpath/policy"
)

// lruSlack is added to every connection table: the kernel's LRU keeps up to
// 128 free entries per CPU on local lists, and a CPU whose list is empty
// evicts rather than borrowing another CPU's, so without slack a table can
// start evicting before it holds its nominal capacity. The kernel keeps a
// list for every possible CPU, not only those this process may run on
// (runtime.NumCPU follows the affinity mask).
var lruSlack = sync.OnceValue(func() uint32 { return uint32(128 * numCPU()) })

// TableCapacity is the entry count of a table holding n connections.
func TableCapacity(n uint32) uint32 { return n + lruSlack() }

// Sizes of the map entries the Go side creates or probes, from the generated
// mirrors of the C structs: one connection-table entry (key, value), a
// classification-trie value, a protected vNIC's configuration.
const (
	ConnKeySize   = uint32(unsafe.Sizeof(dpConnKey{}))
	ConnValueSize = uint32(unsafe.Sizeof(dpConnVal{}))
	DimValueSize  = uint32(unsafe.Sizeof(dpDimVal{}))
	VNICValueSize = uint32(unsafe.Sizeof(dpGuestCfg{}))
)

// CreateTables gives guest slot its own TCP and other-protocol connection
// tables. A flood in one guest can only evict that guest's entries.
func (d *Datapath) CreateTables(slot, maxTCP, maxOther uint32) error {
	for _, t := range []struct {
		outer *ebpf.Map
		name  string
		n     uint32
	}{{d.objs.ConnTcp, "tcp", maxTCP}, {d.objs.ConnOther, "other", maxOther}} {
		m, err := ebpf.NewMap(&ebpf.MapSpec{
			Name: fmt.Sprintf("conn_%s_%d", t.name, slot), Type: ebpf.LRUHash,
			KeySize: ConnKeySize, ValueSize: ConnValueSize, MaxEntries: TableCapacity(t.n),
		})
		if err != nil {
			return fmt.Errorf("guest slot %d: %s table of %d: %w", slot, t.name, t.n, err)
		}
		err = t.outer.Put(slot, m)
		m.Close()
		if err != nil {
			return fmt.Errorf("guest slot %d: install %s table: %w", slot, t.name, err)
		}
	}
	for i := uint32(0); i < 2; i++ {
		if err := d.objs.ConnLive.Put(slot*2+i, uint64(0)); err != nil {
			return fmt.Errorf("guest slot %d: reset counts: %w", slot, err)
		}
	}
	return nil
}

// Tables returns handles to a guest's connection tables; the caller closes them.
func (d *Datapath) Tables(slot uint32) (tcp, other *ebpf.Map, err error) {
	if err := d.objs.ConnTcp.Lookup(slot, &tcp); err != nil {
		return nil, nil, fmt.Errorf("guest slot %d: tcp table: %w", slot, err)
	}
	if err := d.objs.ConnOther.Lookup(slot, &other); err != nil {
		tcp.Close()
		return nil, nil, fmt.Errorf("guest slot %d: other table: %w", slot, err)
	}
	return tcp, other, nil
}

// DeleteTables drops a guest's connection tables.
func (d *Datapath) DeleteTables(slot uint32) error {
	var errs []error
	for _, outer := range []*ebpf.Map{d.objs.ConnTcp, d.objs.ConnOther} {
		if err := outer.Delete(slot); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("guest slot %d: %w", slot, err))
		}
	}
	return errors.Join(errs...)
}

// GuestConfig is a protected vNIC's configuration in the kernel.
type GuestConfig struct {
	Slot        uint32
	Policy      *InstalledPolicy
	Rules       *policy.Policy // normalized
	PickupUntil time.Duration  // CLOCK_MONOTONIC time until which mid-stream flows are adopted
	Inspect     bool
}

// Monotonic is the clock the datapath's timestamps use (bpf_ktime_get_ns).
func Monotonic() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// The policy's words for actions, modes and policies, as the datapath
// codes them (TestPolicyCodesFollowTheC checks each against the C's name).
var (
	actionCodes = map[policy.Action]dpRuleAction{
		policy.Allow: dpRuleActionACT_ALLOW, policy.Deny: dpRuleActionACT_DENY,
		policy.ForceAllow: dpRuleActionACT_FORCE_ALLOW, policy.Bypass: dpRuleActionACT_BYPASS,
		policy.LogOnly: dpRuleActionACT_LOG_ONLY,
	}
	modeCodes    = map[policy.Mode]dpGuestMode{policy.Inline: dpGuestModeMODE_INLINE, policy.Tap: dpGuestModeMODE_TAP}
	invalidCodes = map[policy.InvalidPolicy]dpInvalidPolicy{
		policy.InvalidDrop: dpInvalidPolicyINVALID_DROP, policy.InvalidPass: dpInvalidPolicyINVALID_PASS,
		policy.InvalidLog: dpInvalidPolicyINVALID_LOG,
	}
	fragCodes = map[policy.FragmentPolicy]dpFragPolicy{
		policy.FragmentsFollow: dpFragPolicyFRAG_FOLLOW, policy.FragmentsDrop: dpFragPolicyFRAG_DROP,
	}
)

// kernel is g as the datapath reads it; g.Rules is normalized, so every
// word it holds has a code.
func (g GuestConfig) kernel() dpGuestCfg {
	p := g.Rules
	c := dpGuestCfg{
		Slot: g.Slot, PolicyId: g.Policy.ID, RuleBase: g.Policy.RuleBase, RuleCount: g.Policy.RuleCount,
		Mode:          uint8(modeCodes[p.Mode]),
		DefaultAction: uint8(actionCodes[p.DefaultAction]),
		InvalidPolicy: uint8(invalidCodes[p.InvalidPackets]),
		FragPolicy:    uint8(fragCodes[p.Fragments]),
		PickupUntilNs: uint64(g.PickupUntil),
		MaxTcp:        p.MaxTCP, MaxOther: p.MaxUDP,
	}
	var flags dpGuestFlags
	for flag, on := range map[dpGuestFlags]bool{
		dpGuestFlagsCFG_PASS_ARP: *p.PassARP, dpGuestFlagsCFG_PASS_ND: *p.PassND,
		dpGuestFlagsCFG_PASS_NON_IP: p.PassNonIP, dpGuestFlagsCFG_INSPECT: g.Inspect,
		dpGuestFlagsCFG_FAIL_CLOSED: p.InspectionFailure == "closed",
	} {
		if on {
			flags |= flag
		}
	}
	c.Flags = uint32(flags)
	t := p.Timeouts
	for i, v := range [dpTimeoutIndexTO_COUNT]policy.Duration{
		dpTimeoutIndexTO_TCP_SYN: t.TCPSyn, dpTimeoutIndexTO_TCP_ESTABLISHED: t.TCPEstablished,
		dpTimeoutIndexTO_TCP_FIN_WAIT: t.TCPFinWait, dpTimeoutIndexTO_TCP_CLOSE_WAIT: t.TCPCloseWait,
		dpTimeoutIndexTO_TCP_TIME_WAIT: t.TCPTimeWait, dpTimeoutIndexTO_TCP_CLOSED: t.TCPClosed,
		dpTimeoutIndexTO_UDP: t.UDP, dpTimeoutIndexTO_UDP_REPLIED: t.UDPReplied,
		dpTimeoutIndexTO_ICMP: t.ICMP, dpTimeoutIndexTO_OTHER: t.Other,
	} {
		c.Timeouts[i] = uint32(time.Duration(v) / time.Second)
	}
	return c
}

// SetVNIC protects the vNIC ifindex with cfg, or swaps its configuration in
// one atomic update if it is already protected.
func (d *Datapath) SetVNIC(ifindex int, cfg GuestConfig) error {
	if err := d.objs.Vnics.Put(uint32(ifindex), cfg.kernel()); err != nil {
		return fmt.Errorf("vNIC ifindex %d: %w", ifindex, err)
	}
	return nil
}

// DeleteVNIC stops protecting ifindex: its packets pass untouched.
func (d *Datapath) DeleteVNIC(ifindex int) error {
	if err := d.objs.Vnics.Delete(uint32(ifindex)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("vNIC ifindex %d: %w", ifindex, err)
	}
	return nil
}

// VNICs lists the protected ifindexes and their slots.
func (d *Datapath) VNICs() (map[int]uint32, error) {
	out := map[int]uint32{}
	var k uint32
	var v dpGuestCfg
	it := d.objs.Vnics.Iterate()
	for it.Next(&k, &v) {
		out[int(k)] = v.Slot
	}
	return out, it.Err()
}

// ResizeTables gives guest slot tables of new capacities, keeping its
// connections: entries are copied into the new tables, the new tables are
// swapped in (one map update each), and the old tables are copied again
// after the swap: entries they gained while being copied are added, and
// entries the datapath changed in them meanwhile (a handshake completed, a
// packet held) replace their first copy unless the new table has seen the
// flow since. The caller opens a short pickup window for any connection that
// still slips through.
func (d *Datapath) ResizeTables(slot, maxTCP, maxOther uint32) error {
	return d.resizeTables(slot, maxTCP, maxOther, nil)
}

// resizeTables is ResizeTables; copied, if not nil, runs between the first
// copy of each table ("tcp", then "other") and its swap, where a test moves
// a connection on in the old table.
func (d *Datapath) resizeTables(slot, maxTCP, maxOther uint32, copied func(table string)) error {
	for i, t := range []struct {
		outer *ebpf.Map
		name  string
		n     uint32
	}{{d.objs.ConnTcp, "tcp", maxTCP}, {d.objs.ConnOther, "other", maxOther}} {
		var old *ebpf.Map
		if err := t.outer.Lookup(slot, &old); err != nil {
			return fmt.Errorf("guest slot %d: resize %s table: %w", slot, t.name, err)
		}
		m, err := ebpf.NewMap(&ebpf.MapSpec{
			Name: fmt.Sprintf("conn_%s_%d", t.name, slot), Type: ebpf.LRUHash,
			KeySize: ConnKeySize, ValueSize: ConnValueSize, MaxEntries: TableCapacity(t.n),
		})
		if err != nil {
			old.Close()
			return fmt.Errorf("guest slot %d: %s table of %d: %w", slot, t.name, t.n, err)
		}
		n, err := copyEntries(old, m)
		if err == nil && copied != nil {
			copied(t.name)
		}
		if err == nil {
			err = t.outer.Put(slot, m) // waits for programs using the old table
		}
		if err == nil {
			var late int
			late, err = copyNewer(old, m)
			n += late
		}
		old.Close()
		m.Close()
		if err != nil {
			return fmt.Errorf("guest slot %d: resize %s table: %w", slot, t.name, err)
		}
		if err := d.objs.ConnLive.Put(slot*2+uint32(i), uint64(n)); err != nil {
			return fmt.Errorf("guest slot %d: live count: %w", slot, err)
		}
	}
	return nil
}

// copyEntries copies every entry of from into to.
func copyEntries(from, to *ebpf.Map) (int, error) {
	n := 0
	var k dpConnKey
	var v dpConnVal
	it := from.Iterate()
	for it.Next(&k, &v) {
		if err := to.Update(k, v, ebpf.UpdateAny); err != nil {
			return n, err
		}
		n++
	}
	return n, it.Err()
}

// copyNewer copies the entries of from that to lacks, and those whose copy
// in to is older (was last seen earlier), and returns how many it added. An
// entry the datapath has touched in to since keeps to's version. (The
// kernel has no compare-and-swap for map values: a packet that touches the
// entry between the comparison and the write loses that one update.)
func copyNewer(from, to *ebpf.Map) (int, error) {
	n := 0
	var k dpConnKey
	var v, cur dpConnVal
	it := from.Iterate()
	for it.Next(&k, &v) {
		err := to.Lookup(k, &cur)
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			err = to.Update(k, v, ebpf.UpdateNoExist)
			if err == nil {
				n++
				continue
			}
			if errors.Is(err, ebpf.ErrKeyExist) {
				continue // the datapath just added it: its version is newer
			}
			return n, err
		case err != nil:
			return n, err
		case v.LastSeenNs > cur.LastSeenNs:
			if err := to.Update(k, v, ebpf.UpdateExist); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return n, err
			}
		}
	}
	return n, it.Err()
}

// LiveCounts are a guest's table occupancies as the datapath counts them:
// raised on every insert, set exactly by each Sweep.
func (d *Datapath) LiveCounts(slot uint32) (tcp, other uint64, err error) {
	if err := d.objs.ConnLive.Lookup(slot*2, &tcp); err != nil {
		return 0, 0, fmt.Errorf("guest slot %d: %w", slot, err)
	}
	if err := d.objs.ConnLive.Lookup(slot*2+1, &other); err != nil {
		return 0, 0, fmt.Errorf("guest slot %d: %w", slot, err)
	}
	return tcp, other, nil
}
