package ips

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/palisade/palisade/slowpath/ips/rule"
)

// maxRateBuckets caps the threshold and detection_filter buckets an engine
// keeps (one per rule and tracked address).
const maxRateBuckets = 65536

// rates keeps the per-rule, per-address counters of threshold and
// detection_filter. Time is packet time, so offline runs count as the
// capture did.
type rates struct {
	mu      sync.Mutex
	buckets map[rateKey]*bucket
	swept   time.Time
	dropped atomic.Uint64 // events not tracked because the table was full
}

type rateKey struct {
	rule   int32
	filter bool // detection_filter rather than threshold
	addr   netip.Addr
}

type bucket struct {
	start  time.Time
	period time.Duration
	count  int
	fired  bool // "both": alerted in this period
}

func newRates() *rates { return &rates{buckets: map[rateKey]*bucket{}} }

func tracked(t *rule.Rate, src, dst netip.Addr) netip.Addr {
	if t.Track == rule.ByDst {
		return dst
	}
	return src
}

// len is the number of buckets kept.
func (r *rates) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.buckets)
}

// sweep drops the buckets whose period is over.
func (r *rates) sweep(now time.Time) {
	for key, b := range r.buckets {
		if now.Sub(b.start) >= b.period || now.Before(b.start) {
			delete(r.buckets, key)
		}
	}
	r.swept = now
}

func (r *rates) bucket(k rateKey, period time.Duration, now time.Time) *bucket {
	if now.Sub(r.swept) >= time.Second || now.Before(r.swept) {
		r.sweep(now)
	}
	b := r.buckets[k]
	if b == nil || now.Sub(b.start) >= period || now.Before(b.start) {
		if b == nil && len(r.buckets) >= maxRateBuckets {
			r.sweep(now)
			if len(r.buckets) >= maxRateBuckets {
				// Full of live periods: count the event as the first of
				// a period that is not kept.
				r.dropped.Add(1)
				return &bucket{start: now, period: period}
			}
		}
		b = &bucket{start: now, period: period}
		r.buckets[k] = b
	}
	return b
}

// overflow is the number of events not tracked because the table was full.
func (r *rates) overflow() uint64 { return r.dropped.Load() }

// detectionFilter counts a match and says whether the rule matches: only
// once more than count matches were seen in the period.
func (r *rates) detectionFilter(idx int32, f *rule.Rate, src, dst netip.Addr, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.bucket(rateKey{idx, true, tracked(f, src, dst)}, time.Duration(f.Seconds)*time.Second, now)
	b.count++
	return b.count > f.Count
}

// threshold counts an event and says whether it raises an alert.
func (r *rates) threshold(idx int32, t *rule.Rate, src, dst netip.Addr, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.bucket(rateKey{idx, false, tracked(t, src, dst)}, time.Duration(t.Seconds)*time.Second, now)
	b.count++
	switch t.Type {
	case rule.Limit:
		return b.count <= t.Count
	case rule.Threshold:
		if b.count >= t.Count {
			b.count = 0
			return true
		}
		return false
	case rule.Both:
		if b.count >= t.Count && !b.fired {
			b.fired = true
			return true
		}
	}
	return false
}
