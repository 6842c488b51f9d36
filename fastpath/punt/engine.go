package punt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/fastpath/datapath"
)

// Guest is what the engine needs to know about a guest slot.
type Guest struct {
	ID         string
	FailClosed bool // inspection unavailable: drop (else pass)
	Tap        bool // packets are copies; verdicts only report
}

// Config configures an Engine.
type Config struct {
	Datapath Datapath
	// Device is where held packets are read and written back; the engine
	// closes it when Run ends. Nil: New makes the punt device (Datapath
	// must be a *datapath.Datapath) in Links' namespace and opens a packet
	// socket on it.
	Device  Device
	Links   *netlink.Handle // fastpathd's namespace; nil: the caller's
	GuestOf func(slot uint32) (Guest, bool)
	// VerdictTimeout bounds how long a packet is held (default 50ms).
	VerdictTimeout time.Duration
	// Bounds of what is held: per guest (packets and bytes, from the heap
	// budget's punt share) and in total.
	GuestPackets int
	GuestBytes   int
	TotalBytes   int
	// Events receives the slow path's events (alerts). An error says the
	// event could not be understood: it is counted (malformed_events) and
	// logged.
	Events func(channel.EventRecord) error
	Log    logrus.FieldLogger
	// Clock times verdicts, the heartbeat and idle flows; nil: the real
	// one.
	Clock clockwork.Clock
}

type flowKey struct {
	slot uint32
	flow uint64
}

type held struct {
	id       uint64
	slot     uint32
	flow     flowKey
	meta     datapath.PuntMeta
	raw      []byte // vnet header + the frame as taken, ready to go back
	mark     uint32 // where it goes back (datapath.BackMark)
	deadline time.Time
	decided  bool
	action   channel.Action
	reply    []byte
	why      string // what decided it, for counters
	released bool
}

// outPkt is a frame waiting to be written into the punt device: a held
// packet going back (h set) or a reject's answer.
type outPkt struct {
	h    *held
	b    []byte
	mark uint32
	err  error // the write's
}

type flowState struct {
	queue    []*held // arrival order
	offload  bool    // the slow path offloaded it: allow without asking
	blocked  bool    // the slow path blocked it: drop without asking
	dropped  uint32  // held packets of it we dropped (for the offload hand-over)
	unsynced bool    // the datapath was not told offload or block: tell it again
	lastSeen time.Time
}

// Engine moves held packets between the datapath and the slow path.
type Engine struct {
	cfg   Config
	dp    Datapath
	dev   Device
	log   logrus.FieldLogger
	clock clockwork.Clock

	sess atomic.Pointer[channel.Session]

	mu         sync.Mutex
	byID       map[uint64]*held
	flows      map[flowKey]*flowState
	order      []*held // arrival order, for timeouts
	guestPkts  map[uint32]int
	guestBytes map[uint32]int
	totalBytes int
	congested  map[uint32]bool // guests the datapath is told to shed
	flowSweep  time.Time       // when idle flows were last forgotten
	c          counters

	// Frames to write, in the order they were settled. They are written
	// after e.mu is released, by one goroutine at a time (flushing), so a
	// slow punt device holds up neither the session's reader nor the
	// timeouts, and a flow's packets still leave in order.
	out, spare []outPkt
	flushing   bool
	closing    bool       // the socket is about to close: nothing more is written
	flushed    *sync.Cond // on e.mu: flushing ended

	warned warnings
}

// New makes an engine on cfg.Device, or creates the punt device and opens
// the engine's packet socket on it.
func New(cfg Config) (*Engine, error) {
	if cfg.Datapath == nil || cfg.GuestOf == nil {
		return nil, errors.New("punt: Datapath and GuestOf are required")
	}
	setDefaults(&cfg)
	if cfg.Device == nil {
		dev, err := openDevice(cfg.Datapath, cfg.Links)
		if err != nil {
			return nil, err
		}
		cfg.Device = dev
	}
	e := newEngine(cfg)
	// Nothing is held and no slow path is bound yet, whatever an earlier
	// fastpathd left in the pinned maps: a guest it was shedding must not
	// stay shed for good, nor packets be punted to a session not there.
	if err := errors.Join(e.dp.SetSlowPath(false), e.clearCongestion()); err != nil {
		return nil, errors.Join(err, cfg.Device.Close())
	}
	return e, nil
}

