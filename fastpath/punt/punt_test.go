package punt_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/palisade/palisade/fastpath/bindserver"
	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/fastpath/guests"
	"github.com/palisade/palisade/fastpath/policy"
	"github.com/palisade/palisade/fastpath/punt"
	"github.com/palisade/palisade/hypervisor/lab"
	"github.com/palisade/palisade/hypervisor/lab/wait"
	"github.com/palisade/palisade/slowpath/bindclient"
)

const marker = "EVIL-MARKER"

// holdMarker makes the test slow path keep a packet without a verdict.
const holdMarker = "HOLD-ME"

var secret = []byte("0123456789abcdef0123456789abcdef")

// How long a request is given: one that must be answered gets as long as
// only a broken path takes; one that must not be answered gets a moment (a
// slow machine can only make that pass).
const (
	mustAnswer = wait.Limit
	noAnswer   = 700 * time.Millisecond
)

// slowPath is a minimal slow path for these tests: it drops (and blocks the
// flow of) any packet containing the marker, allows the rest, and offloads a
// flow after offloadAfter packets (0: never).
type slowPath struct {
	offloadAfter int
	reject       bool // answer the marker with reject instead of drop
	silent       bool // leave packets containing holdMarker unanswered
	unanswered   int  // packets left unanswered because of silent
	mu           sync.Mutex
	sess         *channel.Session
	seen         map[uint64]int
	punts        int
	// Packets containing one of these markers are allowed only when the
	// test says so (unpark).
	park   []string
	parked map[string][]channel.VerdictRecord
}

// unpark sends the verdicts held back for packets containing m.
func (s *slowPath) unpark(m string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	vs := s.parked[m]
	delete(s.parked, m)
	return s.verdicts(vs)
}

// parkedFor is how many packets containing m wait for unpark.
func (s *slowPath) parkedFor(m string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.parked[m])
}

// verdicts sends vs (none: nothing); s.mu is held.
func (s *slowPath) verdicts(vs []channel.VerdictRecord) error {
	if len(vs) == 0 {
		return nil
	}
	p, err := channel.AppendVerdictBatch(nil, vs)
	if err != nil {
		return err
	}
	return s.sess.Send(channel.TypeVerdictBatch, p)
}

func (s *slowPath) Bound(sess *channel.Session, _ channel.Result) {
	s.mu.Lock()
	s.sess = sess
	s.mu.Unlock()
}
func (s *slowPath) Unbound(error) {}

func (s *slowPath) HandleFrame(f channel.Frame) error {
	if f.Type != channel.TypePuntBatch {
		return nil
	}
	var vs []channel.VerdictRecord
	s.mu.Lock()
	defer s.mu.Unlock()
	err := channel.DecodePuntBatch(f.Payload, func(r channel.PuntRecord) error {
		s.punts++
		s.seen[r.FlowID]++
		if s.silent && bytes.Contains(r.Data, []byte(holdMarker)) {
			s.unanswered++
			return nil
		}
		v := channel.VerdictRecord{Guest: r.Guest, FlowID: r.FlowID, PacketID: r.PacketID, Action: channel.ActionAllow}
		for _, m := range s.park {
			if bytes.Contains(r.Data, []byte(m)) {
				if s.parked == nil {
					s.parked = map[string][]channel.VerdictRecord{}
				}
				s.parked[m] = append(s.parked[m], v)
				return nil
			}
		}
		switch {
		case bytes.Contains(r.Data, []byte(marker)):
			v.Action, v.Flow = channel.ActionDrop, channel.FlowBlock
			if s.reject {
				v.Action = channel.ActionReject
			}
		case s.offloadAfter > 0 && s.seen[r.FlowID] >= s.offloadAfter:
			v.Flow = channel.FlowOffload
		}
		vs = append(vs, v)
		return nil
	})
	if err != nil {
		return err
	}
	return s.verdicts(vs)
}

func (s *slowPath) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.punts
}

