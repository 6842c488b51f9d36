package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/palisade/palisade/fastpath/bindserver"
	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/fastpath/events"
	"github.com/palisade/palisade/fastpath/heap"
	"github.com/palisade/palisade/hypervisor/lab/wait"
	"github.com/palisade/palisade/slowpath/bindclient"
)

func slotName(slot uint32) string { return fmt.Sprintf("g%d", slot) }

func TestAlertRecord(t *testing.T) {
	at := time.Unix(1700000000, 5)
	good := channel.EventRecord{Kind: channel.EventAlert, Guest: 2, UnixNano: at.UnixNano(), Body: []byte(
		`{"proto":"TCP","src_ip":"203.0.113.9","dest_ip":"198.51.100.10","dest_port":80,` +
			`"alert":{"action":"blocked","signature_id":2001,"signature":"test signature"}}`)}
	rec, err := alertRecord(slotName, good)
	want := events.Record{Guest: "g2", Kind: "alert", RuleID: 2001, Proto: 6, Src: "203.0.113.9", Dst: "198.51.100.10",
		Dport: 80, Count: 1, First: at, Last: at, Message: "blocked: test signature"}
	if err != nil || !sameRecord(rec, want) {
		t.Fatalf("alertRecord = %+v, %v; want %+v", rec, err, want)
	}
	bad := channel.EventRecord{Kind: channel.EventAlert, Guest: 2, UnixNano: at.UnixNano(), Body: []byte(`{"alert":`)}
	rec, err = alertRecord(slotName, bad)
	want = events.Record{Guest: "g2", Kind: "alert", Count: 1, First: at, Last: at, Message: "malformed alert (see fastpathd's log)"}
	if err == nil || !strings.Contains(err.Error(), "alert for guest g2: EVE JSON") || !sameRecord(rec, want) {
		t.Fatalf("a malformed alert: %+v, %v", rec, err)
	}
}

func sameRecord(a, b events.Record) bool {
	return a.First.Equal(b.First) && a.Last.Equal(b.Last) && fmt.Sprint(a.Guest, a.Kind, a.RuleID, a.Proto, a.Src, a.Dst, a.Dport, a.Count, a.Message) ==
		fmt.Sprint(b.Guest, b.Kind, b.RuleID, b.Proto, b.Src, b.Dst, b.Dport, b.Count, b.Message)
}

// TestNoteAlertNotesEvenAMalformedOne: the event is kept (the guest had an
// alert) and the error goes back to the engine, which counts it.
func TestNoteAlertNotesEvenAMalformedOne(t *testing.T) {
	var noted []events.Record
	note := noteAlert(func(r events.Record) { noted = append(noted, r) }, slotName)
	err := note(channel.EventRecord{Kind: channel.EventAlert, Guest: 1, Body: []byte("not json")})
	if err == nil || len(noted) != 1 || noted[0].Guest != "g1" {
		t.Fatalf("noted %+v, error %v", noted, err)
	}
}