func setDefaults(cfg *Config) {
	if cfg.VerdictTimeout <= 0 {
		cfg.VerdictTimeout = 50 * time.Millisecond
	}
	if cfg.GuestPackets <= 0 {
		cfg.GuestPackets = 128
	}
	if cfg.GuestBytes <= 0 {
		cfg.GuestBytes = 256 << 10
	}
	if cfg.TotalBytes <= 0 {
		cfg.TotalBytes = 32 << 20
	}
	if cfg.Log == nil {
		cfg.Log = logrus.StandardLogger()
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
}

// openDevice makes the punt device in links' namespace and opens a packet
// socket on it (in the caller's namespace: the socket belongs to it).
func openDevice(dp Datapath, links *netlink.Handle) (Device, error) {
	maker, ok := dp.(puntDevices)
	if !ok {
		return nil, fmt.Errorf("punt: no Device, and a %T cannot make the punt device", dp)
	}
	inIfindex, err := maker.EnsurePuntDevice(links)
	if err != nil {
		return nil, err
	}
	return openPacketSocket(inIfindex)
}

func newEngine(cfg Config) *Engine {
	e := &Engine{cfg: cfg, dp: cfg.Datapath, dev: cfg.Device, log: cfg.Log, clock: cfg.Clock, byID: map[uint64]*held{},
		flows: map[flowKey]*flowState{}, guestPkts: map[uint32]int{}, guestBytes: map[uint32]int{}, congested: map[uint32]bool{}}
	e.c.failOpen, e.c.failClosed = map[string]uint64{}, map[string]uint64{}
	e.flushed = sync.NewCond(&e.mu)
	return e
}

// clearCongestion tells the datapath to shed no guest. Under e.mu (or
// before the engine runs).
func (e *Engine) clearCongestion() error {
	clear(e.congested)
	var errs []error
	for slot := uint32(0); slot < datapath.MaxGuests; slot++ {
		if err := e.dp.SetCongested(slot, false); err != nil {
			errs = append(errs, err)
			break // the map is unusable: one error says it
		}
	}
	return errors.Join(errs...)
}

// How the engine keeps time: held packets are looked at every tick, the
// heartbeat is refreshed every beatEvery and tells the datapath fastpathd is
// alive for heartbeatTTL.
const (
	tickEvery    = 5 * time.Millisecond
	beatEvery    = 100 * time.Millisecond
	heartbeatTTL = 500 * time.Millisecond
)

// Run reads held packets, expires verdicts and keeps the datapath's
// heartbeat until ctx ends or reading fails; then every held packet gets its
// guest's fail decision and the datapath stops punting.
func (e *Engine) Run(parent context.Context) error {
	if err := e.dp.Heartbeat(heartbeatTTL); err != nil {
		return fmt.Errorf("datapath heartbeat: %w", err)
	}
	// The heartbeat stops with the reader: a datapath must not go on
	// punting to a device nobody reads.
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); e.tick(ctx) }()
	err := e.readLoop(ctx)
	cancel()
	wg.Wait()
	e.stop()
	return errors.Join(err, e.dev.Close())
}

// tick expires late verdicts and keeps the heartbeat until ctx ends. The
// heartbeat goes by the clock, not by counting ticks: a busy machine
// delivers fewer ticks.
func (e *Engine) tick(ctx context.Context) {
	t := e.clock.NewTicker(tickEvery)
	defer t.Stop()
	lastBeat := e.clock.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
			// The time now, not the tick's: ticks that came while
			// this goroutine was busy are dropped.
			now := e.clock.Now()
			e.expire(now)
			if now.Sub(lastBeat) < beatEvery {
				continue
			}
			lastBeat = now
			if err := e.dp.Heartbeat(heartbeatTTL); err != nil {
				e.warn(e.log.WithError(err), "datapath heartbeat")
			}
		}
	}
}

