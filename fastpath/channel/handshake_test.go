package channel

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// pair returns both ends of a real loopback TCP connection.
func pair(t *testing.T) (server, client *Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- nil
			return
		}
		done <- c
	}()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc := <-done
	if sc == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { sc.Close(); cc.Close() })
	return NewConn(sc), NewConn(cc)
}

type side struct {
	version  string
	revision uint32
	secret   []byte
	caps     Capabilities
}

func handshake(t *testing.T, host, app side) (hostRes Result, hostErr error, appRes Result, appErr error) {
	t.Helper()
	s, c := pair(t)
	errc := make(chan struct{})
	go func() {
		defer close(errc)
		hostRes, hostErr = s.Accept(AcceptConfig{
			Self:   Identity{Version: MustParseVersion(host.version), Revision: host.revision, Capabilities: host.caps, ID: "esx-01"},
			Secret: host.secret, SessionID: 7, Keepalive: time.Second, DeadAfter: 3 * time.Second,
		})
	}()
	appRes, appErr = c.Offer(OfferConfig{
		Self:   Identity{Version: MustParseVersion(app.version), Revision: app.revision, Capabilities: app.caps, ID: "dsva-01"},
		Secret: app.secret,
	})
	<-errc
	return
}

func TestHandshakeBindsAndNegotiates(t *testing.T) {
	hr, herr, ar, aerr := handshake(t,
		side{"1.2.3.200", 1, testSecret, CapFirewall | CapIPS | CapEvents},
		side{"1.2.3.100", 1, testSecret, CapIPS | CapWRS | CapEvents})
	if herr != nil || aerr != nil {
		t.Fatalf("host %v, appliance %v", herr, aerr)
	}
	if hr.Negotiated != CapIPS|CapEvents || ar.Negotiated != CapIPS|CapEvents {
		t.Fatalf("negotiated host=%s appliance=%s, want ips,events", hr.Negotiated, ar.Negotiated)
	}
	if hr.Peer.ID != "dsva-01" || ar.Peer.ID != "esx-01" || ar.SessionID != 7 || ar.PeerDeadAfter != 3*time.Second {
		t.Fatalf("results: host %+v appliance %+v", hr, ar)
	}
	if hr.Peer.Version.String() != "1.2.3.100" || ar.Peer.Version.String() != "1.2.3.200" {
		t.Fatalf("peer versions: %s %s", hr.Peer.Version, ar.Peer.Version)
	}
}

func TestHandshakeRefusals(t *testing.T) {
	wrong := []byte("fedcba9876543210fedcba9876543210")
	cases := []struct {
		name      string
		host, app side
		code      RejectCode
		hostSays  []string
	}{
		{"version", side{"1.2.3.200", 1, testSecret, 0}, side{"1.2.2.100", 1, testSecret, 0}, RejectVersionMismatch,
			[]string{"version mismatch", "1.2.2.100:rev=1", "1.2.3.x:rev=1", "1.2.3.200"}},
		{"revision", side{"1.2.3.200", 2, testSecret, 0}, side{"1.2.3.100", 1, testSecret, 0}, RejectRevision,
			[]string{"revision mismatch", "1.2.3.100:rev=1", "1.2.3.x:rev=2"}},
		{"secret", side{"1.2.3.200", 1, testSecret, 0}, side{"1.2.3.200", 1, wrong, 0}, RejectSecretMismatch,
			[]string{"secret mismatch"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, herr, _, aerr := handshake(t, c.host, c.app)
			var hr, ar *RejectedError
			if !errors.As(herr, &hr) || !hr.Local || hr.Code != c.code {
				t.Fatalf("host: got %v, want a local %s refusal", herr, c.code)
			}
			if !errors.As(aerr, &ar) || ar.Local || ar.Code != c.code {
				t.Fatalf("appliance: got %v, want the host's %s refusal", aerr, c.code)
			}
			for _, want := range c.hostSays {
				if !strings.Contains(hr.Message, want) {
					t.Errorf("refusal %q does not name %q", hr.Message, want)
				}
			}
			if ar.Message != hr.Message {
				t.Errorf("appliance saw %q, host said %q", ar.Message, hr.Message)
			}
			if c.code == RejectSecretMismatch && (strings.Contains(hr.Message, string(testSecret)) || strings.Contains(hr.Message, string(wrong))) {
				t.Error("refusal leaks the secret")
			}
		})
	}
}

