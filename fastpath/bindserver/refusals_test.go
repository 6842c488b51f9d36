package bindserver_test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/hypervisor/lab"
	"github.com/palisade/palisade/hypervisor/lab/wait"
)

// hdr is a frame header, valid or not.
func hdr(magic uint16, format, typ byte, length, seq uint32) []byte {
	return []byte{byte(magic >> 8), byte(magic), format, typ,
		byte(length >> 24), byte(length >> 16), byte(length >> 8), byte(length),
		byte(seq >> 24), byte(seq >> 16), byte(seq >> 8), byte(seq)}
}

var garbage = []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")

// junk connects from ns, sends stream, and reads until the fast path closes
// the connection; it returns what the fast path sent.
func junk(t *testing.T, ns *lab.Namespace, stream []byte) ([]byte, error) {
	t.Helper()
	conn, err := ns.Dial(&net.Dialer{Timeout: wait.Limit}, "tcp", channel.DefaultBindAddress)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(stream); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(wait.Limit)) // I/O safety only
	return io.ReadAll(conn)
}

// refusalLines are the refusal log's lines for msg, as "peer count interval".
func refusalLines(h *host, msgs ...string) []string {
	var out []string
	for _, e := range h.logs.find("") {
		for _, m := range msgs {
			if e.Message == m {
				out = append(out, fmt.Sprintf("%s %v %v %v", m, e.Data["peer"], e.Data["count"], e.Data["interval"]))
			}
		}
	}
	return out
}

func totalRefused(h *host) uint64 {
	var n uint64
	for _, v := range h.srv.Status().Refused {
		n += v
	}
	return n
}

func TestMalformedFramesCloseOnlyThatConnection(t *testing.T) {
	s := site(t, 2)
	clock := clockwork.NewFakeClock()
	h := startHost(t, s, hostOpts{timing: channel.Timing{Keepalive: time.Hour, DeadAfter: 2 * time.Hour, Clock: clock}})
	good := startAppliance(t, s.Appliances[0], appOpts{})
	st := waitState(t, "fast path", h.srv.Status, channel.StateBound)
	session := st.SessionID
	blockUntil(t, clock, 4)

	cases := []struct {
		name   string
		stream []byte
		reason string
	}{
		{"garbage", garbage, "bad magic"},
		{"oversized", hdr(channel.Magic, 1, byte(channel.TypeHello), channel.MaxPayload+1, 0), "exceeds the maximum"},
		{"unknown type", hdr(channel.Magic, 1, 99, 0, 0), "unknown frame type 99"},
		{"out of order", hdr(channel.Magic, 1, byte(channel.TypeHello), 0, 3), "out of order"},
		{"punt before hello", append(hdr(channel.Magic, 1, byte(channel.TypePuntBatch), 2, 0), 0, 0), "PUNT_BATCH before HELLO"},
		{"short hello", append(hdr(channel.Magic, 1, byte(channel.TypeHello), 3, 0), 1, 2, 3), "HELLO: truncated"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The fast path may answer with a REJECT; then it must close.
			if _, err := junk(t, s.Appliances[1], c.stream); err != nil {
				t.Fatalf("connection not closed by the fast path: %v", err)
			}
			// It closes once the refusal is counted and logged.
			if st := h.srv.Status(); totalRefused(h) != uint64(i+1) || !strings.Contains(st.LastError, c.reason) {
				t.Fatalf("status after %d refusals: refused %v, last error %q; want the reason %q", i+1, st.Refused, st.LastError, c.reason)
			}
			found := false
			for _, e := range h.logs.find("") {
				if strings.Contains(fmt.Sprint(e.Data["reason"]), c.reason) {
					found = true
				}
			}
			if !found {
				t.Fatalf("no log with reason %q", c.reason)
			}
			// A quiet interval on the clock: the next case's refusal is
			// again a first, logged at once.
			clock.Advance(10 * time.Second)
			blockUntil(t, clock, 4)
		})
	}
	if st := h.srv.Status(); st.SessionID != session || st.State != channel.StateBound {
		t.Fatalf("the bound slow path was disturbed: %+v", st)
	}
	if st := good.client.Status(); st.Reconnects != 0 {
		t.Fatalf("bound slow path reconnected %d times", st.Reconnects)
	}

	// A malformed frame inside a bound session ends that session only; the
	// listener keeps serving and the slow path binds again.
	good.stop()
	waitState(t, "fast path", h.srv.Status, channel.StateListening)
	conn, err := s.Appliances[1].Dial(&net.Dialer{Timeout: wait.Limit}, "tcp", channel.DefaultBindAddress)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := channel.NewConn(conn)
	if _, err := c.Offer(channel.OfferConfig{Self: channel.Identity{Version: channel.MustParseVersion("1.2.3.1"), Revision: 1}, Secret: secret}); err != nil {
		t.Fatal(err)
	}
	bad, _ := channel.AppendVerdictBatch(nil, []channel.VerdictRecord{{Action: channel.ActionAllow}})
	bad[len(bad)-4] = 42
	mark := h.logs.mark()
	if err := c.W.WriteFrame(channel.TypeVerdictBatch, bad); err != nil {
		t.Fatal(err)
	}
	_ = c.W.Flush()
	lost := h.logs.waitAfter(t, mark, "slow path binding lost")
	if !strings.Contains(fmt.Sprint(lost.Data["reason"]), "invalid action(42)") {
		t.Fatalf("session closed for %v", lost.Data["reason"])
	}
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("connection not closed after a malformed batch: %v", err)
	}
	startAppliance(t, s.Appliances[0], appOpts{})
	waitState(t, "fast path", h.srv.Status, channel.StateBound)
}

