package inspectd

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/slowpath/engine"
)

// item is one punted packet waiting in a worker's queue; its bytes are in
// the chunk's data.
type item struct {
	guest    uint32
	dir      channel.Direction
	tap      bool
	flowID   uint64
	packetID uint64
	off, n   int
}

// chunk is the part of one PUNT_BATCH that goes to one worker, with its own
// copy of the packets: one allocation (usually recycled) per batch and
// worker, released as soon as the worker is done with it.
type chunk struct {
	bind  *binding
	recv  time.Time
	items []item
	data  []byte
	taps  int
}

var chunkPool = sync.Pool{New: func() any { return new(chunk) }}

func getChunk(b *binding, now time.Time) *chunk {
	c := chunkPool.Get().(*chunk)
	c.bind, c.recv = b, now
	return c
}

func putChunk(c *chunk) {
	if cap(c.data) > 4<<20 {
		c.data = nil // a rare giant batch is not kept around
	}
	c.items, c.data = c.items[:0], c.data[:0]
	c.bind, c.taps = nil, 0
	chunkPool.Put(c)
}

func (c *chunk) add(r channel.PuntRecord) {
	tap := r.Flags&channel.PuntTapCopy != 0
	c.items = append(c.items, item{guest: r.Guest, dir: r.Direction, tap: tap, flowID: r.FlowID, packetID: r.PacketID,
		off: len(c.data), n: len(r.Data)})
	c.data = append(c.data, r.Data...)
	if tap {
		c.taps++
	}
}

// worker inspects the flows sharded to it, one packet at a time, and batches
// its verdicts.
type worker struct {
	s     *Service
	q     chan *chunk
	space chan struct{} // signalled when the worker has taken work off its queue

	queuedPackets, queuedBytes atomic.Int64

	pkt engine.Packet // the packet being inspected

	// The verdict batch being filled, for bind.
	bind *binding
	recs []channel.VerdictRecord
	size int

	decided decisions
	total   window // punt received → verdict ready
	engine  window // time in the engines
}

func newWorker(s *Service) *worker {
	return &worker{s: s, q: make(chan *chunk, s.cfg.QueuePackets+1), space: make(chan struct{}, 1)}
}

// fits says whether a chunk of k packets and b bytes may be queued; an empty
// queue takes any chunk.
func (w *worker) fits(k, b int64) bool {
	queued := w.queuedPackets.Load()
	return queued == 0 || (queued+k <= int64(w.s.cfg.QueuePackets) && w.queuedBytes.Load()+b <= int64(w.s.cfg.QueueBytes))
}

// enqueue runs on the reader. While the queue is full it blocks, until the
// frame's deadline (set by the first stall of the frame); then the chunk is
// shed.
func (w *worker) enqueue(c *chunk, now time.Time, deadline *time.Time) {
	s := w.s
	k, b := int64(len(c.items)), int64(len(c.data))
	if !w.fits(k, b) {
		s.n.stalls.Add(1)
		if deadline.IsZero() {
			*deadline = now.Add(s.cfg.MaxStall)
		}
		clock := s.cfg.Clock
		start := clock.Now()
		for !w.fits(k, b) {
			wait := clock.Until(*deadline)
			stopped := false
			if wait > 0 {
				t := clock.NewTimer(wait)
				select {
				case <-w.space:
				case <-t.Chan():
				case <-s.stop:
					stopped = true
				}
				t.Stop()
			}
			if wait <= 0 || stopped {
				s.n.stallNanos.Add(uint64(clock.Since(start)))
				s.n.shed.Add(uint64(k))
				putChunk(c)
				return
			}
		}
		s.n.stallNanos.Add(uint64(clock.Since(start)))
	}
	w.queuedPackets.Add(k)
	w.queuedBytes.Add(b)
	select {
	case w.q <- c: // never full: the queue holds at most QueuePackets chunks
	case <-s.stop:
	}
}

func (w *worker) run() {
	defer w.s.wg.Done()
	for {
		var c *chunk
		select {
		case <-w.s.stop:
			return
		case c = <-w.q:
		default:
			// Nothing queued: whatever was judged goes out now, not on a
			// timer, so a lone punt is answered at once.
			w.flush()
			select {
			case c = <-w.q:
			case <-w.s.stop:
				return
			}
		}
		w.process(c)
		w.queuedPackets.Add(-int64(len(c.items)))
		w.queuedBytes.Add(-int64(len(c.data)))
		putChunk(c)
		select {
		case w.space <- struct{}{}:
		default:
		}
	}
}

func (w *worker) process(c *chunk) {
	s := w.s
	for i := range c.items {
		if c.bind == nil || s.cur.Load() != c.bind {
			s.n.droppedUnbound.Add(uint64(len(c.items) - i))
			return
		}
		it := &c.items[i]
		v, ok := w.judge(c, it)
		if !ok {
			continue
		}
		w.total.add(s.cfg.Clock.Since(c.recv))
		w.answer(c.bind, it, v)
	}
}

// judge gives a packet's verdict: the flow's final decision if one was
// taken (packets punted before the fast path applied it), else the engines'.
func (w *worker) judge(c *chunk, it *item) (engine.Verdict, bool) {
	k := flowRef{it.guest, it.flowID}
	if d, ok := w.decided.get(k, c.recv); ok {
		w.s.n.decided.Add(1)
		return d.verdict(it.tap), true
	}
	p := &w.pkt
	*p = engine.Packet{Guest: it.guest, FlowID: it.flowID, PacketID: it.packetID, Direction: it.dir, Tap: it.tap,
		Time: c.recv, Link: engine.LinkEthernet, Data: c.data[it.off : it.off+it.n : it.off+it.n]}
	start := w.s.cfg.Clock.Now()
	v, ok := w.inspect(p, it)
	w.engine.add(w.s.cfg.Clock.Since(start))
	if !ok {
		return v, false
	}
	w.s.n.inspected.Add(1)
	if c.bind.offload && (v.Flow == channel.FlowOffload || v.Flow == channel.FlowBlock) {
		// The engines are done with the flow and the fast path takes the
		// decision: free their state now rather than at their idle
		// timeout, and answer packets punted before the decision applied
		// from it.
		if it.flowID != 0 {
			w.decided.put(k, decision{action: v.Action, flow: v.Flow}, c.recv)
		}
		w.s.eng.FlowEnd(it.guest, it.flowID)
	}
	return v, true
}

