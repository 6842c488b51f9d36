package ips

import (
	"bytes"
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/slowpath/inspect/craft"
	"github.com/palisade/palisade/slowpath/inspect/packet"
)

// segments sends each part as its own client segment after a handshake.
func segments(parts ...string) []craft.Frame {
	e := &craft.Endpoints{}
	c := e.NewTCP("10.0.0.5:40000", "192.0.2.10:8000")
	fs := c.Handshake()
	for _, p := range parts {
		fs = append(fs, c.Send(true, []byte(p)))
	}
	return fs
}

// A stream match counts once: a later segment does not raise the matches
// of the bytes before it again.
func TestStreamMatchesOnce(t *testing.T) {
	req := "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
	for _, c := range []struct {
		name  string
		rule  string
		parts []string
		want  int
	}{
		{"depth at the stream start", `content:"GET"; depth:3;`, []string{req, req, req, req}, 1},
		{"pcre only", `pcre:"/Host: a/";`, []string{req, "x", "y", "z"}, 1},
		{"content and pcre", `content:"GET"; pcre:"/HTTP\/1\.1/";`, []string{req, "x", "y"}, 1},
		{"a new occurrence is a new match", `content:"attack";`, []string{"attack", "..", "attack", "attack"}, 3},
		{"new occurrence of one content, old other", `content:"user"; content:"pass";`, []string{"user pass", "..", "user"}, 2},
		{"split over the segment boundary", `content:"attack";`, []string{"att", "ack", "x"}, 1},
		{"relative chain completed later", `content:"first"; content:"second"; distance:0;`, []string{"first ", "x", "second", "y"}, 1},
		{"pcre completed later", `content:"key="; pcre:"/key=\d{4}/";`, []string{"key=12", "34", "z"}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, `alert tcp any any -> any any (`+c.rule+` sid:1;)`)
			h.run(segments(c.parts...)...)
			if got := len(h.sids()); got != c.want {
				t.Fatalf("%d alerts, want %d", got, c.want)
			}
		})
	}
}

// An absolute content (depth from the stream start) still anchors a
// relative match that arrives much later.
func TestStreamDepthAnchorFarAway(t *testing.T) {
	h := newHarness(t, `alert tcp any any -> any any (content:"HELO"; depth:4; content:"evil"; distance:0; sid:1;)`)
	parts := []string{"HELO "}
	for i := 0; i < 100; i++ {
		parts = append(parts, strings.Repeat("x", 1400))
	}
	parts = append(parts, "evil")
	h.run(segments(parts...)...)
	if got := h.sids(); !slices.Equal(got, []uint32{1}) {
		t.Fatalf("alerts %v", got)
	}
}

// pendingRules are 50 rules whose fast pattern a flow may carry but whose
// pcre never matches it.
func pendingRules() string {
	var rules strings.Builder
	for i := 0; i < 50; i++ {
		fmt.Fprintf(&rules, "alert tcp any any -> any any (content:\"trigger%02d\"; fast_pattern; pcre:\"/[a-w]{3}qN/\"; sid:%d;)\n", i, i+1)
	}
	return rules.String()
}

// pendingFlow is a 512 KiB client stream of random letters that, with
// triggers, opens with every rule's fast pattern, leaving all 50 pending.
func pendingFlow(triggers bool) []craft.Frame {
	r := rand.New(rand.NewSource(1))
	var first bytes.Buffer
	for i := 0; i < 50; i++ {
		if triggers {
			fmt.Fprintf(&first, "trigger%02d ", i)
		} else {
			fmt.Fprintf(&first, "nothing%02d ", i)
		}
	}
	e := &craft.Endpoints{}
	c := e.NewTCP("10.0.0.5:40000", "192.0.2.10:8000")
	fs := craft.Seq(c.Handshake(), c.Send(true, first.Bytes()))
	filler := make([]byte, 1448)
	for len(fs) < 4+(512<<10)/len(filler) {
		for i := range filler {
			filler[i] = byte('a' + r.Intn(23))
		}
		fs = append(fs, c.Send(true, filler))
	}
	return fs
}

// Rules whose fast pattern was seen but whose pcre never matches must not
// be re-run over the whole stream on every later segment (that took over 3
// minutes for this flow): the direction's re-check budget runs out, once.
// BenchmarkStreamPending measures what the pending rules still cost.
func TestStreamPendingIsNotQuadratic(t *testing.T) {
	h := newHarness(t, pendingRules())
	h.run(pendingFlow(true)...)
	if n := len(h.sids()); n != 0 {
		t.Fatalf("%d alerts", n)
	}
	if s := h.e.Stats(); s.LookbackCut != 1 {
		t.Fatalf("the direction's re-check budget was not spent: %+v", s)
	}
}

// BenchmarkStreamPending is the 512 KiB flow with its 50 rules pending, in
// ns per stream byte, and as a multiple of the same flow through the same
// rules without their fast patterns, measured in the same run (the cost
// of keeping rules pending; it was quadratic once).
func BenchmarkStreamPending(b *testing.B) {
	rules := pendingRules()
	pending, plain := pendingFlow(true), pendingFlow(false)
	var bytes int
	for _, f := range plain {
		bytes += len(f.Data)
	}
	var withPending, without time.Duration
	timed := func(frames []craft.Frame) time.Duration {
		h := newHarness(b, rules) // compiling the rules is not timed
		start := time.Now()
		h.run(frames...)
		return time.Since(start)
	}
	for range b.N {
		withPending += timed(pending)
		without += timed(plain)
	}
	b.ReportMetric(float64(withPending.Nanoseconds())/float64(b.N*bytes), "ns/byte")
	b.ReportMetric(float64(withPending)/float64(without), "x-no-pending")
}

// A lost client segment (a shed punt, a lost tap copy) no longer stalls
// the stream: once the server acknowledges past it, what follows it is
// inspected, and the flow can still reach the depth and be offloaded.
func TestStreamGapRecovery(t *testing.T) {
	h := newHarness(t, `alert tcp any any -> any any (content:"attack"; sid:1;)`, WithStreamDepth(64))
	e := &craft.Endpoints{}
	c := e.NewTCP("10.0.0.5:40000", "192.0.2.10:8000")
	fs := c.Handshake()
	fs = append(fs, c.Send(true, []byte("hello ")))
	c.Send(true, []byte("lost segment ")) // never seen
	fs = append(fs, c.Send(true, []byte("attack")))
	fs = append(fs, c.Segment(false, c.SSeq, c.CSeq, packet.ACK, nil)) // the server got it all
	fs = append(fs, c.Send(true, bytes.Repeat([]byte("x"), 60)))
	h.run(fs...)
	if got := h.sids(); !slices.Equal(got, []uint32{1}) {
		t.Fatalf("alerts %v after the gap", got)
	}
	if h.verdicts[len(fs)-1].Flow != channel.FlowOffload {
		t.Fatalf("not offloaded at the depth after a gap: %+v", h.verdicts)
	}
	if s := h.e.Stats(); s.StreamGaps != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// A first fragment's partial segment never enters the stream.
func TestFirstFragmentNotReassembled(t *testing.T) {
	h := newHarness(t, `alert tcp any any -> any any (content:"attack"; sid:1;)`)
	e := &craft.Endpoints{}
	c := e.NewTCP("10.0.0.5:40000", "192.0.2.10:8000")
	fs := c.Handshake()
	frag := c.Send(true, []byte("attack"))
	frag.Data[6] |= 0x20 // MF: the rest of the segment would follow
	h.run(append(fs, frag)...)
	if got := h.sids(); len(got) != 0 {
		t.Fatalf("alerts %v on a partial segment", got)
	}
}
