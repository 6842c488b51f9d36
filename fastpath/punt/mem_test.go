package punt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/jonboulle/clockwork"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/hypervisor/lab/wait"
)

// memDatapath is the datapath in memory: it keeps what the engine tells it
// and fails where a test says.
type memDatapath struct {
	mu           sync.Mutex
	slowPath     bool
	ttls         []time.Duration // every heartbeat's, in order
	decisions    map[flowKey]decision
	congested    []congestion // every SetCongested that changed a slot, in order
	shed         map[uint32]bool
	failDecision int // fail this many SetFlowDecision calls
}

type decision struct {
	verdict uint8
	dropped uint32
}

type congestion struct {
	slot uint32
	on   bool
}

func newMemDatapath() *memDatapath {
	return &memDatapath{decisions: map[flowKey]decision{}, shed: map[uint32]bool{}}
}

func (d *memDatapath) SetSlowPath(bound bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.slowPath = bound
	return nil
}

func (d *memDatapath) Heartbeat(ttl time.Duration) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ttls = append(d.ttls, ttl)
	return nil
}

var errMapFull = errors.New("update flow_decisions: argument list too long")

func (d *memDatapath) SetFlowDecision(slot uint32, flowID uint64, verdict uint8, dropped uint32) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failDecision > 0 {
		d.failDecision--
		return fmt.Errorf("flow %d decision: %w", flowID, errMapFull)
	}
	d.decisions[flowKey{slot, flowID}] = decision{verdict, dropped}
	return nil
}

func (d *memDatapath) SetCongested(slot uint32, on bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.shed[slot] != on {
		d.congested = append(d.congested, congestion{slot, on})
	}
	d.shed[slot] = on
	return nil
}

func (d *memDatapath) decision(slot uint32, flow uint64) (decision, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.decisions[flowKey{slot, flow}]
	return v, ok
}

// memDevice is the punt device in memory: tests push held packets in, and
// read what the engine wrote back.
type memDevice struct {
	mu      sync.Mutex
	in      [][]byte
	readErr []error // returned by the next reads, before any packet
	arrived chan struct{}
	out     []written
	closed  bool
}

type written struct {
	b    []byte // virtio header and frame
	mark uint32
}

func newMemDevice() *memDevice { return &memDevice{arrived: make(chan struct{}, 1)} }

func (d *memDevice) push(b []byte) {
	d.mu.Lock()
	d.in = append(d.in, b)
	d.mu.Unlock()
	d.wake()
}

func (d *memDevice) failRead(err error) {
	d.mu.Lock()
	d.readErr = append(d.readErr, err)
	d.mu.Unlock()
	d.wake()
}

func (d *memDevice) wake() {
	select {
	case d.arrived <- struct{}{}:
	default:
	}
}

func (d *memDevice) Read(buf []byte) (int, bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.readErr) > 0 {
		err := d.readErr[0]
		d.readErr = d.readErr[1:]
		return 0, false, err
	}
	if len(d.in) == 0 {
		return 0, false, nil
	}
	b := d.in[0]
	d.in = d.in[1:]
	if len(b) > len(buf) {
		return 0, false, fmt.Errorf("%w: %d bytes, buffer %d", ErrTruncated, len(b), len(buf))
	}
	return copy(buf, b), true, nil
}

// Wait returns when a packet is pushed, or after timeout: the engine polls,
// and a test only ever waits for what the engine did.
func (d *memDevice) Wait(timeout time.Duration) error {
	select {
	case <-d.arrived:
	case <-time.After(timeout):
	}
	return nil
}

func (d *memDevice) Write(b []byte, mark uint32, _ time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("write to a closed device")
	}
	d.out = append(d.out, written{slices.Clone(b), mark})
	return nil
}

func (d *memDevice) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	return nil
}

func (d *memDevice) written() []written {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.out)
}

// memRig is an engine on the in-memory datapath and device, with a fake
// clock, a slow path at the other end of a pipe, and its log captured.
type memRig struct {
	t     *testing.T
	dp    *memDatapath
	dev   *memDevice
	clock *clockwork.FakeClock
	e     *Engine
	log   *logtest.Hook
	punts chan channel.PuntRecord // what reached the slow path
	mu    sync.Mutex
	guest map[uint32]Guest

	cancel       context.CancelFunc
	done         chan error // Run's result
	endOnce      sync.Once
	runErr       error
	expectRunErr bool // Run is meant to fail
}