// inspect runs the engines; a panic (an engine bug on a hostile packet) is
// counted and leaves the packet unanswered, for the fast path's fail policy.
func (w *worker) inspect(p *engine.Packet, it *item) (v engine.Verdict, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			w.s.panicked(it, r)
			ok = false
		}
	}()
	return w.s.eng.Inspect(p), true
}

// answer adds a packet's verdict to the batch, flushing it first when full.
func (w *worker) answer(b *binding, it *item, v engine.Verdict) {
	r := channel.VerdictRecord{Guest: it.guest, FlowID: it.flowID, PacketID: it.packetID, Action: v.Action, Flow: v.Flow}
	if r.Action < channel.ActionAllow || r.Action > channel.ActionReject {
		r.Action = channel.ActionAllow // an engine's zero Verdict
	}
	if r.Flow > channel.FlowBlock || !b.offload {
		r.Flow = channel.FlowKeepInspecting
	}
	if r.Action == channel.ActionReject && len(v.Reply) > 0 {
		if len(v.Reply) <= maxReply {
			r.Reply = append([]byte(nil), v.Reply...)
		} else {
			w.s.n.repliesTooLarge.Add(1)
		}
	}
	size := verdictHeader + len(r.Reply)
	if w.bind != b || len(w.recs) == maxRecords || 2+w.size+size > channel.MaxPayload {
		w.flush()
		w.bind = b
	}
	w.recs = append(w.recs, r)
	w.size += size
}

// flush sends the pending alerts and verdicts. Verdicts of a binding that
// is gone are dropped.
func (w *worker) flush() {
	s := w.s
	s.alerts.flush()
	if len(w.recs) == 0 {
		return
	}
	recs, b := w.recs, w.bind
	defer func() {
		clear(recs) // drop reply references
		w.recs, w.size = recs[:0], 0
	}()
	if s.cur.Load() != b {
		s.n.droppedUnbound.Add(uint64(len(recs)))
		return
	}
	payload, err := channel.AppendVerdictBatch(make([]byte, 0, 2+w.size), recs)
	if err != nil { // cannot happen: records are checked as they are added
		s.cfg.Log.WithError(err).Error("cannot encode verdicts")
		return
	}
	if !s.send(b, channel.TypeVerdictBatch, payload) {
		s.n.droppedUnbound.Add(uint64(len(recs)))
		return
	}
	s.n.verdictFrames.Add(1)
	for i := range recs {
		s.n.actions[recs[i].Action].Add(1)
		s.n.flows[recs[i].Flow].Add(1)
	}
}

type flowRef struct {
	guest uint32
	id    uint64
}

type decision struct {
	action channel.Action
	flow   channel.FlowDecision
}

// verdict answers a later packet of a decided flow: an offloaded flow's
// packets are allowed, a blocked flow's dropped as its blocking packet was
// (without a second block page); tap copies are only allowed.
func (d decision) verdict(tap bool) engine.Verdict {
	if tap || d.flow == channel.FlowOffload {
		return engine.Verdict{Action: channel.ActionAllow, Flow: d.flow}
	}
	return engine.Verdict{Action: d.action, Flow: d.flow}
}

// decisionGeneration is how long a flow's decision is remembered: between
// one and two generations, far longer than the fast path needs to apply it.
const decisionGeneration = 10 * time.Second

// decisions remembers the flows a worker decided to offload or block, in two
// generations so that forgetting costs nothing per entry.
type decisions struct {
	cur, prev map[flowRef]decision
	since     time.Time
}

func (d *decisions) rotate(now time.Time) {
	if d.cur == nil {
		d.cur, d.prev, d.since = map[flowRef]decision{}, map[flowRef]decision{}, now
	}
	if now.Sub(d.since) >= decisionGeneration {
		clear(d.prev)
		d.cur, d.prev, d.since = d.prev, d.cur, now
	}
}

func (d *decisions) get(k flowRef, now time.Time) (decision, bool) {
	d.rotate(now)
	if len(d.cur) == 0 && len(d.prev) == 0 {
		return decision{}, false
	}
	if v, ok := d.cur[k]; ok {
		return v, true
	}
	v, ok := d.prev[k]
	return v, ok
}

func (d *decisions) put(k flowRef, v decision, now time.Time) {
	d.rotate(now)
	d.cur[k] = v
}

// windowSize is how many recent samples the latency percentiles cover, per
// worker.
const windowSize = 1024

// window keeps a worker's recent latency samples; the worker writes, status
// reads.
type window struct {
	next   int
	filled atomic.Int64
	vals   [windowSize]atomic.Int64
}

func (w *window) add(d time.Duration) {
	w.vals[w.next].Store(int64(d))
	w.next = (w.next + 1) % windowSize
	if w.filled.Load() < windowSize {
		w.filled.Add(1)
	}
}

func (w *window) appendTo(out []int64) []int64 {
	n := int(w.filled.Load())
	for i := 0; i < n; i++ {
		out = append(out, w.vals[i].Load())
	}
	return out
}
