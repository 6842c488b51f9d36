package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/palisade/palisade/hypervisor/lab"
)

// The veth lab's addresses: RFC 5737 TEST-NET only, no route anywhere else.
var (
	GenAddr      = netip.MustParseAddr("203.0.113.1")
	hostGenAddr  = netip.MustParsePrefix("203.0.113.254/24")
	hostVNICAddr = netip.MustParsePrefix("198.51.100.254/24")
	GuestAddr    = netip.MustParseAddr("198.51.100.10")
	// GenNet is the generator's network: the source the last rule allows.
	GenNet = netip.MustParsePrefix("203.0.113.0/24")

	macGen      = net.HardwareAddr{0x02, 0xbe, 0, 0, 0x01, 0x01}
	macHostGen  = net.HardwareAddr{0x02, 0xbe, 0, 0, 0x01, 0xfe}
	macHostVNIC = net.HardwareAddr{0x02, 0xbe, 0, 0, 0x02, 0xfe}
	macGuest    = net.HardwareAddr{0x02, 0xbe, 0, 0, 0x02, 0x0a}
)

const (
	// VNIC is the host-side interface of the guest's link.
	VNIC = "vnic"
	// GuestPort is the UDP port the traffic goes to; GenPort the first
	// source port.
	GuestPort = 7000
	GenPort   = 40000
	// FrameLen is the generated frames' size without FCS: the Ethernet
	// minimum, so the figures are packet rates, not bandwidth.
	FrameLen = 60
	// NewFlowTuples is how many source ports the new-flow shape cycles
	// through: far more than a guest's UDP table (10,000 by default) holds.
	NewFlowTuples = 65536

	relayIf = "gen0" // the host's end of the generator's link
)

// Shape is a traffic pattern.
type Shape struct {
	Name  string
	Flows uint32 // distinct 5-tuples cycled through; 1 = one flow
}

var (
	OneFlow  = Shape{Name: "one established flow", Flows: 1}
	NewFlows = Shape{Name: "new flow every packet (65,536 tuples)", Flows: NewFlowTuples}
)

// Options place the lab's work on CPUs.
type Options struct {
	// GenCPU runs the generator (negative: the last CPU). By default the
	// host receives the generator's frames in softirq context on the same
	// CPU, right after each batch is sent, so every cost of a packet is
	// paid on that one CPU and the costs add up.
	GenCPU int
	// SplitCPUs moves the host's receive path (the NAPI instance of the
	// host's end of the generator link, which then forwards, filters and
	// delivers to the guest's sink) into a kernel thread (threaded NAPI)
	// pinned to FwdCPU (negative: another CPU than the generator's).
	SplitCPUs bool
	FwdCPU    int
}

// Topology is gen —veth— host (IPv4 forwarding, the filter on VNIC) —veth—
// guest, in three namespaces of a lab, with the traffic programs attached.
type Topology struct {
	Gen, Host, Guest *lab.Namespace
	GenIf, RelayIf   *lab.Veth // the generator's link: gen side, host side
	VNICIf, GuestIf  *lab.Veth // the guest's link: host side (the vNIC), guest side
	GenCPU, FwdCPU   int       // FwdCPU < 0: forwarding on the generator's CPU
	NAPIThread       int       // pid of the host's receive thread with SplitCPUs

	objs  trafficObjects
	links []link.Link
	frame []byte
}

