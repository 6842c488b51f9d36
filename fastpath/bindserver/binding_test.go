package bindserver_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/palisade/palisade/fastpath/bindserver"
	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/hypervisor/lab"
	"github.com/palisade/palisade/slowpath/bindclient"
)

var (
	secret = []byte("0123456789abcdef0123456789abcdef")
	wrong  = []byte("fedcba9876543210fedcba9876543210")
)

// logSink captures one daemon's log entries for assertions.
type logSink struct {
	mu      sync.Mutex
	entries []*logrus.Entry
}

func (s *logSink) Levels() []logrus.Level { return logrus.AllLevels }
func (s *logSink) Fire(e *logrus.Entry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries = append(s.entries, &logrus.Entry{Logger: e.Logger, Message: e.Message, Data: e.Data, Level: e.Level, Time: e.Time})
	return nil
}

func (s *logSink) logger(t *testing.T, name string) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.DebugLevel)
	l.AddHook(s)
	l.AddHook(testWriter{t, name})
	return l.WithField("daemon", name)
}

// testWriter echoes log lines into the test's own output, for failures.
type testWriter struct {
	t    *testing.T
	name string
}

func (w testWriter) Levels() []logrus.Level { return logrus.AllLevels }
func (w testWriter) Fire(e *logrus.Entry) error {
	line, _ := e.String()
	w.t.Logf("%s: %s", w.name, strings.TrimSpace(line))
	return nil
}

func (s *logSink) find(msgPrefix string) []*logrus.Entry { return s.findAfter(0, msgPrefix) }

// mark is a position in the log; findAfter and waitAfter look only past it.
func (s *logSink) mark() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

func (s *logSink) findAfter(mark int, msgPrefix string) []*logrus.Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*logrus.Entry
	for _, e := range s.entries[mark:] {
		if strings.HasPrefix(e.Message, msgPrefix) {
			out = append(out, e)
		}
	}
	return out
}

func (s *logSink) wait(t *testing.T, msgPrefix string, within time.Duration) *logrus.Entry {
	t.Helper()
	return s.waitAfter(t, 0, msgPrefix, within)
}

