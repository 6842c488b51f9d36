package channel

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/sirupsen/logrus"
)

// RefusalLog keeps a port scan, or an appliance retrying a refused binding,
// from flooding the log. The first refusal of a (message, peer) is logged at
// once, with count 1, so an operator fixing a secret sees it straight away;
// the refusals that follow are counted, and every interval on the clock ends
// with one summary line per (message, peer) that had any, with their count
// and the interval. A (message, peer) quiet for a whole interval is
// forgotten: its next refusal is again logged at once. The counts of all the
// lines add up to the refusals; the Tracker keeps the exact totals.
type RefusalLog struct {
	clock clockwork.Clock
	every time.Duration

	mu   sync.Mutex
	open map[refusalKey]*refusalCount
}

type refusalKey struct{ msg, peer string }

type refusalCount struct {
	n     uint64 // refusals since the last line
	level logrus.Level
	last  *logrus.Entry // the latest refusal's fields, for the summary
}

// maxRefusalKeys bounds what a scan from many addresses can hold: past it,
// new peers are counted together as "others".
const maxRefusalKeys = 256

// OtherPeers is the peer under which refusals past maxRefusalKeys are counted.
const OtherPeers = "others"

// NewRefusalLog summarizes every interval on clock; Run drives it.
func NewRefusalLog(clock clockwork.Clock, every time.Duration) *RefusalLog {
	return &RefusalLog{clock: clock, every: every, open: map[refusalKey]*refusalCount{}}
}

// Note records one refusal by peer (an address without its port: a scan
// comes from a new port each time). entry carries the refusal's own fields,
// reason among them.
func (r *RefusalLog) Note(entry *logrus.Entry, level logrus.Level, msg, peer string) {
	r.mu.Lock()
	k := refusalKey{msg, peer}
	c, ok := r.open[k]
	if !ok && len(r.open) >= maxRefusalKeys {
		k.peer = OtherPeers
		c, ok = r.open[k]
	}
	if ok {
		c.n++
		c.level, c.last = level, entry
		r.mu.Unlock()
		return
	}
	r.open[k] = &refusalCount{}
	r.mu.Unlock()
	entry.WithFields(logrus.Fields{"peer": k.peer, "count": uint64(1)}).Log(level, msg)
}

// Flush logs one summary per (message, peer) refused since its last line,
// and forgets the ones that were not.
func (r *RefusalLog) Flush() {
	type line struct {
		refusalKey
		refusalCount
	}
	var lines []line
	r.mu.Lock()
	for k, c := range r.open {
		if c.n == 0 {
			delete(r.open, k)
			continue
		}
		lines = append(lines, line{k, *c})
		c.n = 0
	}
	r.mu.Unlock()
	sort.Slice(lines, func(i, j int) bool {
		if lines[i].msg != lines[j].msg {
			return lines[i].msg < lines[j].msg
		}
		return lines[i].peer < lines[j].peer
	})
	for _, l := range lines {
		l.last.WithFields(logrus.Fields{"peer": l.peer, "count": l.n, "interval": r.every.String()}).Log(l.level, l.msg)
	}
}

// Run flushes at the end of every interval until ctx ends, and once more
// then, so a stopping daemon does not drop counts.
func (r *RefusalLog) Run(ctx context.Context) {
	t := r.clock.NewTimer(r.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			r.Flush()
			return
		case <-t.Chan():
		}
		r.Flush()
		// Re-armed only once the flush is done: a test's fake clock then
		// sees the timer again exactly when this interval is finished.
		t.Reset(r.every)
	}
}
