package flow

import (
	"encoding/binary"
	"hash/fnv"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/palisade/palisade/slowpath/inspect/packet"
	"github.com/palisade/palisade/slowpath/inspect/stream"
)

// Side is a packet's direction within its flow.
type Side uint8

const (
	ToServer Side = 0 // sent by the client (the end that sent the SYN, or the first packet)
	ToClient Side = 1
)

func (s Side) String() string {
	if s == ToServer {
		return "to_server"
	}
	return "to_client"
}

// Key identifies a flow independent of direction.
type Key struct {
	Guest uint32
	Proto uint8
	Lo    netip.AddrPort
	Hi    netip.AddrPort
}

// KeyOf is the direction-independent key of a packet's flow.
func KeyOf(guest uint32, p *packet.Packet) Key {
	a := netip.AddrPortFrom(p.Src, p.SrcPort)
	b := netip.AddrPortFrom(p.Dst, p.DstPort)
	if p.Proto == packet.ProtoICMP || p.Proto == packet.ProtoICMPv6 || !p.HasPorts() {
		a, b = netip.AddrPortFrom(p.Src, 0), netip.AddrPortFrom(p.Dst, 0)
	}
	if b.Compare(a) < 0 {
		a, b = b, a
	}
	return Key{Guest: guest, Proto: p.Proto, Lo: a, Hi: b}
}

func (k Key) hash() uint64 {
	h := fnv.New64a()
	var b [4 + 1 + 2*18]byte
	binary.BigEndian.PutUint32(b[:], k.Guest)
	b[4] = k.Proto
	lo, hi := k.Lo.Addr().As16(), k.Hi.Addr().As16()
	copy(b[5:], lo[:])
	binary.BigEndian.PutUint16(b[21:], k.Lo.Port())
	copy(b[23:], hi[:])
	binary.BigEndian.PutUint16(b[39:], k.Hi.Port())
	h.Write(b[:])
	return h.Sum64()
}

// Flow is one connection. Its fields other than closed are touched only by
// the goroutine inspecting the flow's current packet: the fast path never
// inspects two packets of a flow at once.
type Flow[S any] struct {
	Key    Key
	ID     uint64 // the EVE flow_id
	Client netip.AddrPort
	Server netip.AddrPort
	State  S

	streams [2]*stream.Stream
	seen    [2]bool
	syn     bool   // client SYN
	isn     uint32 // its sequence number
	synAck  bool   // server SYN/ACK
	est     bool
	fin     [2]bool
	last    time.Time // guarded by the shard lock
	closed  atomic.Bool
	fastIDs []uint64
}

// Established is Suricata's flow:established: for TCP the three-way
// handshake completed; for other protocols a packet was seen each way.
func (f *Flow[S]) Established() bool { return f.est }

// Stream is one direction's reassembled TCP stream (nil for other protocols).
func (f *Flow[S]) Stream(s Side) *stream.Stream { return f.streams[s] }

// StreamGaps is the number of gaps both directions' streams skipped.
func (f *Flow[S]) StreamGaps() int {
	n := 0
	for _, s := range f.streams {
		if s != nil {
			n += s.Gaps
		}
	}
	return n
}

// Track updates the flow's state with a packet the caller found with Get and
// returns how many bytes it appended to that side's stream.
func (f *Flow[S]) Track(p *packet.Packet, side Side, limits stream.Limits) int {
	f.seen[side] = true
	if p.Proto != packet.ProtoTCP || p.Fragment {
		if f.seen[ToServer] && f.seen[ToClient] {
			f.est = true
		}
		return 0
	}
	st := f.streams[side]
	if st == nil {
		st = stream.New(limits)
		f.streams[side] = st
	}
	switch {
	case p.Flags&(packet.SYN|packet.ACK) == packet.SYN && side == ToServer:
		f.syn, f.isn = true, p.Seq
		st.Start(p.Seq)
	case p.Flags&(packet.SYN|packet.ACK) == packet.SYN|packet.ACK && side == ToClient:
		if f.syn {
			f.synAck = true
		}
		st.Start(p.Seq)
	case p.Flags&packet.ACK != 0 && side == ToServer && f.synAck && !f.est:
		f.est = true
	}
	if p.Flags&packet.RST != 0 {
		f.closed.Store(true)
	}
	if p.Flags&packet.FIN != 0 {
		f.fin[side] = true
		if f.fin[ToServer] && f.fin[ToClient] {
			f.closed.Store(true)
		}
	}
	if p.Flags&(packet.ACK|packet.RST) == packet.ACK {
		// The acknowledgement may show that the other direction lost a
		// segment on its way here: its stream then skips the gap (the
		// bytes that delivers are read by the caller from Data).
		if other := f.streams[1-side]; other != nil {
			other.Acked(p.Ack)
		}
	}
	if p.Flags&packet.SYN != 0 {
		return 0
	}
	return st.Add(p.Seq, p.Payload)
}

const shardCount = 64

type idKey struct {
	guest uint32
	id    uint64
}

type shard[S any] struct {
	mu        sync.Mutex
	flows     map[Key]*Flow[S]
	ids       map[idKey]Key
	lastSweep time.Time
}

// Timeouts for idle flows, measured in packet time.
const (
	DefaultIdleTimeout   = 10 * time.Minute
	DefaultClosedTimeout = 30 * time.Second
	sweepEvery           = 10 * time.Second
)

// Table holds the flows of one engine, sharded so that different flows can
// be inspected concurrently.
type Table[S any] struct {
	shards        [shardCount]shard[S]
	IdleTimeout   time.Duration
	ClosedTimeout time.Duration
	// Release, if set, is called for every flow the table forgets.
	Release func(*Flow[S])
}