// stop ends punting, then lets go of what is held (in that order: nothing
// new may arrive at a device about to close) and waits for the last write.
func (e *Engine) stop() {
	if err := errors.Join(e.dp.SetSlowPath(false), e.dp.Heartbeat(0)); err != nil {
		e.log.WithError(err).Warn("cannot tell the datapath to stop punting: it stops by itself once the heartbeat lapses")
	}
	e.failAll("shutdown")
	e.mu.Lock()
	e.closing = true
	for e.flushing {
		e.flushed.Wait()
	}
	e.mu.Unlock()
}

// readBufSize holds the largest frame the punt device delivers: the virtio
// header, the metadata, Ethernet with a VLAN tag, and the largest IP packet
// (an IPv6 header and 65,535 bytes of payload).
const readBufSize = vnetHdrLen + datapath.PuntMetaSize + 18 + 40 + 65535

func (e *Engine) readLoop(ctx context.Context) error {
	buf := make([]byte, readBufSize)
	var batch []channel.PuntRecord
	var batchHeld []*held
	size := 2
	flush := func() {
		if len(batch) == 0 {
			return
		}
		e.send(batch, batchHeld, size)
		batch, batchHeld, size = batch[:0], batchHeld[:0], 2
	}
	for ctx.Err() == nil {
		n, ok, err := e.dev.Read(buf)
		switch {
		case errors.Is(err, ErrTruncated):
			e.mu.Lock()
			e.c.malformed++
			e.mu.Unlock()
			e.warn(e.log.WithError(err), "held packet lost: larger than any the punt device should carry")
			continue
		case transientReadError(err):
			e.warn(e.log.WithError(err), "reading held packets")
			continue
		case err != nil:
			flush()
			return fmt.Errorf("punt socket: %w", err)
		}
		if !ok {
			flush() // nothing more waiting: send what we have now
			if err := e.dev.Wait(100 * time.Millisecond); err != nil {
				return fmt.Errorf("punt socket: %w", err)
			}
			continue
		}
		raw := append([]byte(nil), buf[:n]...)
		rec, h, ok := e.take(raw)
		if !ok {
			continue
		}
		// A batch leaves when full or when nothing more is waiting: under
		// a flood the socket never runs dry, and packets must not wait
		// for one.
		if size+channel.PuntRecordSize(rec) > channel.MaxPayload || len(batch) == 64 {
			flush()
		}
		batch = append(batch, rec)
		batchHeld = append(batchHeld, h)
		size += channel.PuntRecordSize(rec)
	}
	flush()
	return nil
}

// take turns a frame read from the punt device into a punt record and, for
// a held (not tapped) packet, a held entry. ok=false: decided already.
func (e *Engine) take(raw []byte) (channel.PuntRecord, *held, bool) {
	defer e.flush()
	meta, raw, err := unwrap(raw)
	if err != nil {
		e.mu.Lock()
		e.c.malformed++
		e.mu.Unlock()
		e.warn(e.log.WithError(err), "held packet without metadata")
		return channel.PuntRecord{}, nil, false
	}
	dir := channel.ToGuest
	if meta.FromGuest {
		dir = channel.FromGuest
	}
	rec := channel.PuntRecord{Guest: meta.Slot, Direction: dir, FlowID: meta.FlowID, PacketID: meta.PacketID, Data: raw[vnetHdrLen:]}
	if meta.Flags&datapath.MetaTap != 0 {
		rec.Flags = channel.PuntTapCopy
		e.mu.Lock()
		e.c.tapCopies++
		e.mu.Unlock()
		return rec, nil, true
	}
	if h := e.hold(meta, raw); h != nil {
		return rec, h, true
	}
	return channel.PuntRecord{}, nil, false
}