func TestHandshakeRefusesHostWithoutSecret(t *testing.T) {
	// A host that answers WELCOME without knowing the secret (a fake fast
	// path) must not be accepted by the slow path.
	s, c := pair(t)
	go func() {
		f, err := s.R.ReadFrame()
		if err != nil || f.Type != TypeHello {
			return
		}
		ch := Challenge{Version: MustParseVersion("1.2.3.1"), Revision: 1}
		_ = s.send(TypeChallenge, ch)
		if _, err := s.R.ReadFrame(); err != nil {
			return
		}
		_ = s.send(TypeWelcome, Welcome{SessionID: 1})
	}()
	_, err := c.Offer(OfferConfig{Self: Identity{Version: MustParseVersion("1.2.3.1"), Revision: 1}, Secret: testSecret})
	var re *RejectedError
	if !errors.As(err, &re) || !re.Local || re.Code != RejectSecretMismatch {
		t.Fatalf("fake host accepted: %v", err)
	}
}

func TestHandshakeRejectsOutOfOrderFirstFrame(t *testing.T) {
	s, c := pair(t)
	go func() {
		p, _ := AppendVerdictBatch(nil, nil)
		_ = c.W.WriteFrame(TypeVerdictBatch, p)
		_ = c.W.Flush()
	}()
	_, err := s.Accept(AcceptConfig{Self: Identity{Version: MustParseVersion("1.2.3.1"), Revision: 1}, Secret: testSecret})
	if RejectCodeOf(err) != RejectProtocol || !strings.Contains(err.Error(), "VERDICT_BATCH before HELLO") {
		t.Fatalf("got %v", err)
	}
}