type rig struct {
	hideSlots atomic.Bool // the engine is told no guest holds any slot
	t         *testing.T
	lab       *lab.Lab
	site      *lab.Site
	web       *lab.Endpoint
	peer      *lab.Endpoint
	dp        *datapath.Datapath
	mgr       *guests.Manager
	engine    *punt.Engine
	slow      *slowPath
	stopSlow  func()
}

func quiet() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func newRig(t *testing.T, offloadAfter int, inspectionFailure string) *rig {
	t.Helper()
	return newRigMode(t, offloadAfter, inspectionFailure, policy.Inline)
}

func newRigMode(t *testing.T, offloadAfter int, inspectionFailure string, mode policy.Mode) *rig {
	t.Helper()
	return newRigHolding(t, offloadAfter, inspectionFailure, mode, 0)
}

// newRigHolding is newRigMode with the engine's verdict timeout set (0: a
// minute).
func newRigHolding(t *testing.T, offloadAfter int, inspectionFailure string, mode policy.Mode, verdictTimeout time.Duration) *rig {
	t.Helper()
	return newRigWith(t, rigOpts{offloadAfter: offloadAfter, failure: inspectionFailure, mode: mode, verdictTimeout: verdictTimeout})
}

type rigOpts struct {
	offloadAfter int
	failure      string // the guest's inspection_failure
	mode         policy.Mode
	// verdictTimeout is the engine's; 0: a minute. These tests wait for
	// verdicts rather than race fastpathd's 50 ms against a loaded machine
	// (which fails packets by policy, and the tests with them); the timeout
	// itself is tested on the engine's clock (engine_test.go).
	verdictTimeout time.Duration
	totalBytes     int // the host's bound on held bytes (0: the default)
	// beforeEngine runs on the datapath before the engine is made.
	beforeEngine func(*datapath.Datapath) error
}

func newRigWith(t *testing.T, o rigOpts) *rig {
	t.Helper()
	offloadAfter, inspectionFailure, mode, verdictTimeout := o.offloadAfter, o.failure, o.mode, o.verdictTimeout
	if verdictTimeout == 0 {
		verdictTimeout = time.Minute
	}
	l := lab.ForTest(t)
	site, err := l.Site("esx", 1)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, lab: l, site: site}
	if r.web, err = l.Endpoint(site, "web", "vnic-web", 10, nil); err != nil {
		t.Fatal(err)
	}
	if r.peer, err = l.Endpoint(site, "peer", "peer0", 20, nil); err != nil {
		t.Fatal(err)
	}
	if r.dp, err = datapath.Open(datapath.Config{PinDir: filepath.Join(lab.BPFFSForTest(t), "palisade")}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.dp.Close() })
	if r.mgr, err = guests.New(guests.Config{Datapath: r.dp, StateFile: filepath.Join(t.TempDir(), "g.json"),
		Links: site.Host.Netlink(), Log: quiet()}); err != nil {
		t.Fatal(err)
	}
	if o.beforeEngine != nil {
		if err := o.beforeEngine(r.dp); err != nil {
			t.Fatal(err)
		}
	}
	err = site.Host.Do(func() (err error) {
		// The packet socket belongs to the namespace it is made in.
		// Bounds like fastpathd's with --punt-queue 1024: room for a TCP
		// window of 64 KiB super-packets.
		r.engine, err = punt.New(punt.Config{Datapath: r.dp, Links: site.Host.Netlink(), Log: quiet(),
			GuestPackets: 1024, GuestBytes: 4 << 20, TotalBytes: o.totalBytes, VerdictTimeout: verdictTimeout,
			GuestOf: func(slot uint32) (punt.Guest, bool) {
				if r.hideSlots.Load() {
					return punt.Guest{}, false
				}
				g, ok := r.mgr.BySlot(slot)
				return punt.Guest{ID: g.ID, FailClosed: g.FailClosed, Tap: g.Tap}, ok
			}})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := r.engine.Run(ctx); err != nil {
			t.Errorf("engine: %v", err)
		}
	}()

	srv, err := bindserver.New(bindserver.Config{Self: channel.Identity{Version: channel.Current(), Revision: channel.ProtocolRevision,
		Capabilities: channel.CapIPS | channel.CapOffload}, Secret: secret, Handler: r.engine, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := site.Host.Listen("tcp", channel.DefaultBindAddress)
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ctx, ln); err != nil {
			t.Errorf("bind server: %v", err)
		}
	}()
	r.slow = &slowPath{offloadAfter: offloadAfter, seen: map[uint64]int{}}
	r.startSlowPath()

	p := &policy.Policy{Mode: mode, DefaultAction: policy.Deny, Inspection: []string{"ips"}, InspectionFailure: inspectionFailure,
		Rules: []policy.Rule{
			{ID: 1, Action: policy.Allow, Direction: policy.Inbound, Protocol: "tcp", DestinationPorts: []string{"80"}},
			{ID: 2, Action: policy.Allow, Direction: policy.Inbound, Protocol: "udp", DestinationPorts: []string{"7000"}},
			{ID: 3, Action: policy.Allow, Direction: policy.Outbound},
		}}
	if err := site.Host.Do(func() error { return r.mgr.Activate("web", "vnic-web", p) }); err != nil {
		t.Fatal(err)
	}
	return r
}

