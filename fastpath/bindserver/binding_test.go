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

	"github.com/jonboulle/clockwork"
	"github.com/sirupsen/logrus"

	"github.com/palisade/palisade/fastpath/bindserver"
	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/hypervisor/lab"
	"github.com/palisade/palisade/hypervisor/lab/wait"
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

func (s *logSink) wait(t *testing.T, msgPrefix string) *logrus.Entry {
	t.Helper()
	return s.waitAfter(t, 0, msgPrefix)
}

func (s *logSink) waitAfter(t *testing.T, mark int, msgPrefix string) *logrus.Entry {
	t.Helper()
	var found *logrus.Entry
	wait.For(t, fmt.Sprintf("log %q", msgPrefix), func() bool {
		if es := s.findAfter(mark, msgPrefix); len(es) > 0 {
			found = es[0]
		}
		return found != nil
	})
	return found
}

type host struct {
	srv  *bindserver.Server
	logs *logSink
}

type hostOpts struct {
	version string
	handler channel.Handler
	timing  channel.Timing // its Clock, if set, is the host's
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
		Endpoint: channel.DefaultBindAddress, Timing: o.timing,
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
	clock   clockwork.Clock // default the real clock
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
		Timing:     channel.Timing{Clock: o.clock},
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

func waitState(t *testing.T, what string, status func() channel.BindingStatus, state string) channel.BindingStatus {
	t.Helper()
	var st channel.BindingStatus
	wait.ForErr(t, what, func() error {
		if st = status(); st.State != state {
			return fmt.Errorf("state %q, want %q (last error: %s)", st.State, state, st.LastError)
		}
		return nil
	})
	return st
}

// refusals is how many refusals the fast path counted under key.
func refusals(h *host, key string) uint64 { return h.srv.Status().Refused[key] }

// blockUntil returns once the host's fake clock has n timers: the unbound
// warning's and the refusal log's, and two per running session (keepalive
// and watchdog).
func blockUntil(t *testing.T, clock *clockwork.FakeClock, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait.Limit)
	defer cancel()
	if err := clock.BlockUntilContext(ctx, n); err != nil {
		t.Fatalf("the host's clock never had %d timers: %v", n, err)
	}
}

func TestBindBetweenNamespaces(t *testing.T) {
	s := site(t, 1)
	h := startHost(t, s, hostOpts{})
	a := startAppliance(t, s.Appliances[0], appOpts{caps: channel.CapIPS | channel.CapEvents})

	hs := waitState(t, "fast path", h.srv.Status, channel.StateBound)
	as := waitState(t, "slow path", a.client.Status, channel.StateBound)
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
	bound := h.logs.wait(t, "slow path bound")
	if bound.Data["slow_path_version"] != "1.2.3.100" || bound.Data["fast_path_version"] != "1.2.3.200" || bound.Data["revision"] != uint32(1) {
		t.Errorf("fast path's bound log lacks both versions/revision: %v", bound.Data)
	}
	abound := a.logs.wait(t, "bound to fast path")
	if abound.Data["slow_path_version"] != "1.2.3.100" || abound.Data["fast_path_version"] != "1.2.3.200" {
		t.Errorf("slow path's bound log lacks both versions: %v", abound.Data)
	}
}

func TestVersionMismatchIsRejectedOnBothSides(t *testing.T) {
	s := site(t, 1)
	h := startHost(t, s, hostOpts{version: "1.2.3.200"})
	a := startAppliance(t, s.Appliances[0], appOpts{version: "1.2.2.100"})

	he := h.logs.wait(t, "HELLO rejected: version mismatch")
	ae := a.logs.wait(t, "binding rejected by fast path: version mismatch")
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
	st := waitState(t, "fast path", h.srv.Status, channel.StateBound)
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
	he := h.logs.wait(t, "HELLO rejected: secret mismatch")
	ae := a.logs.wait(t, "binding rejected by fast path: secret mismatch")
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
	waitState(t, "fast path", h.srv.Status, channel.StateBound)
}

