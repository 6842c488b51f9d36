package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"

	"github.com/palisade/palisade/fastpath/control/api"
)

func numCPU() int { return ebpf.MustPossibleCPU() }

// TCP states as the datapath names them.
var tcpStateNames = map[uint8]string{
	0: "NONE", 1: "SYN_SENT", 2: "SYN_RECV", 3: "ESTABLISHED", 4: "FIN_WAIT",
	5: "CLOSE_WAIT", 6: "TIME_WAIT", 7: "CLOSED",
}

var verdictNames = map[uint8]string{0: "pass", 1: "punt", 2: "offload", 3: "block"}

// Conn is one tracked connection, oriented by the guest. Its shape is the
// control API's (defined once, in fastpath/control/api).
type Conn = api.Conn

func addrOf(family uint8, a [4]uint32) netip.Addr {
	var b [16]byte
	for i, w := range a {
		binary.NativeEndian.PutUint32(b[i*4:], w)
	}
	if family == 4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

func connOf(k dpConnKey, v dpConnVal) Conn {
	c := Conn{
		Proto: k.Proto, GuestAddr: addrOf(k.Family, k.GuestAddr), GuestPort: k.GuestPort,
		RemoteAddr: addrOf(k.Family, k.RemoteAddr), RemotePort: k.RemotePort,
		FromGuest: v.Initiator == 0, Verdict: verdictNames[v.Verdict], RuleID: v.RuleId, PolicyID: v.PolicyId,
		FlowID: v.FlowId, ForceAllow: v.Flags&1 != 0, PickedUp: v.Flags&8 != 0,
		Packets: v.Packets, Bytes: v.Bytes, LastSeen: time.Duration(v.LastSeenNs),
	}
	if k.Proto == 6 {
		c.State = tcpStateNames[v.State]
	} else if v.State == 1 {
		c.State = "REPLIED"
	} else {
		c.State = "NEW"
	}
	return c
}

// Conns calls fn for every connection of guest slot (TCP first). Returning
// false stops the walk.
func (d *Datapath) Conns(slot uint32, fn func(Conn) bool) error {
	tcp, other, err := d.Tables(slot)
	if err != nil {
		return err
	}
	defer tcp.Close()
	defer other.Close()
	for _, m := range []*ebpf.Map{tcp, other} {
		var k dpConnKey
		var v dpConnVal
		it := m.Iterate()
		for it.Next(&k, &v) {
			if !fn(connOf(k, v)) {
				return nil
			}
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("guest slot %d: walk connections: %w", slot, err)
		}
	}
	return nil
}

// Timeouts gives a connection's idle timeout by protocol and state.
type Timeouts func(proto uint8, state string) time.Duration

// sweepVisitHook, if set (by tests), runs for every entry Sweep's walk reads.
var sweepVisitHook func(m *ebpf.Map, k dpConnKey)

// Sweep deletes the guest's connections idle beyond their timeout and resets
// its live-entry counts to what remains. It returns how many remain (TCP,
// other) and how many it removed. An entry found idle is deleted only if it
// has not been seen since (the datapath may refresh it meanwhile). A walk
// the kernel's concurrent changes abort leaves the live count as it was and
// returns an error wrapping ebpf.ErrIterationAborted (and 0 for that table),
// after deleting the idle entries it found.
func (d *Datapath) Sweep(slot uint32, timeout Timeouts, now time.Duration) (tcpLive, otherLive, removed int, err error) {
	tcp, other, err := d.Tables(slot)
	if err != nil {
		return 0, 0, 0, err
	}
	defer tcp.Close()
	defer other.Close()
	var aborted []error
	for i, m := range []*ebpf.Map{tcp, other} {
		type idle struct {
			k        dpConnKey
			lastSeen uint64
		}
		var expired []idle
		live := 0
		var k dpConnKey
		var v dpConnVal
		it := m.Iterate()
		for it.Next(&k, &v) {
			c := connOf(k, v)
			if now-c.LastSeen > timeout(k.Proto, c.State) {
				expired = append(expired, idle{k, v.LastSeenNs})
			} else {
				live++
			}
			if sweepVisitHook != nil {
				sweepVisitHook(m, k)
			}
		}
		walkErr := it.Err()
		if walkErr != nil && !errors.Is(walkErr, ebpf.ErrIterationAborted) {
			return 0, 0, removed, fmt.Errorf("guest slot %d: sweep: %w", slot, walkErr)
		}
		for _, e := range expired {
			// Seen since the walk read it: alive. (A packet between
			// this lookup and the delete is lost with the entry; the
			// kernel has no conditional delete.)
			if err := m.Lookup(e.k, &v); err != nil || v.LastSeenNs != e.lastSeen {
				if err == nil {
					live++
				}
				continue
			}
			if err := m.Delete(e.k); err == nil {
				removed++
			}
		}
		if walkErr != nil {
			// Part of the table was never read: its count would be
			// wrong, so the datapath keeps counting on its own. The
			// other table is still swept.
			aborted = append(aborted, fmt.Errorf("guest slot %d: sweep %s table: walk aborted by concurrent changes, live count kept: %w",
				slot, [2]string{"tcp", "other"}[i], walkErr))
			continue
		}
		if err := d.objs.ConnLive.Put(slot*2+uint32(i), uint64(live)); err != nil {
			return 0, 0, removed, fmt.Errorf("guest slot %d: live count: %w", slot, err)
		}
		if i == 0 {
			tcpLive = live
		} else {
			otherLive = live
		}
	}
	return tcpLive, otherLive, removed, errors.Join(aborted...)
}