// startSlowPath binds the in-test slow path from the appliance and waits
// until punting is on.
func (r *rig) startSlowPath() {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := bindclient.New(bindclient.Config{
		Self:   channel.Identity{Version: channel.Current(), Revision: channel.ProtocolRevision, Capabilities: channel.CapIPS | channel.CapOffload},
		Secret: func() ([]byte, error) { return secret, nil },
		Dial: func(ctx context.Context) (net.Conn, error) {
			return r.site.Appliances[0].DialContext(ctx, &net.Dialer{}, "tcp", channel.DefaultBindAddress)
		},
		Handler: r.slow, Log: quiet(),
	})
	if err != nil {
		r.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	r.stopSlow = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				r.t.Errorf("bind client: %v", err)
			}
		})
	}
	r.t.Cleanup(r.stopSlow)
	wait.For(r.t, "slow path bound", func() bool { return r.engine.Stats().Bound })
}

// dialWeb connects the peer to the guest's web server; the connection is
// closed when the test ends.
func (r *rig) dialWeb() net.Conn {
	r.t.Helper()
	c, err := r.peer.NS.Dial(&net.Dialer{Timeout: mustAnswer}, "tcp", "198.51.100.10:80")
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	return c
}

// settledStats returns the engine's counters once done says they are
// complete: the engine counts a write when it returns, which can be after
// the packet has arrived.
func (r *rig) settledStats(what string, done func(punt.Stats) bool) punt.Stats {
	r.t.Helper()
	var st punt.Stats
	wait.ForErr(r.t, what, func() error {
		if st = r.engine.Stats(); !done(st) {
			return fmt.Errorf("engine %+v", st)
		}
		return nil
	})
	return st
}

// waitUnbound waits until the engine has seen the slow path go.
func (r *rig) waitUnbound() {
	r.t.Helper()
	wait.For(r.t, "the engine notices the slow path going", func() bool { return !r.engine.Stats().Bound })
}

func (r *rig) counters() datapath.Counters {
	r.t.Helper()
	st, err := r.mgr.Stats("web")
	if err != nil {
		r.t.Fatal(err)
	}
	return datapath.Counters{Values: st.Counters, Drops: st.Drops}
}

// httpServer answers each request line with a response line.
func (r *rig) httpServer() {
	ln, err := r.web.NS.Listen("tcp", "198.51.100.10:80")
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { ln.Close() })
	go lab.AcceptLoop(ln, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK for %s", line)
		}
	})
}

func (r *rig) request(c net.Conn, line string, timeout time.Duration) (string, error) {
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}
	if _, err := fmt.Fprintf(c, "%s\n", line); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