// newMemRig starts an engine; cfg's Datapath, Device, GuestOf, Log and
// Clock are the rig's. Its guest in slot 0 fails open.
func newMemRig(t *testing.T, cfg Config) *memRig {
	t.Helper()
	log, hook := logtest.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	r := &memRig{t: t, dp: newMemDatapath(), dev: newMemDevice(), clock: clockwork.NewFakeClock(), log: hook,
		punts: make(chan channel.PuntRecord, 1024), guest: map[uint32]Guest{0: {ID: "web"}}}
	cfg.Datapath, cfg.Device, cfg.Log, cfg.Clock = r.dp, r.dev, log, r.clock
	cfg.GuestOf = func(slot uint32) (Guest, bool) {
		r.mu.Lock()
		defer r.mu.Unlock()
		g, ok := r.guest[slot]
		return g, ok
	}
	var err error
	if r.e, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan error, 1)
	go func() { r.done <- r.e.Run(ctx) }()
	t.Cleanup(func() {
		if err := r.stop(); err != nil && !r.expectRunErr {
			t.Errorf("Run: %v", err)
		}
	})
	// The ticker is the clock's one waiter: advancing before it exists
	// would not reach it.
	if err := r.clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	return r
}

// result waits for Run to end and returns its error.
func (r *memRig) result() error {
	r.endOnce.Do(func() { r.runErr = <-r.done })
	return r.runErr
}

// stop ends Run and returns its error.
func (r *memRig) stop() error {
	r.cancel()
	return r.result()
}

func (r *memRig) setGuest(slot uint32, g Guest, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ok {
		r.guest[slot] = g
	} else {
		delete(r.guest, slot)
	}
}