func (s *logSink) waitAfter(t *testing.T, mark int, msgPrefix string, within time.Duration) *logrus.Entry {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if es := s.findAfter(mark, msgPrefix); len(es) > 0 {
			return es[0]
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no log %q within %s", msgPrefix, within)
	return nil
}

type host struct {
	srv  *bindserver.Server
	logs *logSink
}

type hostOpts struct {
	version     string
	unboundWarn time.Duration
	handler     channel.Handler
}

func startHost(t *testing.T, site *lab.Site, o hostOpts) *host {
	t.Helper()
	if o.version == "" {
		o.version = "1.2.3.200"
	}
	h := &host{logs: &logSink{}}
	var err error
	h.srv, err = bindserver.New(bindserver.Config{
		Self:     channel.Identity{Version: channel.MustParseVersion(o.version), Revision: 1, Capabilities: channel.CapIPS | channel.CapWRS | channel.CapEvents, ID: "esx-01"},
		Secret:   secret,
		Endpoint: channel.DefaultBindAddress, UnboundWarnEvery: o.unboundWarn,
		Log: h.logs.logger(t, "fastpathd"), Handler: o.handler,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := site.Host.Listen("tcp", channel.DefaultBindAddress)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = h.srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

type appliance struct {
	client *bindclient.Client
	logs   *logSink
	stop   func()
}

type appOpts struct {
	version string
	secret  func() ([]byte, error)
	caps    channel.Capabilities
	handler channel.Handler
}

func startAppliance(t *testing.T, ns *lab.Namespace, o appOpts) *appliance {
	t.Helper()
	if o.version == "" {
		o.version = "1.2.3.100"
	}
	if o.secret == nil {
		o.secret = func() ([]byte, error) { return secret, nil }
	}
	if o.caps == 0 {
		o.caps = channel.CapIPS | channel.CapWRS | channel.CapEvents
	}
	a := &appliance{logs: &logSink{}}
	var err error
	a.client, err = bindclient.New(bindclient.Config{
		Self:     channel.Identity{Version: channel.MustParseVersion(o.version), Revision: 1, Capabilities: o.caps, ID: ns.Name},
		Endpoint: channel.DefaultBindAddress,
		Dial: func(ctx context.Context) (net.Conn, error) {
			return ns.DialContext(ctx, &net.Dialer{}, "tcp", channel.DefaultBindAddress)
		},
		Secret:     o.secret,
		BackoffMax: 500 * time.Millisecond,
		Log:        a.logs.logger(t, "slowpathd "+ns.Name),
		Handler:    o.handler,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.client.Run(ctx) }()
	var once sync.Once
	a.stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(a.stop)
	return a
}

func site(t *testing.T, appliances int) *lab.Site {
	t.Helper()
	s, err := lab.ForTest(t).Site("esx", appliances)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func waitState(t *testing.T, what string, status func() channel.BindingStatus, state string, within time.Duration) channel.BindingStatus {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := status()
		if st.State == state {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: state %q after %s, want %q (last error: %s)", what, st.State, within, state, st.LastError)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBindBetweenNamespaces(t *testing.T) {
	s := site(t, 1)
	h := startHost(t, s, hostOpts{})
	a := startAppliance(t, s.Appliances[0], appOpts{caps: channel.CapIPS | channel.CapEvents})

	hs := waitState(t, "fast path", h.srv.Status, channel.StateBound, 3*time.Second)
	as := waitState(t, "slow path", a.client.Status, channel.StateBound, 3*time.Second)
	if !strings.HasPrefix(hs.PeerAddr, "169.254.1.10:") || hs.LocalAddr != "169.254.1.1:2222" {
		t.Errorf("fast path sees %s <-> %s", hs.LocalAddr, hs.PeerAddr)
	}
	if as.PeerAddr != "169.254.1.1:2222" || as.PeerVersion != "1.2.3.200" || hs.PeerVersion != "1.2.3.100" {
		t.Errorf("versions/peers: host %+v appliance %+v", hs, as)
	}
	if got := strings.Join(hs.Negotiated, ","); got != "ips,events" {
		t.Errorf("negotiated %s, want ips,events", got)
	}
	// WRS is not offered by this slow path, so it stays offline.
	if got := strings.Join(hs.EnginesOff, ","); got != "wrs" {
		t.Errorf("engines offline %q, want wrs", got)
	}
	bound := h.logs.wait(t, "slow path bound", time.Second)
	if bound.Data["slow_path_version"] != "1.2.3.100" || bound.Data["fast_path_version"] != "1.2.3.200" || bound.Data["revision"] != uint32(1) {
		t.Errorf("fast path's bound log lacks both versions/revision: %v", bound.Data)
	}
	abound := a.logs.wait(t, "bound to fast path", time.Second)
	if abound.Data["slow_path_version"] != "1.2.3.100" || abound.Data["fast_path_version"] != "1.2.3.200" {
		t.Errorf("slow path's bound log lacks both versions: %v", abound.Data)
	}
}

func TestVersionMismatchIsRejectedOnBothSides(t *testing.T) {
	s := site(t, 1)
	h := startHost(t, s, hostOpts{version: "1.2.3.200"})
	a := startAppliance(t, s.Appliances[0], appOpts{version: "1.2.2.100"})

	he := h.logs.wait(t, "HELLO rejected: version mismatch", 3*time.Second)
	ae := a.logs.wait(t, "binding rejected by fast path: version mismatch", 3*time.Second)
	for side, e := range map[string]*logrus.Entry{"fast path": he, "slow path": ae} {
		reason := fmt.Sprint(e.Data["reason"])
		for _, want := range []string{"1.2.2.100:rev=1", "1.2.3.x:rev=1"} {
			if !strings.Contains(reason, want) {
				t.Errorf("%s log %q does not name %s", side, reason, want)
			}
		}
		if e.Data["slow_path_version"] != "1.2.2.100" {
			t.Errorf("%s log fields lack the slow path's version: %v", side, e.Data)
		}
	}
	if he.Data["fast_path_version"] != "1.2.3.200" {
		t.Errorf("fast path log fields lack its own version: %v", he.Data)
	}
	if st := h.srv.Status(); st.State == channel.StateBound || st.Refused["version mismatch"] == 0 {
		t.Errorf("fast path status after mismatch: %+v", st)
	}
	if st := a.client.Status(); st.State == channel.StateBound || st.Refused["version mismatch"] == 0 {
		t.Errorf("slow path status after mismatch: %+v", st)
	}
}

func TestBuildOnlyDifferenceBinds(t *testing.T) {
	s := site(t, 1)
	h := startHost(t, s, hostOpts{version: "1.2.3.200"})
	startAppliance(t, s.Appliances[0], appOpts{version: "1.2.3.100"})
	st := waitState(t, "fast path", h.srv.Status, channel.StateBound, 3*time.Second)
	if st.PeerVersion != "1.2.3.100" || st.LocalVersion != "1.2.3.200" {
		t.Fatalf("bound with %s <-> %s", st.LocalVersion, st.PeerVersion)
	}
}

func TestWrongSecretIsRejectedThenHeals(t *testing.T) {
	s := site(t, 1)
	h := startHost(t, s, hostOpts{})
	var fixed atomic.Bool
	a := startAppliance(t, s.Appliances[0], appOpts{secret: func() ([]byte, error) {
		if fixed.Load() {
			return secret, nil
		}
		return wrong, nil
	}})
	he := h.logs.wait(t, "HELLO rejected: secret mismatch", 3*time.Second)
	ae := a.logs.wait(t, "binding rejected by fast path: secret mismatch", 3*time.Second)
	for _, e := range []*logrus.Entry{he, ae} {
		line, _ := e.String()
		if strings.Contains(line, string(secret)) || strings.Contains(line, string(wrong)) {
			t.Fatalf("log leaks a secret: %s", line)
		}
		if strings.Contains(fmt.Sprint(e.Data["reason"]), "version") {
			t.Fatalf("secret mismatch reported as a version problem: %v", e.Data["reason"])
		}
	}
	if st := h.srv.Status(); st.State == channel.StateBound {
		t.Fatal("bound with a wrong secret")
	}
	// The operator fixes the secret file: the next attempt binds, no restart.
	fixed.Store(true)
	waitState(t, "fast path", h.srv.Status, channel.StateBound, 3*time.Second)
}

func TestSecondApplianceIsRefusedFirstStaysBound(t *testing.T) {
	s := site(t, 2)
	h := startHost(t, s, hostOpts{})
	first := startAppliance(t, s.Appliances[0], appOpts{})
	st := waitState(t, "fast path", h.srv.Status, channel.StateBound, 3*time.Second)
	session := st.SessionID

	second := startAppliance(t, s.Appliances[1], appOpts{})
	he := h.logs.wait(t, "HELLO rejected: already bound", 3*time.Second)
	ae := second.logs.wait(t, "binding rejected by fast path: already bound", 3*time.Second)
	if reason := fmt.Sprint(ae.Data["reason"]); !strings.Contains(reason, "one slow path per host") || !strings.Contains(reason, "169.254.1.10") {
		t.Errorf("refusal does not explain itself: %s", reason)
	}
	_ = he
	time.Sleep(300 * time.Millisecond) // let the second one retry a few times
	if st := h.srv.Status(); st.SessionID != session || !strings.HasPrefix(st.PeerAddr, "169.254.1.10:") {
		t.Fatalf("first binding disturbed: session %d -> %d, peer %s", session, st.SessionID, st.PeerAddr)
	}
	if st := first.client.Status(); st.State != channel.StateBound || st.Reconnects != 0 {
		t.Fatalf("first appliance: %+v", st)
	}
	// When the first goes away, the second takes over.
	first.stop()
	waitState(t, "fast path", func() channel.BindingStatus {
		st := h.srv.Status()
		if !strings.HasPrefix(st.PeerAddr, "169.254.1.11:") {
			st.State = "not yet the second"
		}
		return st
	}, channel.StateBound, 3*time.Second)
}

func TestDeadPeerDetectedWithinDefaultBound(t *testing.T) {
	s := site(t, 1)
	h := startHost(t, s, hostOpts{})
	a := startAppliance(t, s.Appliances[0], appOpts{})
	waitState(t, "fast path", h.srv.Status, channel.StateBound, 3*time.Second)

	// Cut the appliance's cable: no FIN, no RST, just silence both ways.
	nl := s.Appliances[0].Netlink()
	eth0, err := nl.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	if err := nl.LinkSetDown(eth0); err != nil {
		t.Fatal(err)
	}
	lost := h.logs.wait(t, "slow path binding lost", 5*time.Second)
	took := time.Since(cut)
	t.Logf("fast path declared the silent slow path dead after %s", took.Round(time.Millisecond))
	if took > 3500*time.Millisecond {
		t.Errorf("dead peer detected after %s; default bound is 3s", took)
	}
	if !strings.Contains(fmt.Sprint(lost.Data["reason"]), "peer dead") {
		t.Errorf("reason %v", lost.Data["reason"])
	}
	if st := h.srv.Status(); st.State == channel.StateBound || strings.Join(st.EnginesOff, ",") != "ips,wrs" {
		t.Errorf("after loss: state %q, engines offline %v", st.State, st.EnginesOff)
	}
	a.logs.wait(t, "binding to fast path lost", 5*time.Second)

	// Reconnect the cable: the slow path rebinds by itself.
	if err := nl.LinkSetUp(eth0); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, "fast path", h.srv.Status, channel.StateBound, 5*time.Second)
	if st.Reconnects != 1 {
		t.Errorf("reconnects %d, want 1", st.Reconnects)
	}
}

func TestMalformedFramesCloseOnlyThatConnection(t *testing.T) {
	s := site(t, 2)
	h := startHost(t, s, hostOpts{})
	good := startAppliance(t, s.Appliances[0], appOpts{})
	st := waitState(t, "fast path", h.srv.Status, channel.StateBound, 3*time.Second)
	session := st.SessionID

	hdr := func(magic uint16, format, typ byte, length, seq uint32) []byte {
		return []byte{byte(magic >> 8), byte(magic), format, typ,
			byte(length >> 24), byte(length >> 16), byte(length >> 8), byte(length),
			byte(seq >> 24), byte(seq >> 16), byte(seq >> 8), byte(seq)}
	}
	cases := []struct {
		name   string
		stream []byte
		reason string
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "bad magic"},
		{"oversized", hdr(channel.Magic, 1, byte(channel.TypeHello), channel.MaxPayload+1, 0), "exceeds the maximum"},
		{"unknown type", hdr(channel.Magic, 1, 99, 0, 0), "unknown frame type 99"},
		{"out of order", hdr(channel.Magic, 1, byte(channel.TypeHello), 0, 3), "out of order"},
		{"punt before hello", append(hdr(channel.Magic, 1, byte(channel.TypePuntBatch), 2, 0), 0, 0), "PUNT_BATCH before HELLO"},
		{"short hello", append(hdr(channel.Magic, 1, byte(channel.TypeHello), 3, 0), 1, 2, 3), "HELLO: truncated"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn, err := s.Appliances[1].Dial(&net.Dialer{Timeout: time.Second}, "tcp", channel.DefaultBindAddress)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write(c.stream); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			// The fast path may answer with a REJECT; then it must close.
			if _, err := io.ReadAll(conn); err != nil {
				t.Fatalf("connection not closed by the fast path: %v", err)
			}
			deadline := time.Now().Add(2 * time.Second)
			for {
				found := false
				for _, e := range h.logs.find("") {
					if strings.Contains(fmt.Sprint(e.Data["reason"]), c.reason) {
						found = true
					}
				}
				if found {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no log with reason %q", c.reason)
				}
				time.Sleep(5 * time.Millisecond)
			}
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
	waitState(t, "fast path", h.srv.Status, channel.StateListening, 3*time.Second)
	conn, err := s.Appliances[1].Dial(&net.Dialer{Timeout: time.Second}, "tcp", channel.DefaultBindAddress)
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
	lost := h.logs.waitAfter(t, mark, "slow path binding lost", 3*time.Second)
	if !strings.Contains(fmt.Sprint(lost.Data["reason"]), "invalid action(42)") {
		t.Fatalf("session closed for %v", lost.Data["reason"])
	}
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("connection not closed after a malformed batch: %v", err)
	}
	startAppliance(t, s.Appliances[0], appOpts{})
	waitState(t, "fast path", h.srv.Status, channel.StateBound, 3*time.Second)
}

func TestUnboundWarningIsRateLimited(t *testing.T) {
	s := site(t, 1)
	h := startHost(t, s, hostOpts{unboundWarn: 100 * time.Millisecond})
	st := h.srv.Status()
	if got := strings.Join(st.EnginesOff, ","); got != "ips,wrs" || st.State != channel.StateListening {
		t.Fatalf("unbound status: state %q, engines offline %q", st.State, got)
	}
	time.Sleep(1050 * time.Millisecond)
	warnings := h.logs.find("slow path not bound")
	if n := len(warnings); n < 8 || n > 11 {
		t.Fatalf("%d warnings in 1.05s at one per 100ms", n)
	}
	if warnings[0].Data["engines_offline"] != "ips,wrs" {
		t.Errorf("warning fields: %v", warnings[0].Data)
	}
	startAppliance(t, s.Appliances[0], appOpts{})
	waitState(t, "fast path", h.srv.Status, channel.StateBound, 3*time.Second)
	n := len(h.logs.find("slow path not bound"))
	time.Sleep(400 * time.Millisecond)
	if m := len(h.logs.find("slow path not bound")); m != n {
		t.Fatalf("%d 'not bound' warnings while bound", m-n)
	}
	if st := h.srv.Status(); len(st.EnginesOff) != 0 {
		t.Fatalf("engines offline while bound with ips,wrs: %v", st.EnginesOff)
	}
}

// slowUnbinder is a handler whose Unbound takes a while (as the punt
// engine's does, deciding what it holds); it records a Bound that comes
// while an Unbound is still running.
type slowUnbinder struct {
	delay     time.Duration
	mu        sync.Mutex
	unbinding bool
	bounds    int
	overlaps  int
}

func (h *slowUnbinder) Bound(*channel.Session, channel.Result) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.bounds++
	if h.unbinding {
		h.overlaps++
	}
}

func (h *slowUnbinder) Unbound(error) {
	h.mu.Lock()
	h.unbinding = true
	h.mu.Unlock()
	time.Sleep(h.delay)
	h.mu.Lock()
	h.unbinding = false
	h.mu.Unlock()
}

func (h *slowUnbinder) HandleFrame(channel.Frame) error { return nil }

func (h *slowUnbinder) counts() (bounds, overlaps int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bounds, h.overlaps
}

// TestNextBindingWaitsForUnbound loses a binding while a second slow path
// keeps asking: it is admitted only once the handler has let go of the first
// (else the first's Unbound would stop inspection under the second).
func TestNextBindingWaitsForUnbound(t *testing.T) {
	s := site(t, 2)
	hd := &slowUnbinder{delay: 1500 * time.Millisecond}
	h := startHost(t, s, hostOpts{handler: hd})
	first := startAppliance(t, s.Appliances[0], appOpts{})
	waitState(t, "fast path", h.srv.Status, channel.StateBound, 3*time.Second)
	second := startAppliance(t, s.Appliances[1], appOpts{})
	second.logs.wait(t, "binding rejected by fast path: already bound", 3*time.Second)
	first.stop()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if b, _ := hd.counts(); b == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second slow path was never bound")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, overlaps := hd.counts(); overlaps != 0 {
		t.Fatal("the second slow path was bound while the first's Unbound still ran")
	}
}

// eventCounter is a slow-path handler that counts the event batches it gets.
type eventCounter struct{ n atomic.Int64 }

func (e *eventCounter) Bound(*channel.Session, channel.Result) {}
func (e *eventCounter) Unbound(error)                          {}
func (e *eventCounter) HandleFrame(f channel.Frame) error {
	if f.Type == channel.TypeEventBatch {
		e.n.Add(1)
	}
	return nil
}

func TestEventsOnlyWhenNegotiated(t *testing.T) {
	ev := channel.EventRecord{Kind: channel.EventGuestProtectionFailed, Body: []byte(`{"guest":"g1"}`)}
	for _, c := range []struct {
		name string
		caps channel.Capabilities
		want error
	}{{"without", channel.CapIPS, bindserver.ErrNoEvents}, {"with", channel.CapIPS | channel.CapEvents, nil}} {
		t.Run(c.name, func(t *testing.T) {
			s := site(t, 1)
			h := startHost(t, s, hostOpts{})
			got := &eventCounter{}
			startAppliance(t, s.Appliances[0], appOpts{caps: c.caps, handler: got})
			waitState(t, "fast path", h.srv.Status, channel.StateBound, 3*time.Second)
			for i := 0; i < 3; i++ {
				if err := h.srv.Publish(ev); err != c.want {
					t.Fatalf("publish: %v, want %v", err, c.want)
				}
			}
			time.Sleep(200 * time.Millisecond)
			want := int64(3)
			if c.want != nil {
				want = 0
				if n := len(h.logs.find("slow path did not negotiate events")); n != 1 {
					t.Errorf("logged %d times, want once per binding", n)
				}
			}
			if n := got.n.Load(); n != want {
				t.Fatalf("the slow path received %d event batches, want %d", n, want)
			}
		})
	}
}