// NewTable returns an empty table with the default timeouts.
func NewTable[S any]() *Table[S] {
	t := &Table[S]{IdleTimeout: DefaultIdleTimeout, ClosedTimeout: DefaultClosedTimeout}
	for i := range t.shards {
		t.shards[i].flows = make(map[Key]*Flow[S])
		t.shards[i].ids = make(map[idKey]Key)
	}
	return t
}

// Get finds or creates the flow of p and says which side sent it. fastID,
// when not zero, is remembered so End can find the flow by it.
func (t *Table[S]) Get(guest uint32, fastID uint64, p *packet.Packet, now time.Time) (*Flow[S], Side) {
	k := KeyOf(guest, p)
	h := k.hash()
	sh := &t.shards[h%shardCount]
	sh.mu.Lock()
	t.sweep(sh, now)
	f := sh.flows[k]
	var replaced *Flow[S]
	if f != nil && newConnection(f, p) {
		// The 5-tuple is reused by a new connection: forget the old flow
		// (its decisions and streams) rather than continue it.
		replaced, f = f, nil
		delete(sh.flows, k)
	}
	if f == nil {
		f = &Flow[S]{Key: k, ID: (h ^ uint64(now.UnixNano())) & (1<<53 - 1)}
		src, dst := netip.AddrPortFrom(p.Src, p.SrcPort), netip.AddrPortFrom(p.Dst, p.DstPort)
		if !p.HasPorts() {
			src, dst = netip.AddrPortFrom(p.Src, 0), netip.AddrPortFrom(p.Dst, 0)
		}
		f.Client, f.Server = src, dst
		// A SYN/ACK seen first (its SYN was missed) still names the client.
		if p.Proto == packet.ProtoTCP && p.Flags&(packet.SYN|packet.ACK) == packet.SYN|packet.ACK {
			f.Client, f.Server = dst, src
		}
		sh.flows[k] = f
	}
	f.last = now
	sh.mu.Unlock()
	if replaced != nil {
		t.forgetAliases(replaced, 0)
		if t.Release != nil {
			t.Release(replaced)
		}
	}
	if fastID != 0 {
		t.alias(guest, fastID, f)
	}
	side := ToServer
	if p.Src != f.Client.Addr() || (p.HasPorts() && p.SrcPort != f.Client.Port()) {
		side = ToClient
	}
	return f, side
}

// newConnection says whether p, for the 5-tuple of f, opens a new TCP
// connection: a bare SYN that is not f's own (retransmitted) SYN.
func newConnection[S any](f *Flow[S], p *packet.Packet) bool {
	if p.Proto != packet.ProtoTCP || p.Fragment || p.Flags&(packet.SYN|packet.ACK|packet.RST) != packet.SYN {
		return false
	}
	fromClient := p.Src == f.Client.Addr() && p.SrcPort == f.Client.Port()
	return !f.syn || !fromClient || p.Seq != f.isn
}

func (t *Table[S]) alias(guest uint32, fastID uint64, f *Flow[S]) {
	ik := idKey{guest, fastID}
	sh := &t.shards[fastID%shardCount]
	sh.mu.Lock()
	if _, ok := sh.ids[ik]; !ok {
		sh.ids[ik] = f.Key
		f.fastIDs = append(f.fastIDs, fastID)
	}
	sh.mu.Unlock()
}

// End forgets the flow the fast path knew as fastID.
func (t *Table[S]) End(guest uint32, fastID uint64) {
	sh := &t.shards[fastID%shardCount]
	sh.mu.Lock()
	k, ok := sh.ids[idKey{guest, fastID}]
	delete(sh.ids, idKey{guest, fastID})
	sh.mu.Unlock()
	if !ok {
		return
	}
	fs := &t.shards[k.hash()%shardCount]
	fs.mu.Lock()
	f := fs.flows[k]
	delete(fs.flows, k)
	fs.mu.Unlock()
	if f != nil {
		t.forgetAliases(f, fastID)
		if t.Release != nil {
			t.Release(f)
		}
	}
}

func (t *Table[S]) forgetAliases(f *Flow[S], except uint64) {
	for _, id := range f.fastIDs {
		if id == except {
			continue
		}
		sh := &t.shards[id%shardCount]
		sh.mu.Lock()
		delete(sh.ids, idKey{f.Key.Guest, id})
		sh.mu.Unlock()
	}
}

// sweep drops idle flows; called with sh.mu held.
func (t *Table[S]) sweep(sh *shard[S], now time.Time) {
	if now.Sub(sh.lastSweep) < sweepEvery {
		return
	}
	sh.lastSweep = now
	var gone []*Flow[S]
	for k, f := range sh.flows {
		limit := t.IdleTimeout
		if f.closed.Load() {
			limit = t.ClosedTimeout
		}
		if now.Sub(f.last) > limit {
			delete(sh.flows, k)
			gone = append(gone, f)
		}
	}
	// Alias cleanup takes other shards' locks: not while holding this one.
	if len(gone) == 0 {
		return
	}
	sh.mu.Unlock()
	for _, f := range gone {
		t.forgetAliases(f, 0)
		if t.Release != nil {
			t.Release(f)
		}
	}
	sh.mu.Lock()
}

// Len is the number of flows tracked.
func (t *Table[S]) Len() int {
	n := 0
	for i := range t.shards {
		t.shards[i].mu.Lock()
		n += len(t.shards[i].flows)
		t.shards[i].mu.Unlock()
	}
	return n
}