// bind binds a slow path that inspects: a session over a pipe whose far end
// hands every punt record to r.punts. Verdicts are given with r.verdict.
func (r *memRig) bind() *channel.Session {
	r.t.Helper()
	near, far := net.Pipe()
	s := channel.NewSession(channel.NewConn(near), channel.SessionConfig{Role: channel.RoleFastPath,
		Keepalive: time.Hour, DeadAfter: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = s.Run(ctx) }() // ends with the test; why is Err's
	go func() { defer wg.Done(); r.readPunts(channel.NewReader(far)) }()
	r.t.Cleanup(func() { cancel(); s.Close(errors.New("test over")); far.Close(); wg.Wait() })
	r.e.Bound(s, channel.Result{Negotiated: channel.CapIPS | channel.CapOffload})
	return s
}

func (r *memRig) readPunts(rd *channel.Reader) {
	for {
		f, err := rd.ReadFrame()
		if err != nil {
			return
		}
		if f.Type != channel.TypePuntBatch {
			continue
		}
		err = channel.DecodePuntBatch(f.Payload, func(p channel.PuntRecord) error {
			p.Data = slices.Clone(p.Data)
			r.punts <- p
			return nil
		})
		if err != nil {
			r.t.Errorf("punt batch: %v", err)
			return
		}
	}
}

// punted waits for the next record to reach the slow path.
func (r *memRig) punted() channel.PuntRecord {
	r.t.Helper()
	var p channel.PuntRecord
	wait.For(r.t, "a punt record at the slow path", func() bool {
		select {
		case p = <-r.punts:
			return true
		default:
			return false
		}
	})
	return p
}

// verdict hands the engine a verdict batch, as the session's reader does.
func (r *memRig) verdict(vs ...channel.VerdictRecord) {
	r.t.Helper()
	p, err := channel.AppendVerdictBatch(nil, vs)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := r.e.HandleFrame(channel.Frame{Type: channel.TypeVerdictBatch, Payload: p}); err != nil {
		r.t.Fatal(err)
	}
}

// waitStats waits until cond holds of the engine's counters and returns them.
func (r *memRig) waitStats(what string, cond func(Stats) bool) Stats {
	r.t.Helper()
	var st Stats
	wait.For(r.t, what, func() bool { st = r.e.Stats(); return cond(st) })
	return st
}

// waitWritten waits until n packets were written back and returns them.
func (r *memRig) waitWritten(n int) []written {
	r.t.Helper()
	var w []written
	wait.For(r.t, fmt.Sprintf("%d packets written back", n), func() bool { w = r.dev.written(); return len(w) >= n })
	if len(w) != n {
		r.t.Fatalf("%d packets written back, want %d", len(w), n)
	}
	return w
}

// logged returns the messages logged at level warn or above.
func (r *memRig) logged(msg string) []*logrus.Entry {
	var out []*logrus.Entry
	for _, e := range r.log.AllEntries() {
		if e.Message == msg {
			out = append(out, e)
		}
	}
	return out
}

// pkt is a held packet as the datapath hands it over.
type pkt struct {
	slot      uint32
	flow, id  uint64
	fromGuest bool
	tap       bool
	payload   string
}

const testIfindex = 17

var (
	guestMAC  = net.HardwareAddr{2, 0, 0, 0, 0, 10}
	remoteMAC = net.HardwareAddr{2, 0, 0, 0, 0, 20}
	guestIP   = netip.MustParseAddr("198.51.100.10")
	remoteIP  = netip.MustParseAddr("198.51.100.20")
)

// frame is p's Ethernet frame: a TCP segment between the remote peer and
// the guest, in p's direction, carrying p.payload.
func (p pkt) frame(t *testing.T) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: remoteMAC, DstMAC: guestMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: remoteIP.AsSlice(), DstIP: guestIP.AsSlice()}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 80, Seq: 1000, Ack: 2000, ACK: true, PSH: true, Window: 512}
	if p.fromGuest {
		eth.SrcMAC, eth.DstMAC = eth.DstMAC, eth.SrcMAC
		ip.SrcIP, ip.DstIP = ip.DstIP, ip.SrcIP
		tcp.SrcPort, tcp.DstPort = tcp.DstPort, tcp.SrcPort
	}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, tcp, gopacket.Payload(p.payload))
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// held is p as read from the punt device: a virtio header, the metadata,
// the frame.
func (p pkt) held(t *testing.T) []byte {
	t.Helper()
	m := datapath.PuntMeta{Slot: p.slot, Ifindex: testIfindex, FromGuest: p.fromGuest, FlowID: p.flow, PacketID: p.id}
	if p.tap {
		m.Flags = datapath.MetaTap
	}
	b, err := m.AppendBinary(make([]byte, vnetHdrLen))
	if err != nil {
		t.Fatal(err)
	}
	return append(b, p.frame(t)...)
}

// back is p as it must be written back: the virtio header and the frame,
// without the metadata.
func (p pkt) back(t *testing.T) written {
	return written{append(make([]byte, vnetHdrLen), p.frame(t)...), datapath.BackMark(testIfindex, !p.fromGuest, false)}
}

func (r *memRig) hold(ps ...pkt) {
	for _, p := range ps {
		r.dev.push(p.held(r.t))
	}
}

// holdPunted holds ps and waits until each has reached the slow path.
func (r *memRig) holdPunted(ps ...pkt) {
	r.t.Helper()
	r.hold(ps...)
	for range ps {
		r.punted()
	}
}

// flowOf is n packets of one flow in slot 0, packet ids 1 to n.
func flowOf(flow uint64, n int) []pkt {
	ps := make([]pkt, n)
	for i := range ps {
		ps[i] = pkt{flow: flow, id: uint64(i + 1)}
	}
	return ps
}

func allow(p pkt) channel.VerdictRecord {
	return channel.VerdictRecord{Guest: p.slot, FlowID: p.flow, PacketID: p.id, Action: channel.ActionAllow}
}

func drop(p pkt) channel.VerdictRecord {
	return channel.VerdictRecord{Guest: p.slot, FlowID: p.flow, PacketID: p.id, Action: channel.ActionDrop}
}

// offload allows p and offloads its flow.
func offload(p pkt) channel.VerdictRecord {
	v := allow(p)
	v.Flow = channel.FlowOffload
	return v
}

// block drops p and blocks its flow.
func block(p pkt) channel.VerdictRecord {
	v := drop(p)
	v.Flow = channel.FlowBlock
	return v
}