func TestSecondApplianceIsRefusedFirstStaysBound(t *testing.T) {
	s := site(t, 2)
	h := startHost(t, s, hostOpts{})
	first := startAppliance(t, s.Appliances[0], appOpts{})
	st := waitState(t, "fast path", h.srv.Status, channel.StateBound)
	session := st.SessionID

	second := startAppliance(t, s.Appliances[1], appOpts{})
	h.logs.wait(t, "HELLO rejected: already bound")
	ae := second.logs.wait(t, "binding rejected by fast path: already bound")
	if reason := fmt.Sprint(ae.Data["reason"]); !strings.Contains(reason, "one slow path per host") || !strings.Contains(reason, "169.254.1.10") {
		t.Errorf("refusal does not explain itself: %s", reason)
	}
	wait.For(t, "the second appliance to be refused 3 times", func() bool { return refusals(h, "already bound") >= 3 })
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
	}, channel.StateBound)
}

// gatedUnbinder is a handler whose Unbound takes as long as the test says
// (as the punt engine's takes a while, deciding what it holds); it records
// a Bound that comes while an Unbound is still running.
type gatedUnbinder struct {
	release   chan struct{}
	once      sync.Once
	mu        sync.Mutex
	unbinding bool
	bounds    int
	overlaps  int
}

func (h *gatedUnbinder) Bound(*channel.Session, channel.Result) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.bounds++
	if h.unbinding {
		h.overlaps++
	}
}

func (h *gatedUnbinder) Unbound(error) {
	h.mu.Lock()
	h.unbinding = true
	h.mu.Unlock()
	<-h.release
	h.mu.Lock()
	h.unbinding = false
	h.mu.Unlock()
}

func (h *gatedUnbinder) HandleFrame(channel.Frame) error { return nil }

func (h *gatedUnbinder) let() { h.once.Do(func() { close(h.release) }) }

func (h *gatedUnbinder) state() (unbinding bool, bounds, overlaps int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.unbinding, h.bounds, h.overlaps
}

// TestNextBindingWaitsForUnbound loses a binding while a second slow path
// keeps asking: it is refused while the handler lets go of the first, and
// admitted once it has (else the first's Unbound would stop inspection under
// the second).
func TestNextBindingWaitsForUnbound(t *testing.T) {
	s := site(t, 2)
	hd := &gatedUnbinder{release: make(chan struct{})}
	h := startHost(t, s, hostOpts{handler: hd})
	t.Cleanup(hd.let) // before the host stops, even if the test fails early
	first := startAppliance(t, s.Appliances[0], appOpts{})
	waitState(t, "fast path", h.srv.Status, channel.StateBound)
	second := startAppliance(t, s.Appliances[1], appOpts{})
	second.logs.wait(t, "binding rejected by fast path: already bound")
	first.stop()
	wait.For(t, "the first binding's Unbound to run", func() bool { u, _, _ := hd.state(); return u })
	before := refusals(h, "already bound")
	wait.For(t, "the second slow path to be refused while Unbound runs", func() bool { return refusals(h, "already bound") > before })
	hd.let()
	wait.For(t, "the second slow path to be bound", func() bool { _, b, _ := hd.state(); return b == 2 })
	if _, _, overlaps := hd.state(); overlaps != 0 {
		t.Fatal("the second slow path was bound while the first's Unbound still ran")
	}
}

// eventCounter is a slow-path handler that counts the event and punt
// batches it gets.
type eventCounter struct{ events, punts atomic.Int64 }

func (e *eventCounter) Bound(*channel.Session, channel.Result) {}
func (e *eventCounter) Unbound(error)                          {}
func (e *eventCounter) HandleFrame(f channel.Frame) error {
	switch f.Type {
	case channel.TypeEventBatch:
		e.events.Add(1)
	case channel.TypePuntBatch:
		e.punts.Add(1)
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
			waitState(t, "fast path", h.srv.Status, channel.StateBound)
			for i := 0; i < 3; i++ {
				if err := h.srv.Publish(ev); err != c.want {
					t.Fatalf("publish: %v, want %v", err, c.want)
				}
			}
			// A punt batch sent after the events arrives after them: once
			// it is in, every event batch that was sent is too.
			marker, _ := channel.AppendPuntBatch(nil, nil)
			if err := h.srv.Session().Send(channel.TypePuntBatch, marker); err != nil {
				t.Fatal(err)
			}
			wait.For(t, "the marker to arrive", func() bool { return got.punts.Load() == 1 })
			want := int64(3)
			if c.want != nil {
				want = 0
				if n := len(h.logs.find("slow path did not negotiate events")); n != 1 {
					t.Errorf("logged %d times, want once per binding", n)
				}
			}
			if n := got.events.Load(); n != want {
				t.Fatalf("the slow path received %d event batches, want %d", n, want)
			}
		})
	}
}
