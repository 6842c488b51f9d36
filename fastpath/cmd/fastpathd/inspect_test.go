package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/palisade/palisade/fastpath/punt"
	"github.com/palisade/palisade/hypervisor/lab/wait"
)

const inspectedPolicy = `{"default_action":"deny","inspection":["ips"],"inspection_failure":"%s","rules":[
	{"id":1,"action":"allow","direction":"inbound","protocol":"tcp","destination_ports":["80"]},
	{"id":2,"action":"allow","direction":"outbound"}]}`

func (e *env) inspection() punt.Stats {
	e.t.Helper()
	out, err := e.cli("inspection", "--json")
	if err != nil {
		e.t.Fatalf("inspection: %v\n%s", err, out)
	}
	var st punt.Stats
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		e.t.Fatal(err)
	}
	return st
}

// TestInspectionThroughRealDaemons runs the inline inspection path between
// the real fastpathd and slowpathd: a request with the marker is dropped and
// its flow blocked, clean flows are served and offloaded after 8 packets,
// and when slowpathd is killed the fail-open guest keeps flowing until a new
// slowpathd takes inspection up again.
func TestInspectionThroughRealDaemons(t *testing.T) {
	e := newEnv(t)
	app := e.startSlowpathd("--drop-marker", "EVIL-MARKER", "--offload-after", "8")
	echoServer(t, e.web.NS, "[::]:80")
	e.activate(strings.Replace(inspectedPolicy, "%s", "open", 1))

	c, err := dial(e.peer.NS, "198.51.100.10:80", mustAnswer)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 30; i++ {
		if err := roundTrip(c, "GET /clean HTTP/1.1"); err != nil {
			t.Fatalf("clean request %d: %v", i, err)
		}
	}
	st := e.stats()
	punted, offloaded := counter(st, "counters", "punted"), counter(st, "counters", "offloaded_hits")
	if punted == 0 || punted > 10 || offloaded < 40 {
		t.Fatalf("a clean flow should be offloaded after 8 packets: punted %d, offloaded hits %d", punted, offloaded)
	}

	bad, err := dial(e.peer.NS, "198.51.100.10:80", mustAnswer)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if err := roundTripWithin(bad, "GET /?q=EVIL-MARKER HTTP/1.1", noAnswer); err == nil {
		t.Fatal("a request with the marker was answered")
	}
	insp := e.inspection()
	if insp.Blocks != 1 || insp.Verdicts["drop"] == 0 || insp.Offloads < 1 {
		t.Fatalf("inspection after the marker: %+v", insp)
	}

	// Kill the slow path mid-stream: the fail-open guest keeps flowing.
	fresh, err := dial(e.peer.NS, "198.51.100.10:80", mustAnswer)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	if err := roundTrip(fresh, "GET /one HTTP/1.1"); err != nil {
		t.Fatal(err)
	}
	if err := app.Kill(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if err := roundTrip(fresh, "GET /while-down HTTP/1.1"); err != nil {
			t.Fatalf("fail-open guest stopped while slowpathd was down: %v", err)
		}
	}
	if counter(e.stats(), "counters", "engine_offline") == 0 {
		t.Fatal("no engine_offline passes counted while slowpathd was down")
	}
	// A new slowpathd: inspection resumes for new packets.
	punted = counter(e.stats(), "counters", "punted")
	e.startSlowpathd("--drop-marker", "EVIL-MARKER", "--offload-after", "8")
	wait.For(t, "inspection bound again", func() bool { return e.inspection().Bound })
	again, err := dial(e.peer.NS, "198.51.100.10:80", mustAnswer)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if err := roundTrip(again, "GET /after HTTP/1.1"); err != nil {
		t.Fatal(err)
	}
	if counter(e.stats(), "counters", "punted") <= punted {
		t.Fatal("inspection did not resume after slowpathd came back")
	}
}