// unwrap reads a held packet's metadata and drops it in place: what remains
// is the virtio header and the packet as the vNIC saw it, for the slow path
// and, unchanged, to go back.
func unwrap(raw []byte) (datapath.PuntMeta, []byte, error) {
	if len(raw) < vnetHdrLen+14+datapath.PuntMetaSize {
		return datapath.PuntMeta{}, nil, fmt.Errorf("a %d-byte frame is shorter than a held packet's metadata", len(raw))
	}
	meta, err := datapath.ParsePuntMeta(raw[vnetHdrLen:])
	if err != nil {
		return meta, nil, err
	}
	copy(raw[datapath.PuntMetaSize:], raw[:vnetHdrLen])
	raw = raw[datapath.PuntMetaSize:]
	stripFront(raw[:vnetHdrLen], uint16(datapath.PuntMetaSize))
	return meta, raw, nil
}

// hold keeps a held packet until its verdict, or decides it at once (then
// it returns nil): its flow is decided already, or no verdict can be had.
func (e *Engine) hold(meta datapath.PuntMeta, raw []byte) *held {
	g, known := e.guest(meta.Slot)
	now := e.clock.Now()
	h := &held{id: meta.PacketID, slot: meta.Slot, flow: flowKey{meta.Slot, meta.FlowID}, meta: meta, raw: raw,
		mark: datapath.BackMark(meta.Ifindex, !meta.FromGuest, false), deadline: now.Add(e.cfg.VerdictTimeout)}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.c.held++
	fs := e.flows[h.flow]
	if fs == nil {
		fs = &flowState{}
		e.flows[h.flow] = fs
	}
	fs.lastSeen = now
	if fs.unsynced {
		// The datapath still punts a flow it was not told about: this
		// packet is the next chance to tell it.
		e.syncFlow(h.flow, fs)
	}
	fs.queue = append(fs.queue, h)
	e.byID[h.id] = h
	e.order = append(e.order, h)
	e.account(h, +1)
	switch {
	case !known:
		// No guest holds the slot (yet, or any more): nothing says its
		// packets may pass.
		e.failOne(h, g, "unknown guest")
	case fs.blocked:
		e.decide(h, channel.ActionDrop, nil, "blocked")
	case fs.offload:
		// Offloaded, but the datapath still sends us the flow until
		// every earlier held packet is back: pass it on, in order.
		e.decide(h, channel.ActionAllow, nil, "offloaded")
	case e.sess.Load() == nil:
		e.failOne(h, g, "unbound")
	case e.guestPkts[h.slot] > e.cfg.GuestPackets || e.guestBytes[h.slot] > e.cfg.GuestBytes || e.totalBytes > e.cfg.TotalBytes:
		e.failOne(h, g, "queue full")
	default:
		return h
	}
	e.release(fs)
	return nil
}

// send ships a batch whose payload is size bytes; a batch that cannot be
// sent fails its packets.
func (e *Engine) send(batch []channel.PuntRecord, hs []*held, size int) {
	s := e.sess.Load()
	var err error
	if s == nil {
		err = errors.New("no slow path bound")
	} else {
		// A fresh buffer each time: the session may keep it queued.
		var p []byte
		if p, err = channel.AppendPuntBatch(make([]byte, 0, size), batch); err == nil {
			err = s.Send(channel.TypePuntBatch, p)
		}
	}
	defer e.flush()
	e.mu.Lock()
	defer e.mu.Unlock()
	if err == nil {
		e.c.sent += uint64(len(batch))
		e.c.batches++
		return
	}
	why := sendFailure(s, err)
	for _, h := range hs {
		if h == nil || h.decided {
			continue
		}
		g, _ := e.guest(h.slot)
		e.failOne(h, g, why)
		if fs := e.flows[h.flow]; fs != nil {
			e.release(fs)
		}
	}
}

// sendFailure names why a batch could not be sent to s, for the fail
// counters.
func sendFailure(s *channel.Session, err error) string {
	switch {
	case s == nil, errors.Is(err, channel.ErrSessionClosed):
		return "unbound"
	case errors.Is(err, channel.ErrQueueFull):
		return "queue full"
	}
	select {
	case <-s.Done(): // a write to the slow path failed and ended the session
		return "unbound"
	default:
		return "send error"
	}
}