func boundSessions(t *testing.T, hostCfg, appCfg SessionConfig) (host, app *Session) {
	t.Helper()
	s, c := pair(t)
	done := make(chan error, 1)
	go func() {
		_, err := s.Accept(AcceptConfig{Self: Identity{Version: Current(), Revision: ProtocolRevision}, Secret: testSecret})
		done <- err
	}()
	if _, err := c.Offer(OfferConfig{Self: Identity{Version: Current(), Revision: ProtocolRevision}, Secret: testSecret}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	hostCfg.Role, appCfg.Role = RoleFastPath, RoleSlowPath
	return NewSession(s, hostCfg), NewSession(c, appCfg)
}

func TestSessionBatchesWrites(t *testing.T) {
	got := make(chan int, 1)
	n := 0
	host, app := boundSessions(t,
		SessionConfig{Keepalive: time.Hour, DeadAfter: 2 * time.Hour, QueueDepth: 4096},
		SessionConfig{Keepalive: time.Hour, DeadAfter: 2 * time.Hour, Handle: func(f Frame) error {
			if n++; n == 2000 {
				got <- n
			}
			return nil
		}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go host.Run(ctx)
	go app.Run(ctx)
	ev, _ := AppendEventBatch(nil, []EventRecord{{Kind: EventEngineStatus, Body: []byte(`{}`)}})
	for i := 0; i < 2000; i++ {
		if err := host.Send(TypeEventBatch, ev); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatalf("only %d of 2000 frames arrived", n)
	}
	_, out, writes := host.Counters()
	t.Logf("2000 frames in %d writes (%.0f frames per write)", writes, float64(out)/float64(writes))
	if writes*10 > out {
		t.Fatalf("%d frames took %d writes: not batched", out, writes)
	}
}

func TestSessionDetectsSilentPeer(t *testing.T) {
	host, app := boundSessions(t,
		SessionConfig{Keepalive: 50 * time.Millisecond, DeadAfter: 300 * time.Millisecond},
		SessionConfig{})
	_ = app // bound, then never runs: silent, as a frozen appliance is
	start := time.Now()
	err := host.Run(context.Background())
	took := time.Since(start)
	var dead *DeadPeerError
	if !errors.As(err, &dead) {
		t.Fatalf("got %v, want DeadPeerError", err)
	}
	if took < 300*time.Millisecond || took > 800*time.Millisecond {
		t.Fatalf("silent peer detected after %s, bound is 300ms", took)
	}
}

func TestSessionClosesOnOutOfOrderFrame(t *testing.T) {
	host, app := boundSessions(t, SessionConfig{}, SessionConfig{})
	go func() {
		// The slow path never sends punts: a PUNT_BATCH from it is out of order.
		p, _ := AppendPuntBatch(nil, nil)
		_ = app.conn.W.WriteFrame(TypePuntBatch, p)
		_ = app.conn.W.Flush()
	}()
	err := host.Run(context.Background())
	if !IsProtocolError(err) || !strings.Contains(err.Error(), "out-of-order frame: PUNT_BATCH after binding") {
		t.Fatalf("got %v", err)
	}
}

func TestSessionGoodbyeOnShutdown(t *testing.T) {
	host, app := boundSessions(t, SessionConfig{}, SessionConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	appErr := make(chan error, 1)
	go func() { appErr <- app.Run(context.Background()) }()
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_ = host.Run(ctx)
	var bye *GoodbyeError
	if err := <-appErr; !errors.As(err, &bye) || bye.Reason.Code != RejectShuttingDown {
		t.Fatalf("appliance saw %v, want GOODBYE(shutting down)", err)
	}
}

func TestSessionRTT(t *testing.T) {
	host, app := boundSessions(t, SessionConfig{Keepalive: 20 * time.Millisecond}, SessionConfig{Keepalive: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go host.Run(ctx)
	go app.Run(ctx)
	deadline := time.Now().Add(2 * time.Second)
	for host.RTT() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if rtt := host.RTT(); rtt <= 0 || rtt > time.Second {
		t.Fatalf("keepalive RTT %s", rtt)
	}
}

// TestLargeFrameAfterQuietSpellIsWritten sends a frame larger than the
// Writer's buffer long after the last write: the part that goes straight to
// the connection must be written under a fresh deadline, not the last one.
func TestLargeFrameAfterQuietSpellIsWritten(t *testing.T) {
	host, app := boundSessions(t, SessionConfig{DeadAfter: 100 * time.Millisecond}, SessionConfig{})
	go func() { _, _ = io.Copy(io.Discard, app.conn) }()
	small, _ := AppendEventBatch(nil, []EventRecord{{Kind: EventEngineStatus, Body: []byte(`{}`)}})
	if err := host.writeBatch([]outFrame{{TypeEventBatch, small}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the deadline that write set has passed
	big, err := AppendEventBatch(nil, []EventRecord{{Kind: EventAlert, Body: make([]byte, 60<<10)},
		{Kind: EventAlert, Body: make([]byte, 60<<10)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := host.writeBatch([]outFrame{{TypeEventBatch, big}}); err != nil {
		t.Fatalf("a %d-byte frame after a quiet spell: %v", len(big), err)
	}
}

func TestSendReportsAFullQueue(t *testing.T) {
	host, _ := boundSessions(t, SessionConfig{QueueDepth: 1}, SessionConfig{})
	host.qmu.Lock()
	host.writing = true // a write is in progress: frames queue
	host.qmu.Unlock()
	p, _ := Ping{Token: 1}.Marshal()
	if err := host.Send(TypePing, p); err != nil {
		t.Fatal(err)
	}
	if err := host.Send(TypePing, p); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("second frame into a queue of one: %v", err)
	}
	host.Close(errors.New("test over"))
	if err := host.Send(TypePing, p); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("after close: %v", err)
	}
}