// NewTopology builds the lab's namespaces and links inside l and loads the
// traffic programs. Close undoes what Close of l does not (programs).
func NewTopology(l *lab.Lab, o Options) (_ *Topology, err error) {
	t := &Topology{GenCPU: o.GenCPU, FwdCPU: o.FwdCPU}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	ncpu := runtime.NumCPU()
	if t.GenCPU < 0 || t.GenCPU >= ncpu {
		t.GenCPU = ncpu - 1
	}
	switch {
	case !o.SplitCPUs:
		t.FwdCPU = -1
	case ncpu == 1:
		return nil, errors.New("bench: splitting generator and forwarding needs two CPUs")
	case t.FwdCPU < 0 || t.FwdCPU >= ncpu || t.FwdCPU == t.GenCPU:
		t.FwdCPU = (t.GenCPU + 1) % ncpu
	}
	for _, s := range []struct {
		ns   **lab.Namespace
		name string
	}{{&t.Gen, "gen"}, {&t.Host, "host"}, {&t.Guest, "guest"}} {
		if *s.ns, err = l.Namespace(s.name); err != nil {
			return nil, err
		}
		// IPv4 only: no router solicitations or MLD reports on the links.
		for _, k := range []string{"net/ipv6/conf/all/disable_ipv6", "net/ipv6/conf/default/disable_ipv6"} {
			if err := (*s.ns).Sysctl(k, "1"); err != nil {
				return nil, err
			}
		}
	}
	if t.GenIf, t.RelayIf, err = l.Link(
		lab.End{NS: t.Gen, Name: "eth0", MAC: macGen, Addrs: []netip.Prefix{netip.PrefixFrom(GenAddr, 24)}},
		lab.End{NS: t.Host, Name: relayIf, MAC: macHostGen, Addrs: []netip.Prefix{hostGenAddr}}); err != nil {
		return nil, err
	}
	if t.VNICIf, t.GuestIf, err = l.Link(
		lab.End{NS: t.Host, Name: VNIC, MAC: macHostVNIC, Addrs: []netip.Prefix{hostVNICAddr}},
		lab.End{NS: t.Guest, Name: "eth0", MAC: macGuest, Addrs: []netip.Prefix{netip.PrefixFrom(GuestAddr, 24)}}); err != nil {
		return nil, err
	}
	for _, k := range []string{"net/ipv4/ip_forward=1", "net/ipv4/conf/all/rp_filter=0", "net/ipv4/conf/default/rp_filter=0",
		"net/ipv4/conf/" + relayIf + "/rp_filter=0", "net/ipv4/conf/" + VNIC + "/rp_filter=0"} {
		key, val, _ := strings.Cut(k, "=")
		if err := t.Host.Sysctl(key, val); err != nil {
			return nil, err
		}
	}
	// The guest's sink drops ARP, so the host must know its MAC.
	if err := t.Host.Netlink().NeighAdd(&netlink.Neigh{LinkIndex: t.VNICIf.Index, State: netlink.NUD_PERMANENT,
		IP: GuestAddr.AsSlice(), HardwareAddr: macGuest}); err != nil {
		return nil, fmt.Errorf("host: neighbour %s: %w", GuestAddr, err)
	}

	if err := loadTrafficObjects(&t.objs, nil); err != nil {
		return nil, fmt.Errorf("load traffic programs: %w", err)
	}
	if err := t.anchorGenerator(l); err != nil {
		return nil, err
	}
	if err := t.attach(t.Host, t.objs.Relay, t.RelayIf.Index, 0); err != nil {
		return nil, err
	}
	if err := t.attach(t.Guest, t.objs.Sink, t.GuestIf.Index, 0); err != nil {
		return nil, err
	}
	if t.FwdCPU >= 0 {
		if err := t.threadedNAPI(); err != nil {
			return nil, err
		}
	}
	if t.frame, err = UDPFrame(Endpoint{MAC: macGen, Addr: GenAddr, Port: GenPort},
		Endpoint{MAC: macHostGen, Addr: GuestAddr, Port: GuestPort}, FrameLen); err != nil {
		return nil, err
	}
	return t, nil
}