// guest is what the engine knows of slot's guest; a slot no guest holds
// fails closed.
func (e *Engine) guest(slot uint32) (Guest, bool) {
	g, ok := e.cfg.GuestOf(slot)
	if !ok {
		g = Guest{FailClosed: true}
	}
	return g, ok
}

// decide settles a held packet; release delivers it when its turn comes.
func (e *Engine) decide(h *held, a channel.Action, reply []byte, why string) {
	if h.decided {
		return
	}
	h.decided, h.action, h.reply, h.why = true, a, reply, why
}

// failOne applies the guest's fail policy to one held packet.
func (e *Engine) failOne(h *held, g Guest, why string) {
	if g.FailClosed {
		e.c.failClosed[why]++
		e.decide(h, channel.ActionDrop, nil, why)
		return
	}
	e.c.failOpen[why]++
	e.decide(h, channel.ActionAllow, nil, why)
}

// account adds (sign +1) or removes (-1) a held packet from its guest's and
// the host's totals, and tells the datapath to shed the guest's inspected
// traffic while the guest is at its bound (until it is back under half).
func (e *Engine) account(h *held, sign int) {
	e.guestPkts[h.slot] += sign
	e.guestBytes[h.slot] += sign * len(h.raw)
	e.totalBytes += sign * len(h.raw)
	pkts, bytes := e.guestPkts[h.slot], e.guestBytes[h.slot]
	full := pkts >= e.cfg.GuestPackets || bytes >= e.cfg.GuestBytes || e.totalBytes >= e.cfg.TotalBytes
	switch {
	case full && !e.congested[h.slot]:
		e.congested[h.slot] = true
		e.c.congestions++
		if err := e.dp.SetCongested(h.slot, true); err != nil {
			e.warn(e.log.WithError(err).WithField("slot", h.slot), "cannot tell the datapath to shed")
		}
	case e.congested[h.slot] && e.calm(h.slot):
		e.uncongest(h.slot)
	}
	// A guest can be shed for the host's bound while its own packets are
	// few, and its last one can leave while the host is still busy: once
	// the host is calm, every shed guest is looked at, not only this one.
	if sign < 0 && len(e.congested) > 0 && e.totalBytes <= e.cfg.TotalBytes/2 {
		for slot := range e.congested {
			if e.calm(slot) {
				e.uncongest(slot)
			}
		}
	}
}

// calm says slot's guest and the host are back under half their bounds.
func (e *Engine) calm(slot uint32) bool {
	return e.guestPkts[slot] <= e.cfg.GuestPackets/2 && e.guestBytes[slot] <= e.cfg.GuestBytes/2 &&
		e.totalBytes <= e.cfg.TotalBytes/2
}

func (e *Engine) uncongest(slot uint32) {
	delete(e.congested, slot)
	if err := e.dp.SetCongested(slot, false); err != nil {
		e.warn(e.log.WithError(err).WithField("slot", slot), "cannot tell the datapath to stop shedding")
	}
}

// release settles a flow's decided packets. Dropped and rejected ones leave
// at once, wherever they are (order only matters for what is delivered);
// allowed ones leave from the head, so the flow's packets are delivered in
// the order they came.
func (e *Engine) release(fs *flowState) {
	kept := fs.queue[:0]
	for _, h := range fs.queue {
		if h.decided && h.action != channel.ActionAllow {
			e.finish(h, fs)
			continue
		}
		kept = append(kept, h)
	}
	clear(fs.queue[len(kept):])
	fs.queue = kept
	for len(fs.queue) > 0 && fs.queue[0].decided {
		h := fs.queue[0]
		fs.queue = fs.queue[1:]
		e.finish(h, fs)
	}
}