// TestRefusalsWaitForTheReporter: a guest refused before the reporter runs
// (the manager exists before the events and the binding) is reported once
// it does, in order, and a full queue never holds the manager up.
func TestRefusalsWaitForTheReporter(t *testing.T) {
	log, hook := logtest.NewNullLogger()
	q := make(chan *heap.ExhaustedError, 2)
	refuse := queueRefusal(q, log)
	refuse(&heap.ExhaustedError{Guest: "a", Need: 3 << 20, Free: 1 << 20, Max: 8 << 20})
	refuse(&heap.ExhaustedError{Guest: "b", Need: 1, Max: 1})
	refuse(&heap.ExhaustedError{Guest: "c"}) // the queue is full: logged, not waited for
	if e := hook.LastEntry(); e == nil || e.Data["guest"] != "c" || e.Level != logrus.WarnLevel {
		t.Fatalf("a refusal over the queue: %v", hook.AllEntries())
	}

	var mu sync.Mutex
	var noted []events.Record
	var published []channel.EventRecord
	note := func(r events.Record) { mu.Lock(); defer mu.Unlock(); noted = append(noted, r) }
	publish := func(rs ...channel.EventRecord) error {
		mu.Lock()
		defer mu.Unlock()
		published = append(published, rs...)
		if len(published) == 2 {
			return errors.New("send queue full")
		}
		return bindserver.ErrNoEvents // logged by the server, once per binding
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); reportRefusals(ctx, q, note, publish, log) }()
	wait.For(t, "both refusals reported", func() bool { mu.Lock(); defer mu.Unlock(); return len(published) == 2 })
	cancel()
	<-done
	if noted[0].Guest != "a" || noted[0].Kind != "guest_protection_failed" || noted[1].Guest != "b" {
		t.Fatalf("noted %+v", noted)
	}
	if p := published[0]; p.Kind != channel.EventGuestProtectionFailed ||
		string(p.Body) != `{"guest":"a","need_bytes":3145728,"free_bytes":1048576,"max_bytes":8388608,"message":"out of memory, guest protection failed"}` {
		t.Fatalf("published %s: %s", p.Kind, p.Body)
	}
	var warned []string
	for _, e := range hook.AllEntries() {
		warned = append(warned, fmt.Sprint(e.Data["guest"], ": ", e.Message))
	}
	if want := []string{"c: guest protection failure not reported to the events and the slow path: too many at once",
		"b: could not tell the slow path that guest protection failed"}; fmt.Sprint(warned) != fmt.Sprint(want) {
		t.Fatalf("logged %q, want %q", warned, want)
	}
}

// eventSender is a slow path of the test's own: it binds and hands over its
// session, so the test can send what no real slow path would.
type eventSender struct{ sess chan *channel.Session }

func (s *eventSender) Bound(sess *channel.Session, _ channel.Result) { s.sess <- sess }
func (s *eventSender) HandleFrame(channel.Frame) error               { return nil }
func (s *eventSender) Unbound(error)                                 {}

// TestMalformedAlertFromTheSlowPath sends the real fastpathd an alert whose
// body is cut short, beside a good one: the bad one is counted in
// `fastpathd inspection` and logged, and both are listed as events.
func TestMalformedAlertFromTheSlowPath(t *testing.T) {
	e := newEnv(t)
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	h := &eventSender{sess: make(chan *channel.Session, 1)}
	c, err := bindclient.New(bindclient.Config{
		Self: channel.Identity{Version: channel.Current(), Revision: channel.ProtocolRevision,
			Capabilities: channel.CapIPS | channel.CapEvents},
		Secret: func() ([]byte, error) { return channel.ReadSecretFile(e.run.SecretFile) },
		Dial: func(ctx context.Context) (net.Conn, error) {
			return e.site.Appliances[0].DialContext(ctx, &net.Dialer{}, "tcp", channel.DefaultBindAddress)
		},
		Handler: h, Log: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("bind client: %v", err)
		}
	})
	var sess *channel.Session
	wait.For(t, "bound", func() bool {
		select {
		case sess = <-h.sess:
			return true
		default:
			return false
		}
	})
	now := time.Now().UnixNano()
	p, err := channel.AppendEventBatch(nil, []channel.EventRecord{
		{Kind: channel.EventAlert, Guest: 0, UnixNano: now, Body: []byte(`{"alert":{"signature":"cut`)},
		{Kind: channel.EventAlert, Guest: 0, UnixNano: now, Body: []byte(`{"alert":{"action":"blocked","signature_id":7,"signature":"whole"}}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.Send(channel.TypeEventBatch, p); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "the malformed alert counted", func() bool { return e.inspection().MalformedEvents == 1 })
	logCtx, logCancel := context.WithTimeout(context.Background(), wait.Limit)
	defer logCancel()
	if err := e.run.Fastpathd.WaitOutput(logCtx, `msg="slow path event not understood"`); err != nil {
		t.Fatal(err)
	}
	out, err := e.cli("events")
	if err != nil || !strings.Contains(out, "malformed alert (see fastpathd's log)") || !strings.Contains(out, "blocked: whole") {
		t.Fatalf("events: %v\n%s", err, out)
	}
	if st := e.inspection(); st.MalformedEvents != 1 {
		t.Fatalf("malformed_events %d, want 1", st.MalformedEvents)
	}
}