// anchorGenerator attaches the generator to a veth pair of its own whose
// ends are both down, which keeps it in the kernel's XDP dispatcher: otherwise
// every test run adds it to the dispatcher and removes it again, each time
// rewriting kernel text and waiting for an RCU grace period (milliseconds,
// and most of the variance of short runs).
func (t *Topology) anchorGenerator(l *lab.Lab) error {
	a, _, err := l.Link(lab.End{NS: t.Gen, Name: "anchor0"}, lab.End{NS: t.Gen, Name: "anchor1"})
	if err != nil {
		return err
	}
	for _, name := range []string{"anchor0", "anchor1"} {
		lk, err := t.Gen.Netlink().LinkByName(name)
		if err == nil {
			err = t.Gen.Netlink().LinkSetDown(lk)
		}
		if err != nil {
			return fmt.Errorf("gen: %s down: %w", name, err)
		}
	}
	return t.attach(t.Gen, t.objs.Gen, a.Index, link.XDPGenericMode)
}

func (t *Topology) attach(ns *lab.Namespace, prog *ebpf.Program, ifindex int, flags link.XDPAttachFlags) error {
	return ns.Do(func() error {
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: flags})
		if err != nil {
			return fmt.Errorf("%s: attach XDP to ifindex %d: %w", ns.Name, ifindex, err)
		}
		t.links = append(t.links, l)
		return nil
	})
}

// threadedNAPI moves the host's receive processing for the generator's link
// into a kernel thread of its own (threaded NAPI) and pins it to FwdCPU, so
// the generator and the path under test each have a CPU: a generator that is
// faster than the path fills the veth ring and the rest is dropped there,
// costing the forwarding CPU nothing.
func (t *Topology) threadedNAPI() error {
	before := napiThreads(relayIf)
	// sysfs shows a namespace's devices only when mounted inside it, which
	// `ip netns exec` does.
	if out, err := t.Host.Run("", "sh", "-c", "echo 1 > /sys/class/net/"+relayIf+"/threaded"); err != nil {
		return fmt.Errorf("host: threaded NAPI on %s: %w: %s", relayIf, err, out)
	}
	var fresh []int
	for pid := range napiThreads(relayIf) {
		if !before[pid] {
			fresh = append(fresh, pid)
		}
	}
	if len(fresh) != 1 {
		return fmt.Errorf("host: expected one new NAPI thread for %s, found %v", relayIf, fresh)
	}
	var set unix.CPUSet
	set.Set(t.FwdCPU)
	if err := unix.SchedSetaffinity(fresh[0], &set); err != nil {
		return fmt.Errorf("pin NAPI thread %d to CPU %d: %w", fresh[0], t.FwdCPU, err)
	}
	t.NAPIThread = fresh[0]
	return nil
}

// napiThreads lists the kernel threads named after ifname's NAPI instances.
func napiThreads(ifname string) map[int]bool {
	out := map[int]bool{}
	dirs, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, d := range dirs {
		comm, err := os.ReadFile(d)
		if err != nil || !strings.HasPrefix(string(comm), "napi/"+ifname+"-") {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(d))); err == nil {
			out[pid] = true
		}
	}
	return out
}

// Close detaches and unloads the traffic programs.
func (t *Topology) Close() error {
	var errs []error
	for _, l := range t.links {
		errs = append(errs, l.Close())
	}
	t.links = nil
	errs = append(errs, t.objs.Close())
	return errors.Join(errs...)
}

// Result is one traffic run.
type Result struct {
	Generated uint64 // frames the generator produced
	Relayed   uint64 // frames that reached the host
	Delivered uint64 // benchmark frames the guest's sink received
	Elapsed   time.Duration
}