// finish delivers, drops or answers one decided packet and forgets it.
// What goes back is written by flush, after e.mu is released.
func (e *Engine) finish(h *held, fs *flowState) {
	h.released = true
	delete(e.byID, h.id)
	e.account(h, -1)
	switch h.action {
	case channel.ActionAllow:
		e.out = append(e.out, outPkt{h: h, b: h.raw, mark: h.mark})
	case channel.ActionReject:
		e.c.rejected++
		e.dropped(h, fs)
		e.answer(h)
	default:
		// Fail-closed drops are counted by their reason already.
		if h.why == "verdict" || h.why == "blocked" {
			e.c.droppedByVerdict++
		}
		e.dropped(h, fs)
	}
}

// dropped counts a held packet that will not come back through the vNIC;
// the datapath's offload hand-over waits for the others only.
func (e *Engine) dropped(h *held, fs *flowState) {
	fs.dropped++
	if fs.offload {
		e.syncFlow(h.flow, fs)
	}
}

// syncFlow tells the datapath what was decided for a flow: block, or
// offload once every held packet of it not dropped is back. On failure the
// flow's next held packet tries again; meanwhile the engine decides the
// flow's packets itself, so a failure costs the kernel's shortcut, never a
// packet. Under e.mu.
func (e *Engine) syncFlow(k flowKey, fs *flowState) {
	verdict, dropped := uint8(datapath.DecideOffload), fs.dropped
	if fs.blocked {
		verdict, dropped = datapath.DecideBlock, 0
	}
	fs.unsynced = !e.setFlowDecision(k, verdict, dropped)
}

// setFlowDecision tells the datapath a flow's decision; a failure is counted
// (flow_decision_errors) and logged at most once a second. Under e.mu.
func (e *Engine) setFlowDecision(k flowKey, verdict uint8, dropped uint32) bool {
	err := e.dp.SetFlowDecision(k.slot, k.flow, verdict, dropped)
	if err == nil {
		return true
	}
	e.c.flowDecisionErrors++
	e.warn(e.log.WithError(err).WithFields(logrus.Fields{"slot": k.slot, "flow_id": k.flow, "decision": decisionName(verdict),
		"flow_decision_errors": e.c.flowDecisionErrors}),
		"cannot tell the datapath a flow's decision: the flow stays punted until it can")
	return false
}

func decisionName(verdict uint8) string {
	switch verdict {
	case datapath.DecideOffload:
		return "offload"
	case datapath.DecideBlock:
		return "block"
	}
	return fmt.Sprint(verdict)
}

// answer sends a rejected packet's sender the slow path's reply or a reset.
func (e *Engine) answer(h *held) {
	frame := h.raw[vnetHdrLen:]
	l3 := h.reply
	if l3 == nil {
		var err error
		if l3, err = rejectPacket(frame); err != nil {
			e.log.WithError(err).Debug("cannot answer a rejected packet")
			return
		}
	}
	out := make([]byte, vnetHdrLen, vnetHdrLen+14+len(l3))
	out = append(out, frame[6:12]...) // to the sender: swap the addresses
	out = append(out, frame[0:6]...)
	etype := uint16(0x0800)
	if len(l3) > 0 && l3[0]>>4 == 6 {
		etype = 0x86dd
	}
	out = binary.BigEndian.AppendUint16(out, etype)
	out = append(out, l3...)
	// Toward the sender: to the guest if the guest sent it.
	e.out = append(e.out, outPkt{b: out, mark: datapath.BackMark(h.meta.Ifindex, h.meta.FromGuest, true)})
}

// writeBudget bounds how long one flush waits for a full punt device before
// it gives up on the frames it writes.
const writeBudget = 20 * time.Millisecond

