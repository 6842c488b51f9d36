package inspectd

import (
	"bytes"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/slowpath/eve"
)

// alerts is the sink the engines emit to. Each record is completed with the
// fast path's flow id, appended to the EVE file, and queued (rate-limited)
// as an EVENT_BATCH record for the fast path; workers flush the queue when
// they flush their verdicts, and Run every 100 ms.
type alerts struct {
	s    *Service
	file *eve.Writer

	mu      sync.Mutex
	bucket  bucket
	pending []channel.EventRecord
	size    int
	queued  atomic.Int64 // len(pending), read without the lock

	emitted, sent, droppedRate, droppedUnbound, droppedBody atomic.Uint64
}

func newAlerts(s *Service, file *eve.Writer, rate int) *alerts {
	return &alerts{s: s, file: file, bucket: bucket{rate: float64(rate)}}
}

// Emit implements eve.Sink; it runs on the worker inspecting the packet.
func (a *alerts) Emit(r *eve.Record) {
	a.emitted.Add(1)
	rec := *r
	guest := r.Guest
	if r.FastFlowID != 0 {
		rec.FlowID = r.FastFlowID // EVE's flow_id is the fast path's in live mode
	}
	if a.file != nil {
		a.file.Emit(&rec)
	}
	b := a.s.cur.Load()
	if b == nil || !b.events {
		a.droppedUnbound.Add(1)
		return
	}
	now := a.s.cfg.Clock.Now()
	a.mu.Lock()
	ok := a.bucket.take(now)
	a.mu.Unlock()
	if !ok {
		a.droppedRate.Add(1)
		return
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // as the EVE file's lines
	if err := enc.Encode(&rec); err != nil || buf.Len()-1 > maxEventBody {
		a.droppedBody.Add(1)
		return
	}
	body := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	ev := channel.EventRecord{Kind: channel.EventAlert, Guest: guest, UnixNano: now.UnixNano(), Body: body}
	var full []channel.EventRecord
	a.mu.Lock()
	if len(a.pending) == maxRecords || 2+a.size+eventHeader+len(body) > channel.MaxPayload {
		full = a.takeLocked()
	}
	a.pending = append(a.pending, ev)
	a.size += eventHeader + len(body)
	a.queued.Store(int64(len(a.pending)))
	a.mu.Unlock()
	a.send(full)
}

// flush sends the queued alerts to the current binding.
func (a *alerts) flush() {
	if a.queued.Load() == 0 {
		return
	}
	a.mu.Lock()
	recs := a.takeLocked()
	a.mu.Unlock()
	a.send(recs)
}

func (a *alerts) takeLocked() []channel.EventRecord {
	recs := a.pending
	a.pending, a.size = nil, 0
	a.queued.Store(0)
	return recs
}

// send writes one EVENT_BATCH, outside the lock: it may wait for room in
// the session's queue.
func (a *alerts) send(recs []channel.EventRecord) {
	if len(recs) == 0 {
		return
	}
	b := a.s.cur.Load()
	if b == nil || !b.events {
		a.droppedUnbound.Add(uint64(len(recs)))
		return
	}
	payload, err := channel.AppendEventBatch(nil, recs)
	if err == nil && a.s.send(b, channel.TypeEventBatch, payload) {
		a.sent.Add(uint64(len(recs)))
		return
	}
	a.droppedUnbound.Add(uint64(len(recs)))
}

// bucket is a token bucket of rate tokens per second holding at most one
// second's worth; a negative rate never runs dry.
type bucket struct {
	rate   float64
	tokens float64
	last   time.Time
}

func (b *bucket) take(now time.Time) bool {
	if b.rate < 0 {
		return true
	}
	if b.last.IsZero() {
		b.tokens = b.rate
	} else {
		b.tokens = min(b.rate, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
