package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/palisade/palisade/fastpath/control/api"
)

func numCPU() int { return ebpf.MustPossibleCPU() }

// TCP states as the datapath names them (enum tcp_state, less its TCP_).
var tcpStateNames = map[dpTcpState]string{
	dpTcpStateTCP_NONE: "NONE", dpTcpStateTCP_SYN_SENT: "SYN_SENT", dpTcpStateTCP_SYN_RECV: "SYN_RECV",
	dpTcpStateTCP_ESTABLISHED: "ESTABLISHED", dpTcpStateTCP_FIN_WAIT: "FIN_WAIT",
	dpTcpStateTCP_CLOSE_WAIT: "CLOSE_WAIT", dpTcpStateTCP_TIME_WAIT: "TIME_WAIT", dpTcpStateTCP_CLOSED: "CLOSED",
}

// Pseudo-connection states (UDP, ICMP echo, other protocols).
var pseudoStateNames = map[dpPseudoState]string{dpPseudoStatePSEUDO_NEW: "NEW", dpPseudoStatePSEUDO_REPLIED: "REPLIED"}

// Flow verdicts (enum flow_verdict, less its FV_, in lower case).
var verdictNames = map[dpFlowVerdict]string{
	dpFlowVerdictFV_PASS: "pass", dpFlowVerdictFV_PUNT: "punt", dpFlowVerdictFV_OFFLOAD: "offload", dpFlowVerdictFV_BLOCK: "block",
}

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
		FromGuest: dpInitiator(v.Initiator) == dpInitiatorINIT_GUEST, Verdict: verdictNames[dpFlowVerdict(v.Verdict)],
		RuleID: v.RuleId, PolicyID: v.PolicyId, FlowID: v.FlowId,
		ForceAllow: dpConnFlags(v.Flags)&dpConnFlagsCONN_FORCE_ALLOW != 0,
		PickedUp:   dpConnFlags(v.Flags)&dpConnFlagsCONN_PICKED_UP != 0,
		Packets:    v.Packets, Bytes: v.Bytes, LastSeen: time.Duration(v.LastSeenNs),
	}
	if k.Proto == unix.IPPROTO_TCP {
		c.State = tcpStateNames[dpTcpState(v.State)]
	} else {
		c.State = pseudoStateNames[dpPseudoState(v.State)]
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

// Sweep deletes the guest's connections idle beyond their timeout and resets
// its live-entry counts to what remains. It returns how many remain (TCP,
// other) and how many it removed. An entry found idle is deleted only if it
// has not been seen since (the datapath may refresh it meanwhile). A walk
// the kernel's concurrent changes abort leaves the live count as it was and
// returns an error wrapping ebpf.ErrIterationAborted (and 0 for that table),
// after deleting the idle entries it found.
func (d *Datapath) Sweep(slot uint32, timeout Timeouts, now time.Duration) (tcpLive, otherLive, removed int, err error) {
	return d.sweep(slot, timeout, now, nil)
}

// sweep is Sweep; visit, if not nil, runs for every entry the walk reads,
// where a test changes the table under the walk.
func (d *Datapath) sweep(slot uint32, timeout Timeouts, now time.Duration,
	visit func(m *ebpf.Map, k dpConnKey)) (tcpLive, otherLive, removed int, err error) {
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
			if visit != nil {
				visit(m, k)
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