// flush writes what finish queued, in order, outside e.mu. One goroutine
// writes at a time; one that finds another writing leaves its frames to it
// (the writer takes the queue until it finds it empty).
func (e *Engine) flush() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.flushing || e.closing || len(e.out) == 0 {
		return
	}
	e.flushing = true
	for len(e.out) > 0 {
		out := e.out
		e.out = e.spare[:0]
		e.mu.Unlock()
		// The device's own wait, in real time whatever e.clock says.
		deadline := time.Now().Add(writeBudget)
		for i := range out {
			out[i].err = e.dev.Write(out[i].b, out[i].mark, deadline)
		}
		e.mu.Lock()
		var failed error
		for _, o := range out {
			switch {
			case o.err != nil:
				e.c.writeErrors++
				failed = o.err
				if o.h != nil {
					if fs := e.flows[o.h.flow]; fs != nil {
						e.dropped(o.h, fs)
					}
				}
			case o.h != nil:
				e.c.reinjected++
			default:
				e.c.answers++
			}
		}
		if failed != nil {
			e.warn(e.log.WithError(failed).WithField("write_errors", e.c.writeErrors), "writing held packets back")
		}
		clear(out)
		e.spare = out[:0]
	}
	e.flushing = false
	e.flushed.Broadcast()
}

// expire gives packets whose verdict is late their guest's fail decision.
func (e *Engine) expire(now time.Time) {
	defer e.flush()
	e.mu.Lock()
	defer e.mu.Unlock()
	i := 0
	for ; i < len(e.order); i++ {
		h := e.order[i]
		if h.released {
			continue
		}
		if now.Before(h.deadline) {
			break
		}
		if !h.decided {
			g, _ := e.guest(h.slot)
			e.failOne(h, g, "timeout")
			if fs := e.flows[h.flow]; fs != nil {
				e.release(fs)
			}
		}
	}
	// Entries that need no timeout any more leave the front.
	for len(e.order) > 0 && (e.order[0].released || e.order[0].decided) {
		e.order[0] = nil // the backing array must not keep the packet
		e.order = e.order[1:]
	}
	// Idle flows are forgotten once a second, not on every tick: the walk
	// holds the mutex the punt reader needs.
	if now.Sub(e.flowSweep) < time.Second {
		return
	}
	e.flowSweep = now
	for k, fs := range e.flows {
		if len(fs.queue) == 0 && now.Sub(fs.lastSeen) > 30*time.Second {
			delete(e.flows, k)
		}
	}
}

// failAll decides every held packet by its guest's fail policy at once;
// then nothing is held, and no guest is shed.
func (e *Engine) failAll(why string) {
	defer e.flush()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, h := range e.order {
		if !h.released && !h.decided {
			g, _ := e.guest(h.slot)
			e.failOne(h, g, why)
		}
	}
	for _, fs := range e.flows {
		e.release(fs)
	}
	clear(e.order)
	e.order = e.order[:0]
	if err := e.clearCongestion(); err != nil {
		e.log.WithError(err).Warn("cannot tell the datapath to stop shedding")
	}
}

// Bound is called when a slow path binds: if it inspects, punting starts.
func (e *Engine) Bound(s *channel.Session, r channel.Result) {
	if !r.Negotiated.Has(channel.CapIPS) && !r.Negotiated.Has(channel.CapWRS) {
		e.log.WithField("capabilities", r.Negotiated.String()).Warn("bound slow path inspects nothing: inspected flows follow their fail policy")
		return
	}
	e.sess.Store(s)
	if err := e.dp.SetSlowPath(true); err != nil {
		e.log.WithError(err).Error("cannot start punting")
	}
}

// Unbound stops punting and fails whatever was held for the lost slow path.
func (e *Engine) Unbound(error) {
	s := e.sess.Load()
	if s != nil {
		select {
		case <-s.Done():
		default:
			// The session in use is live: a later binding's, which
			// this late word about an earlier one must not undo.
			e.log.Warn("a lost binding reported after the next one was bound: ignored")
			return
		}
	}
	if !e.sess.CompareAndSwap(s, nil) {
		return // the next binding came meanwhile
	}
	if err := e.dp.SetSlowPath(false); err != nil {
		e.log.WithError(err).Error("cannot stop punting")
	}
	e.failAll("unbound")
}

