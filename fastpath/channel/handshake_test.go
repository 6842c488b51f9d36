package channel

import (
	"errors"
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