// TestJunkConnectionsAreSummarized is a port scan: 200 junk connections from
// one address, 50 from another, and 10 malformed HELLOs from the first. Each
// (message, peer) is logged once at once and once in the interval's summary
// with the rest of its count; the status counts all 260. After an interval
// without junk, the next one is logged at once again.
func TestJunkConnectionsAreSummarized(t *testing.T) {
	s := site(t, 2)
	clock := clockwork.NewFakeClock()
	h := startHost(t, s, hostOpts{timing: channel.Timing{Clock: clock}})
	blockUntil(t, clock, 2)
	shortHello := append(hdr(channel.Magic, 1, byte(channel.TypeHello), 3, 0), 1, 2, 3)
	for _, scan := range []struct {
		from   *lab.Namespace
		stream []byte
		n      int
	}{{s.Appliances[0], garbage, 200}, {s.Appliances[1], garbage, 50}, {s.Appliances[0], shortHello, 10}} {
		for i := 0; i < scan.n; i++ {
			_, _ = junk(t, scan.from, scan.stream) // a reset is as good as a close here
		}
	}
	const closing, rejected = "closing connection: handshake failed", "HELLO rejected: protocol error"
	wait.For(t, "260 refusals", func() bool { return refusals(h, "protocol error") == 260 })
	want := []string{
		closing + " 169.254.1.10 1 <nil>",
		closing + " 169.254.1.11 1 <nil>",
		rejected + " 169.254.1.10 1 <nil>",
	}
	if got := refusalLines(h, closing, rejected); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("lines as the scan ran:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	clock.Advance(10 * time.Second)
	wait.For(t, "the summaries", func() bool { return len(refusalLines(h, closing, rejected)) == 6 })
	blockUntil(t, clock, 2) // flushed once, and armed for the next interval
	want = append(want,
		rejected+" 169.254.1.10 9 10s",
		closing+" 169.254.1.10 199 10s",
		closing+" 169.254.1.11 49 10s")
	if got := refusalLines(h, closing, rejected); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("lines after the interval:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if st := h.srv.Status(); len(st.Refused) != 1 || st.Refused["protocol error"] != 260 {
		t.Fatalf("status refused %v, want exactly protocol error=260", st.Refused)
	}

	clock.Advance(10 * time.Second) // quiet: both peers are forgotten
	blockUntil(t, clock, 2)
	_, _ = junk(t, s.Appliances[0], garbage)
	want = append(want, closing+" 169.254.1.10 1 <nil>")
	if got := refusalLines(h, closing, rejected); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("lines after a quiet interval:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