// HandleFrame takes verdicts and events from the slow path.
func (e *Engine) HandleFrame(f channel.Frame) error {
	switch f.Type {
	case channel.TypeVerdictBatch:
		vs, err := channel.DecodeVerdictBatch(f.Payload, nil)
		if err != nil {
			return err
		}
		e.verdicts(vs)
	case channel.TypeEventBatch:
		recs, err := channel.DecodeEventBatch(f.Payload, nil)
		if err != nil {
			return err
		}
		for _, r := range recs {
			r.Body = append([]byte(nil), r.Body...)
			e.event(r)
		}
	}
	return nil
}

// event hands one of the slow path's events on; one it cannot be made
// sense of is counted and logged, at most once a second (a slow path that
// sends them sends many).
func (e *Engine) event(r channel.EventRecord) {
	if e.cfg.Events == nil {
		return
	}
	err := e.cfg.Events(r)
	if err == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.c.malformedEvents++
	e.warn(e.log.WithError(err).WithFields(logrus.Fields{"kind": r.Kind.String(), "slot": r.Guest, "body_bytes": len(r.Body),
		"malformed_events": e.c.malformedEvents}), "slow path event not understood")
}

func (e *Engine) verdicts(vs []channel.VerdictRecord) {
	defer e.flush()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, v := range vs {
		e.c.verdicts[v.Action]++
		h := e.byID[v.PacketID]
		fk := flowKey{v.Guest, v.FlowID}
		if h == nil || h.flow != fk {
			e.unheldVerdict(v, fk)
			continue
		}
		fs := e.flows[fk]
		e.flowVerdict(v.Flow, fk, fs)
		var reply []byte
		if len(v.Reply) > 0 {
			reply = append([]byte(nil), v.Reply...)
		}
		e.decide(h, v.Action, reply, "verdict")
		if fs.blocked {
			for _, later := range fs.queue {
				e.decide(later, channel.ActionDrop, nil, "blocked")
			}
		}
		e.release(fs)
	}
}

// unheldVerdict takes a verdict for no packet held: a tap copy's, or one
// that came after its packet was decided by timeout. Under e.mu.
func (e *Engine) unheldVerdict(v channel.VerdictRecord, fk flowKey) {
	g, ok := e.cfg.GuestOf(v.Guest)
	if !ok || !g.Tap {
		e.c.late++
		return
	}
	e.c.tapVerdicts++
	if v.Action != channel.ActionAllow {
		e.c.tapWouldDrop++
	}
	if v.Flow == channel.FlowOffload {
		// A tap flow has no state here to retry from: the verdict on
		// its next copy tries again. The failure is counted and logged.
		e.setFlowDecision(fk, datapath.DecideOffload, 0)
	}
}

// flowVerdict applies what the slow path decided for a held packet's whole
// flow. Under e.mu.
func (e *Engine) flowVerdict(d channel.FlowDecision, fk flowKey, fs *flowState) {
	switch d {
	case channel.FlowOffload:
		if !fs.offload && !fs.blocked {
			fs.offload = true
			e.c.offloads++
			// The datapath switches once every held packet of the flow
			// has come back; those still held are passed on in order
			// as their own verdicts arrive.
			e.syncFlow(fk, fs)
		}
	case channel.FlowBlock:
		if !fs.blocked {
			fs.blocked, fs.offload = true, false
			e.c.blocks++
			e.syncFlow(fk, fs)
		}
	}
}

// warn logs msg at most once a second (warnings).
func (e *Engine) warn(l logrus.FieldLogger, msg string) {
	if e.warned.due(msg, e.clock.Now()) {
		l.Warn(msg)
	}
}

// warnings lets each warning through at most once a second: a broken map, a
// stuck device or a confused slow path would repeat it for every packet. The
// counters keep the exact totals.
type warnings struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// due says whether msg may be logged at now, and if so notes that it was.
func (w *warnings) due(msg string, now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if last, ok := w.last[msg]; ok && now.Sub(last) < time.Second {
		return false
	}
	if w.last == nil {
		w.last = map[string]time.Time{}
	}
	w.last[msg] = now
	return true
}
