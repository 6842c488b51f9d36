package channel

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/palisade/palisade/hypervisor/lab/wait"
)

func quietLogger() (*logrus.Entry, *test.Hook) {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l), test.NewLocal(l)
}

// line is what a test compares of one log line.
type line struct {
	msg, peer, reason, interval string
	count                       uint64
}

func lines(h *test.Hook) []line {
	var out []line
	for _, e := range h.AllEntries() {
		l := line{msg: e.Message, peer: fmt.Sprint(e.Data["peer"]), reason: fmt.Sprint(e.Data["reason"])}
		l.count, _ = e.Data["count"].(uint64)
		if iv, ok := e.Data["interval"]; ok {
			l.interval = fmt.Sprint(iv)
		}
		out = append(out, l)
	}
	return out
}

func sameLines(t *testing.T, what string, got, want []line) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s:\n got  %v\n want %v", what, got, want)
	}
}

// TestRefusalLogFirstAtOnceThenOneSummaryPerInterval: 5 refusals of one
// reason from one peer are one line at once and one summary of 4; another
// peer and another reason get lines of their own; a (reason, peer) quiet for
// an interval is forgotten, so its next refusal is logged at once again.
func TestRefusalLogFirstAtOnceThenOneSummaryPerInterval(t *testing.T) {
	log, hook := quietLogger()
	r := NewRefusalLog(clockwork.NewFakeClock(), 10*time.Second)
	note := func(msg, peer string, i int) {
		r.Note(log.WithField("reason", fmt.Sprintf("attempt %d", i)), logrus.WarnLevel, msg, peer)
	}
	for i := 1; i <= 5; i++ {
		note("HELLO rejected: secret mismatch", "169.254.1.10", i)
	}
	note("HELLO rejected: secret mismatch", "169.254.1.11", 1)
	note("closing connection: handshake failed", "169.254.1.10", 1)
	sameLines(t, "before the interval ends", lines(hook), []line{
		{"HELLO rejected: secret mismatch", "169.254.1.10", "attempt 1", "", 1},
		{"HELLO rejected: secret mismatch", "169.254.1.11", "attempt 1", "", 1},
		{"closing connection: handshake failed", "169.254.1.10", "attempt 1", "", 1},
	})
	hook.Reset()
	r.Flush()
	sameLines(t, "the interval's summary", lines(hook), []line{
		{"HELLO rejected: secret mismatch", "169.254.1.10", "attempt 5", "10s", 4},
	})
	hook.Reset()
	r.Flush()
	note("HELLO rejected: secret mismatch", "169.254.1.10", 6)
	sameLines(t, "after a quiet interval", lines(hook), []line{
		{"HELLO rejected: secret mismatch", "169.254.1.10", "attempt 6", "", 1},
	})
}

// TestRefusalLogSummarizesOnItsClock: the summary comes exactly when the
// interval has passed on the clock, and once.
func TestRefusalLogSummarizesOnItsClock(t *testing.T) {
	log, hook := quietLogger()
	clock := clockwork.NewFakeClock()
	r := NewRefusalLog(clock, 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()
	if err := clock.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		r.Note(log.WithField("reason", "bad magic"), logrus.WarnLevel, "closing connection: handshake failed", "169.254.1.10")
	}
	clock.Advance(10*time.Second - time.Nanosecond)
	if n := len(hook.AllEntries()); n != 1 {
		t.Fatalf("%d lines before the interval ended, want the first refusal's only", n)
	}
	clock.Advance(time.Nanosecond)
	wait.For(t, "the summary", func() bool { return len(hook.AllEntries()) == 2 })
	if err := clock.BlockUntilContext(ctx, 1); err != nil { // flushed and re-armed
		t.Fatal(err)
	}
	sameLines(t, "lines", lines(hook), []line{
		{"closing connection: handshake failed", "169.254.1.10", "bad magic", "", 1},
		{"closing connection: handshake failed", "169.254.1.10", "bad magic", "10s", 2},
	})
}

// TestRefusalLogBoundsItsPeers: a scan from more addresses than the log
// keeps is counted under "others" past the bound, not forgotten.
func TestRefusalLogBoundsItsPeers(t *testing.T) {
	log, hook := quietLogger()
	r := NewRefusalLog(clockwork.NewFakeClock(), 10*time.Second)
	const peers = maxRefusalKeys + 44
	for i := 0; i < peers; i++ {
		r.Note(log, logrus.WarnLevel, "closing connection: handshake failed", fmt.Sprintf("169.254.%d.%d", i/250, i%250+1))
	}
	r.Flush()
	var total uint64
	others := 0
	for _, l := range lines(hook) {
		total += l.count
		if l.peer == OtherPeers {
			others++
		}
	}
	if n := len(hook.AllEntries()); total != peers || n != maxRefusalKeys+2 || others != 2 {
		t.Fatalf("%d lines (%d for others) counting %d refusals; want %d lines, 2 for others, counting %d",
			n, others, total, maxRefusalKeys+2, peers)
	}
}