func rate(n uint64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// PPS is the delivered rate.
func (r Result) PPS() float64 { return rate(r.Delivered, r.Elapsed) }

// GenPPS is the generator's rate.
func (r Result) GenPPS() float64 { return rate(r.Generated, r.Elapsed) }

// RelayPPS is the rate frames reached the host at.
func (r Result) RelayPPS() float64 { return rate(r.Relayed, r.Elapsed) }

// xdpMD is struct xdp_md: the generator's frames enter on ingress_ifindex.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// Mode says how far frames go.
type Mode int

const (
	Deliver     Mode = iota // generator -> host forwarding -> guest sink
	GenOnly                 // the generator drops its own frames: its rate alone
	HandOffOnly             // the host's first XDP program drops them: generator + veth hand-off
)

// XDP actions (linux/bpf.h).
const (
	xdpDrop = 1
	xdpPass = 2
	xdpTX   = 3
)

// Send runs the generator for dur (at least), in shape, and counts what
// arrives where.
func (t *Topology) Send(ctx context.Context, s Shape, m Mode, dur time.Duration) (Result, error) {
	cfg := trafficBenchCfg{Flows: s.Flows, GenAction: xdpTX, RelayAction: xdpPass, SinkPort: htons(GuestPort)}
	switch m {
	case GenOnly:
		cfg.GenAction = xdpDrop
	case HandOffOnly:
		cfg.RelayAction = xdpDrop
	}
	copy(cfg.Hdr[:], t.frame[:42])
	if err := t.objs.Config.Put(uint32(0), cfg); err != nil {
		return Result{}, fmt.Errorf("traffic config: %w", err)
	}
	before, err := t.counts()
	if err != nil {
		return Result{}, err
	}
	var start, stop time.Time
	err = t.Gen.Do(func() error {
		return onCPU(t.GenCPU, func() (err error) {
			start, err = t.generate(ctx, dur)
			stop = time.Now()
			return err
		})
	})
	if err != nil {
		return Result{}, err
	}
	// A path slower than the kernel's softirq budget leaves frames queued
	// when the generator returns: the run ends when the counters stop.
	after, err := t.counts()
	for err == nil && time.Since(stop) < 10*time.Second {
		time.Sleep(2 * time.Millisecond)
		var now [3]uint64
		if now, err = t.counts(); now == after {
			break
		}
		after, stop = now, time.Now()
	}
	if err != nil {
		return Result{}, err
	}
	return Result{Generated: after[0] - before[0], Relayed: after[1] - before[1], Delivered: after[2] - before[2], Elapsed: stop.Sub(start)}, nil
}

// generate runs the generator in live-frames mode, in calls of about 50 ms,
// until dur has passed or ctx ends, and says when it started. It runs on a
// thread in the gen namespace (the ingress ifindex is resolved there).
func (t *Topology) generate(ctx context.Context, dur time.Duration) (time.Time, error) {
	opts := &ebpf.RunOptions{Data: t.frame, Flags: unix.BPF_F_TEST_XDP_LIVE_FRAMES,
		Context: xdpMD{DataEnd: uint32(len(t.frame)), IngressIfindex: uint32(t.GenIf.Index)}}
	chunk := uint32(1024)
	start := time.Now()
	for time.Since(start) < dur && ctx.Err() == nil {
		opts.Repeat = chunk
		t0 := time.Now()
		if _, err := t.objs.Gen.Run(opts); err != nil {
			return start, fmt.Errorf("generator: %w", err)
		}
		switch took := time.Since(t0); {
		case took < 25*time.Millisecond && chunk < 1<<24:
			chunk *= 2
		case took > 100*time.Millisecond && chunk > 64:
			chunk /= 2
		}
	}
	return start, ctx.Err()
}

func (t *Topology) counts() ([3]uint64, error) {
	var out [3]uint64
	for i := range out {
		var per []uint64
		if err := t.objs.Counters.Lookup(uint32(i), &per); err != nil {
			return out, fmt.Errorf("traffic counter %d: %w", i, err)
		}
		for _, v := range per {
			out[i] += v
		}
	}
	return out, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// onCPU runs fn with the calling (locked) thread pinned to cpu, and restores
// its affinity afterwards: the thread goes back to Go's pool.
func onCPU(cpu int, fn func() error) error {
	if cpu < 0 {
		return fn()
	}
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return fmt.Errorf("get CPU affinity: %w", err)
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("pin to CPU %d: %w", cpu, err)
	}
	defer unix.SchedSetaffinity(0, &old)
	return fn()
}