func TestMarkerDroppedCleanRequestServedThenOffloaded(t *testing.T) {
	r := newRig(t, 12, "open")
	r.httpServer()
	c := r.dialWeb()
	for i := 0; i < 20; i++ {
		resp, err := r.request(c, fmt.Sprintf("GET /page%d HTTP/1.1", i), mustAnswer)
		if err != nil || !strings.Contains(resp, fmt.Sprintf("200 OK for GET /page%d", i)) {
			t.Fatalf("request %d: %q %v", i, resp, err)
		}
	}
	before := r.counters()
	if before.Get("punted") == 0 || before.Get("punted") > 14 {
		t.Fatalf("punted %d packets before offload (offload after 12)", before.Get("punted"))
	}
	for i := 0; i < 50; i++ {
		if _, err := r.request(c, fmt.Sprintf("GET /more%d HTTP/1.1", i), mustAnswer); err != nil {
			t.Fatal(err)
		}
	}
	after := r.counters()
	if after.Get("punted") != before.Get("punted") {
		t.Fatalf("offloaded flow still punted: %d -> %d", before.Get("punted"), after.Get("punted"))
	}
	if after.Get("offloaded_hits") < 100 {
		t.Fatalf("offloaded hits %d", after.Get("offloaded_hits"))
	}
	st := r.engine.Stats()
	t.Logf("flow: %d packets punted, then %d passed in the kernel after offload; engine %+v", after.Get("punted"), after.Get("offloaded_hits"), st)

	// A request carrying the marker never reaches the server; the flow is
	// blocked in the kernel from then on.
	c2 := r.dialWeb()
	if _, err := r.request(c2, "GET /clean HTTP/1.1", mustAnswer); err != nil {
		t.Fatal(err)
	}
	resp, err := r.request(c2, "GET /?q="+marker+" HTTP/1.1", noAnswer)
	if err == nil {
		t.Fatalf("request with the marker was answered: %q", resp)
	}
	if st := r.engine.Stats(); st.Blocks != 1 || st.DroppedByVerdict == 0 {
		t.Fatalf("blocked flow: engine %+v", st)
	}
	// TCP retransmits the dropped segment: the kernel drops it.
	wait.ForErr(t, "the blocked flow dropped in the kernel", func() error {
		if d := r.counters().Drops; d["flow_blocked"] == 0 {
			return fmt.Errorf("drops %v", d)
		}
		return nil
	})
}

