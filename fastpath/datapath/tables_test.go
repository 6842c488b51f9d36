package datapath

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/palisade/palisade/hypervisor/lab"
)

// TestResizeKeepsChangesMadeDuringTheCopy: a connection the datapath moves
// on while ResizeTables copies its table keeps its newest state.
func TestResizeKeepsChangesMadeDuringTheCopy(t *testing.T) {
	f := newFixture(t, allowAllOut())
	f.out(tcpFrame(t, guest4, remote4, 40000, 80, SYN))
	f.in(tcpFrame(t, remote4, guest4, 80, 40000, SYNACK))
	copied := func(table string) {
		if table == "tcp" {
			// The handshake completes after the first copy, in the
			// old table.
			f.out(tcpFrame(t, guest4, remote4, 40000, 80, ACK))
		}
	}
	if err := f.d.resizeTables(f.slot, 2000, 2000, copied); err != nil {
		t.Fatal(err)
	}
	c := f.conn(6, 40000)
	if c == nil || c.State != "ESTABLISHED" || c.Packets != [2]uint64{2, 1} {
		t.Fatalf("connection after the resize: %+v, want ESTABLISHED with 2+1 packets", c)
	}
	if v := f.in(tcpFrame(t, remote4, guest4, 80, 40000, PSHACK)); v != Next {
		t.Fatalf("data on the resized connection: %s", v)
	}
}

// TestCopyNewerKeepsTheNewestEntry: the second copy of a resize adds what
// the new table lacks and replaces only what the new table has seen less
// recently.
func TestCopyNewerKeepsTheNewestEntry(t *testing.T) {
	lab.NeedRoot(t, "to create BPF maps")
	newTable := func() *ebpf.Map {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: ConnKeySize, ValueSize: ConnValueSize, MaxEntries: 16})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	from, to := newTable(), newTable()
	put := func(m *ebpf.Map, port uint16, state uint8, seen uint64) {
		if err := m.Put(dpConnKey{GuestPort: port, Proto: 6, Family: 4}, dpConnVal{State: state, LastSeenNs: seen}); err != nil {
			t.Fatal(err)
		}
	}
	put(from, 1, 3, 200) // changed in the old table after its first copy
	put(to, 1, 1, 100)
	put(from, 2, 1, 100) // changed in the new table since the swap
	put(to, 2, 3, 200)
	put(from, 3, 1, 100) // gained by the old table during the copy
	n, err := copyNewer(from, to)
	if err != nil {
		t.Fatal(err)
	}
	for port, want := range map[uint16]uint8{1: 3, 2: 3, 3: 1} {
		var v dpConnVal
		if err := to.Lookup(dpConnKey{GuestPort: port, Proto: 6, Family: 4}, &v); err != nil || v.State != want {
			t.Errorf("port %d: state %d (%v), want %d", port, v.State, err, want)
		}
	}
	if n != 1 {
		t.Errorf("%d entries added, want 1", n)
	}
}

// TestSweepKeepsFlowsSeenDuringTheWalk: a flow found idle, then refreshed by
// a packet before the sweeper deletes it, stays.
func TestSweepKeepsFlowsSeenDuringTheWalk(t *testing.T) {
	f := newFixture(t, allowAllOut())
	pkt := func() []byte { return udpFrame(t, guest4, remote4, 5000, 53) }
	f.out(pkt())
	refresh := func(m *ebpf.Map, k dpConnKey) { f.out(pkt()) }
	idle := func(uint8, string) time.Duration { return time.Nanosecond }
	_, otherLive, removed, err := f.d.sweep(f.slot, idle, Monotonic()+time.Hour, refresh)
	if err != nil {
		t.Fatal(err)
	}
	if c := f.conn(17, 5000); c == nil || removed != 0 || otherLive != 1 {
		t.Fatalf("refreshed flow: %+v, removed %d, live %d", c, removed, otherLive)
	}
	if _, otherLive, removed, err = f.d.Sweep(f.slot, idle, Monotonic()+time.Hour); err != nil || removed != 1 || otherLive != 0 {
		t.Fatalf("idle flow: removed %d, live %d, %v", removed, otherLive, err)
	}
}

// TestSweepAbortedWalkKeepsTheLiveCount: a walk that concurrent changes abort
// is an error, and the live count it could not finish is not written.
func TestSweepAbortedWalkKeepsTheLiveCount(t *testing.T) {
	f := newFixture(t, allowAllOut())
	for i := 0; i < 3; i++ {
		f.out(udpFrame(t, guest4, remote4, uint16(5000+i), 53))
	}
	_, before, err := f.d.LiveCounts(f.slot)
	if err != nil || before != 3 {
		t.Fatalf("live count %d before the sweep (%v)", before, err)
	}
	// Every entry the walk reads is replaced by another: each next step
	// starts over, until the walk gives up.
	fresh := uint16(0)
	replace := func(m *ebpf.Map, k dpConnKey) {
		_ = m.Delete(k)
		fresh++
		k.GuestPort = 10000 + fresh
		_ = m.Put(k, dpConnVal{LastSeenNs: uint64(Monotonic())})
	}
	_, _, _, err = f.d.sweep(f.slot, func(uint8, string) time.Duration { return time.Hour }, Monotonic(), replace)
	if !errors.Is(err, ebpf.ErrIterationAborted) {
		t.Fatalf("aborted sweep: %v", err)
	}
	if _, after, _ := f.d.LiveCounts(f.slot); after != before {
		t.Fatalf("aborted sweep wrote live count %d (was %d)", after, before)
	}
}

// TestOpenRefusesUnmeterableEventRate: above 1e9 events/s the datapath's
// refill interval would be 0 ns and its buckets would never refill.
func TestOpenRefusesUnmeterableEventRate(t *testing.T) {
	dir := filepath.Join(lab.BPFFSForTest(t), "palisade")
	d, err := Open(Config{PinDir: dir, EventsPerSec: MaxEventsPerSec + 1})
	if err == nil {
		d.Close()
		t.Fatal("Open accepted an event rate above 1e9/s")
	}
	t.Log(err)
	d, err = Open(Config{PinDir: dir, EventsPerSec: MaxEventsPerSec})
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
}

// TestLRUSlackCoversEveryPossibleCPU: the slack follows the CPUs the
// kernel keeps LRU lists for, not the ones this process may run on. The
// test runs itself again restricted to one CPU.
func TestLRUSlackCoversEveryPossibleCPU(t *testing.T) {
	possible := ebpf.MustPossibleCPU()
	if os.Getenv("PALISADE_SLACK_CHILD") != "" {
		if runtime.NumCPU() != 1 {
			t.Fatalf("child runs on %d CPUs, want 1", runtime.NumCPU())
		}
		if got := TableCapacity(0); got != uint32(128*possible) {
			t.Fatalf("slack %d with 1 usable of %d possible CPUs, want %d", got, possible, 128*possible)
		}
		return
	}
	if possible < 2 {
		t.Skip("one possible CPU: nothing to tell apart")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var all, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	defer unix.SchedSetaffinity(0, &all)
	one.Set(0)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLRUSlackCoversEveryPossibleCPU$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PALISADE_SLACK_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
