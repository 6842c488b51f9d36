package engine

import (
	"sync"
	"time"

	"github.com/palisade/palisade/fastpath/channel"
)

// DefaultOffloadAfter is slowpathd's --offload-after default.
const DefaultOffloadAfter = 16

// offloadIdle is how long a flow that never reached its count is
// remembered, as the other engines' flow tables (in packet time).
const offloadIdle = 10 * time.Minute

const offloadShards = 64

// OffloadAfter is the rule-free engine: it allows every packet and offloads
// a flow once it has seen N of its packets, both directions counted. With N
// 0 it never offloads. Flows are keyed by guest and the fast path's flow id,
// so packets without one (offline, FlowID 0) are never offloaded.
//
// In a Chain a flow is offloaded only when every engine offloads it, so this
// engine is the one that ends inspection of flows the others have no more
// interest in (and cannot end it while another engine still wants packets).
type OffloadAfter struct {
	n      uint32
	shards [offloadShards]offloadShard
}

type flowRef struct {
	guest uint32
	id    uint64
}

type counted struct {
	packets uint32
	last    time.Time
}

type offloadShard struct {
	mu        sync.Mutex
	flows     map[flowRef]counted
	lastSweep time.Time
}

var _ Engine = (*OffloadAfter)(nil)

// NewOffloadAfter offloads flows after n packets (n ≤ 0: never).
func NewOffloadAfter(n int) *OffloadAfter {
	e := &OffloadAfter{n: uint32(max(n, 0))}
	for i := range e.shards {
		e.shards[i].flows = make(map[flowRef]counted)
	}
	return e
}

func (e *OffloadAfter) Name() string { return "offload-after" }

var keepInspecting = Verdict{Action: channel.ActionAllow, Flow: channel.FlowKeepInspecting}

func (e *OffloadAfter) Inspect(p *Packet) Verdict {
	if e.n == 0 || p.FlowID == 0 {
		return keepInspecting
	}
	now := p.Time
	if now.IsZero() {
		now = time.Now()
	}
	k := flowRef{p.Guest, p.FlowID}
	sh := &e.shards[p.FlowID%offloadShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.sweep(now)
	c := sh.flows[k]
	if c.packets < e.n {
		c.packets++
	}
	c.last = now
	sh.flows[k] = c
	if c.packets >= e.n {
		return Verdict{Action: channel.ActionAllow, Flow: channel.FlowOffload}
	}
	return keepInspecting
}

// sweep forgets flows idle for offloadIdle, at most every 10 s per shard.
func (sh *offloadShard) sweep(now time.Time) {
	if now.Sub(sh.lastSweep) < 10*time.Second {
		return
	}
	sh.lastSweep = now
	for k, c := range sh.flows {
		if now.Sub(c.last) > offloadIdle {
			delete(sh.flows, k)
		}
	}
}

// FlowEnd forgets a flow's count.
func (e *OffloadAfter) FlowEnd(guest uint32, flowID uint64) {
	sh := &e.shards[flowID%offloadShards]
	sh.mu.Lock()
	delete(sh.flows, flowRef{guest, flowID})
	sh.mu.Unlock()
}

// Len is the number of flows counted.
func (e *OffloadAfter) Len() int {
	n := 0
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.Lock()
		n += len(sh.flows)
		sh.mu.Unlock()
	}
	return n
}