// TestStreamThroughInspectionKeepsOrder sends a sequence-numbered UDP stream
// through an inspected flow (never offloaded) and checks every datagram
// arrives once, in order.
func TestStreamThroughInspectionKeepsOrder(t *testing.T) {
	r := newRig(t, 0, "closed")
	rx, err := r.web.NS.ListenPacket("udp", "198.51.100.10:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	if err := rx.(*net.UDPConn).SetReadBuffer(8 << 20); err != nil {
		t.Fatal(err)
	}
	tx, err := r.peer.NS.ListenPacket("udp", "198.51.100.20:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	const n = 5000
	got := make(chan []uint64, 1)
	go func() {
		var seqs []uint64
		buf := make([]byte, 64)
		// Until every datagram is in, or the stream has been silent for
		// as long as only a broken path is: then some were lost.
		for len(seqs) < n {
			if err := rx.SetReadDeadline(time.Now().Add(wait.Limit)); err != nil {
				break
			}
			m, _, err := rx.ReadFrom(buf)
			if err != nil {
				break
			}
			seqs = append(seqs, binary.BigEndian.Uint64(buf[:m]))
		}
		got <- seqs
	}()
	dst := &net.UDPAddr{IP: net.ParseIP("198.51.100.10"), Port: 7000}
	var b [8]byte
	start := time.Now()
	for i := 0; i < n; i++ {
		binary.BigEndian.PutUint64(b[:], uint64(i))
		if _, err := tx.WriteTo(b[:], dst); err != nil {
			t.Fatal(err)
		}
		if i%50 == 49 {
			time.Sleep(time.Millisecond) // ~50k datagrams/s at most
		}
	}
	seqs := <-got
	elapsed := time.Since(start)
	for i, s := range seqs {
		if s != uint64(i) {
			t.Fatalf("datagram %d is sequence %d: lost, duplicated or reordered (got %d of %d)", i, s, len(seqs), n)
		}
	}
	if len(seqs) != n {
		t.Fatalf("%d of %d datagrams arrived", len(seqs), n)
	}
	st := r.settledStats("every datagram reinjected", func(st punt.Stats) bool { return st.Reinjected >= uint64(n) })
	if r.slow.count() < n {
		t.Fatalf("not every datagram went through the slow path: slow path saw %d, reinjected %d", r.slow.count(), st.Reinjected)
	}
	t.Logf("%d datagrams through the slow path in %s, all once and in order (%d batches)", n, elapsed.Round(time.Millisecond), st.Batches)
}

func TestSlowPathLossFailsOpenOrClosedThenResumes(t *testing.T) {
	for _, mode := range []string{"open", "closed"} {
		t.Run(mode, func(t *testing.T) {
			r := newRig(t, 0, mode)
			r.httpServer()
			c := r.dialWeb()
			if _, err := r.request(c, "GET /before HTTP/1.1", mustAnswer); err != nil {
				t.Fatal(err)
			}
			r.stopSlow()
			// fastpathd notices the loss when its read of the binding
			// fails; a packet sent before that is held and decided by the
			// disconnect instead (TestDisconnectDecidesHeldPackets).
			r.waitUnbound()
			limit := noAnswer
			if mode == "open" {
				limit = mustAnswer
			}
			resp, err := r.request(c, "GET /while-down HTTP/1.1", limit)
			cnt := r.counters()
			switch mode {
			case "open":
				if err != nil {
					t.Fatalf("fail-open guest stopped flowing: %v", err)
				}
				if cnt.Get("engine_offline") == 0 {
					t.Fatalf("engine_offline not counted: %+v", cnt.Values)
				}
			case "closed":
				if err == nil {
					t.Fatalf("fail-closed guest still flowing: %q", resp)
				}
				if cnt.Drops["engine_offline"] == 0 {
					t.Fatalf("engine_offline drops not counted: %+v", cnt.Drops)
				}
			}
			// Rebind: inspection resumes for new packets.
			punted := cnt.Get("punted")
			r.startSlowPath()
			c2 := r.dialWeb()
			if resp, err := r.request(c2, "GET /after HTTP/1.1", mustAnswer); err != nil || !strings.Contains(resp, "200 OK") {
				t.Fatalf("after rebind: %q %v", resp, err)
			}
			if r.counters().Get("punted") <= punted {
				t.Fatal("inspection did not resume after the rebind")
			}
		})
	}
}

// TestDisconnectDecidesHeldPackets loses the slow path while it holds a
// request it never answers: the disconnect decides it by the guest's fail
// policy (counted as "unbound"), where only the verdict timeout of a minute
// would have otherwise.
func TestDisconnectDecidesHeldPackets(t *testing.T) {
	for _, mode := range []string{"open", "closed"} {
		t.Run(mode, func(t *testing.T) {
			r := newRigHolding(t, 0, mode, policy.Inline, time.Minute)
			r.slow.mu.Lock()
			r.slow.silent = true
			r.slow.mu.Unlock()
			r.httpServer()
			c := r.dialWeb()
			if _, err := fmt.Fprintf(c, "GET /%s HTTP/1.1\n", holdMarker); err != nil {
				t.Fatal(err)
			}
			// Held means: the slow path has it and left it unanswered
			// (the handshake's last ACK is held for a moment too).
			wait.For(t, "the request held", func() bool {
				r.slow.mu.Lock()
				n := r.slow.unanswered
				r.slow.mu.Unlock()
				return n > 0 && r.engine.Stats().Pending > 0
			})
			r.stopSlow()
			r.waitUnbound()
			st := r.settledStats("nothing held after the disconnect", func(st punt.Stats) bool { return st.Pending == 0 })
			if st.FailOpen["timeout"] != 0 || st.FailClosed["timeout"] != 0 {
				t.Fatalf("held packets waited for their timeout instead: %+v", st)
			}
			switch mode {
			case "open":
				if err := c.SetReadDeadline(time.Now().Add(mustAnswer)); err != nil {
					t.Fatal(err)
				}
				resp, err := bufio.NewReader(c).ReadString('\n')
				if err != nil || !strings.Contains(resp, "200 OK") {
					t.Fatalf("fail-open: held request not delivered on disconnect: %q %v", resp, err)
				}
				if st.FailOpen["unbound"] == 0 {
					t.Fatalf("fail_open unbound not counted: %+v", st.FailOpen)
				}
			case "closed":
				if err := c.SetReadDeadline(time.Now().Add(noAnswer)); err != nil {
					t.Fatal(err)
				}
				if resp, err := bufio.NewReader(c).ReadString('\n'); err == nil {
					t.Fatalf("fail-closed: held request answered: %q", resp)
				}
				if st.FailClosed["unbound"] == 0 {
					t.Fatalf("fail_closed unbound not counted: %+v", st.FailClosed)
				}
				if st.DroppedByVerdict != 0 {
					t.Fatalf("a fail-closed drop counted as dropped by a verdict: %+v", st)
				}
			}
		})
	}
}

func TestRejectResetsTheSender(t *testing.T) {
	r := newRig(t, 0, "open")
	r.slow.mu.Lock()
	r.slow.reject = true
	r.slow.mu.Unlock()
	r.httpServer()
	c := r.dialWeb()
	// Reset, not timed out: the answer came.
	_, err := r.request(c, "GET /?q="+marker+" HTTP/1.1", mustAnswer)
	if err == nil || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("a rejected request: %v", err)
	}
	st := r.settledStats("the reset counted", func(st punt.Stats) bool { return st.RejectsAnswered > 0 })
	if st.Rejected != 1 || st.RejectsAnswered != 1 {
		t.Fatalf("engine: %+v", st)
	}
}

// TestGuestToGuestInspectedBothWays connects two inspected guests on one
// host: the packet is held once for the sender's side and once for the
// receiver's, and arrives.
func TestGuestToGuestInspectedBothWays(t *testing.T) {
	r := newRig(t, 0, "closed")
	web2, err := r.lab.Endpoint(r.site, "web2", "vnic-web2", 11, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &policy.Policy{DefaultAction: policy.Deny, Inspection: []string{"ips"}, InspectionFailure: "closed",
		Rules: []policy.Rule{{ID: 1, Action: policy.Allow, Direction: policy.Inbound, Protocol: "tcp", DestinationPorts: []string{"8080"}}}}
	if err := r.site.Host.Do(func() error { return r.mgr.Activate("web2", "vnic-web2", p) }); err != nil {
		t.Fatal(err)
	}
	ln, err := web2.NS.Listen("tcp", "198.51.100.11:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	c, err := r.web.NS.Dial(&net.Dialer{Timeout: mustAnswer}, "tcp", "198.51.100.11:8080")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 10; i++ {
		msg := fmt.Sprintf("guest to guest %d\n", i)
		if err := c.SetDeadline(time.Now().Add(mustAnswer)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		got, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || got != msg {
			t.Fatalf("echo %d: %q %v", i, got, err)
		}
	}
	for _, g := range []string{"web", "web2"} {
		st, err := r.mgr.Stats(g)
		if err != nil {
			t.Fatal(err)
		}
		if st.Counters["punted"] == 0 || st.Counters["reinjected"] == 0 {
			t.Fatalf("%s: punted %d, reinjected %d", g, st.Counters["punted"], st.Counters["reinjected"])
		}
	}
}

func TestTapModeCopiesAndDeliversAtOnce(t *testing.T) {
	r := newRigMode(t, 0, "closed", policy.Tap)
	r.httpServer()
	c := r.dialWeb()
	if resp, err := r.request(c, "GET /?q="+marker+" HTTP/1.1", mustAnswer); err != nil || !strings.Contains(resp, "200 OK") {
		t.Fatalf("tap mode held or dropped a request: %q %v", resp, err)
	}
	// Copies are asynchronous: wait until the engine has seen every copy
	// the datapath sent and both marked ones have their verdicts.
	var st punt.Stats
	var cnt datapath.Counters
	wait.ForErr(t, "every tap copy judged", func() error {
		st, cnt = r.engine.Stats(), r.counters()
		if st.TapWouldDrop < 2 || st.TapVerdicts != cnt.Get("tap_copies") {
			return fmt.Errorf("engine %+v, datapath tap_copies %d", st, cnt.Get("tap_copies"))
		}
		return nil
	})
	// The request and the response both carry the marker: two would-drops.
	if st.TapCopies == 0 || st.Held != 0 || st.TapWouldDrop != 2 || st.Malformed != 0 || cnt.Get("tap_copies") == 0 || cnt.Get("punted") != 0 {
		t.Fatalf("tap: engine %+v, datapath tap_copies %d punted %d", st, cnt.Get("tap_copies"), cnt.Get("punted"))
	}
}

// TestBulkTCPThroughInspection sends bulk TCP (the peer's stack uses GSO:
// held packets are super-packets of up to 64 KiB) through an inspected flow,
// once inspected throughout and once offloaded after 16 packets: both
// transfers must complete intact, and the offloaded one must mostly stay in
// the kernel.
func TestBulkTCPThroughInspection(t *testing.T) {
	for _, c := range []struct {
		name         string
		offloadAfter int
		mb           int
	}{{"inspected", 0, 8}, {"offloaded", 16, 64}} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, c.offloadAfter, "closed")
			ln, err := r.web.NS.Listen("tcp", "198.51.100.10:80")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			got := make(chan int64, 1)
			go lab.AcceptLoop(ln, func(conn net.Conn) {
				n, _ := io.Copy(io.Discard, conn)
				got <- n
			})
			conn, err := r.peer.NS.Dial(&net.Dialer{Timeout: mustAnswer}, "tcp", "198.51.100.10:80")
			if err != nil {
				t.Fatal(err)
			}
			want := int64(c.mb) << 20
			start := time.Now()
			if err := conn.SetDeadline(time.Now().Add(mustAnswer)); err != nil {
				t.Fatal(err)
			}
			if _, err := io.CopyN(conn, zeros{}, want); err != nil {
				t.Fatalf("send: %v after %s", err, time.Since(start))
			}
			conn.Close()
			if n := received(t, "the transfer complete", got); n != want {
				t.Fatalf("guest received %d of %d bytes", n, want)
			}
			took := time.Since(start)
			cnt := r.counters()
			t.Logf("%d MiB in %s (%.0f MB/s): punted %d, offloaded hits %d, reinjected %d",
				c.mb, took.Round(time.Millisecond), float64(want)/1e6/took.Seconds(), cnt.Get("punted"), cnt.Get("offloaded_hits"), cnt.Get("reinjected"))
			if st := r.engine.Stats(); len(st.FailClosed) != 0 {
				t.Fatalf("held packets failed closed: %v", st.FailClosed)
			}
			// After the offload verdict the datapath still punts the flow
			// until every packet held before it is back, so how many more
			// are punted depends on the window in flight, not on a fixed
			// count: what must hold is that most of the flow's packets
			// stayed in the kernel. bench:punt measures 1-2 % punted; under
			// -race with other test packages running, the engine is slower,
			// more is in flight, and up to 14 % has been seen.
			if punted := cnt.Get("punted"); c.offloadAfter > 0 && (cnt.Get("offloaded_hits") == 0 || punted*4 > punted+cnt.Get("offloaded_hits")) {
				t.Fatalf("offload did not take over: punted %d, offloaded hits %d", cnt.Get("punted"), cnt.Get("offloaded_hits"))
			}
		})
	}
}

// received waits for a value on ch.
func received[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	var v T
	wait.For(t, what, func() bool {
		select {
		case v = <-ch:
			return true
		default:
			return false
		}
	})
	return v
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}
