package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/palisade/palisade/fastpath/control/api"
	"github.com/palisade/palisade/hypervisor/lab/wait"
)

func (e *env) heap() api.HeapReport {
	e.t.Helper()
	out, err := e.cli("heap", "--json")
	if err != nil {
		e.t.Fatalf("heap: %v\n%s", err, out)
	}
	var r api.HeapReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		e.t.Fatal(err)
	}
	return r
}

func guestPolicy(maxConns int) string {
	return fmt.Sprintf(`{"default_action":"deny","max_tcp_connections":%d,"max_udp_connections":%d,"rules":[
		{"id":1,"action":"allow","direction":"inbound","protocol":"tcp","destination_ports":["80"]},
		{"id":2,"action":"allow","direction":"inbound","protocol":"udp"},
		{"id":3,"action":"allow","direction":"outbound"}]}`, maxConns, maxConns)
}

func (e *env) activateAs(guest, vnic, policy string) (string, error) {
	return e.cli("activate", guest, "--vnic", vnic, "--policy", e.policyFile(policy))
}

// TestHeapFillsExactlyAndFailsOneGuest fills the budget, checks that the next
// guest is refused with the message (on the host, through the control API,
// in events, and on the slow path), that the guests already protected keep
// passing traffic, and that freeing one lets the refused guest in.
func TestHeapFillsExactlyAndFailsOneGuest(t *testing.T) {
	e := newEnv(t)
	appliance := e.startSlowpathd()
	g2, err := e.lab.Endpoint(e.site, "g2", "vnic-g2", 11, nil)
	if err != nil {
		t.Fatal(err)
	}
	g3, err := e.lab.Endpoint(e.site, "g3", "vnic-g3", 12, nil)
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, e.web.NS, "[::]:80")
	echoServer(t, g2.NS, "[::]:80")
	echoServer(t, g3.NS, "[::]:80")
	if out, err := e.activateAs("web", "vnic-web", guestPolicy(2000)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	r := e.heap()
	per := r.Guests[0].Total
	// Room for exactly one more such guest.
	if out, err := e.cli("heap", "set", fmt.Sprint(r.Reserved+per+per/2)); err != nil {
		t.Fatalf("heap set: %v\n%s", err, out)
	}
	if out, err := e.activateAs("g2", "vnic-g2", guestPolicy(2000)); err != nil {
		t.Fatalf("g2 should fit: %v\n%s", err, out)
	}
	out, err := e.activateAs("g3", "vnic-g3", guestPolicy(2000))
	if err == nil || !strings.Contains(out, "heap_exhausted") || !strings.Contains(out, "out of memory, guest protection failed: guest g3 needs") {
		t.Fatalf("g3 should not fit: %v\n%s", err, out)
	}
	// Everyone hears of it.
	ctx, cancel := context.WithTimeout(context.Background(), wait.Limit)
	defer cancel()
	if err := e.run.Fastpathd.WaitOutput(ctx, `msg="out of memory, guest protection failed"`); err != nil {
		t.Fatal(err)
	}
	if err := appliance.WaitOutput(ctx, "slowpath event received: 2(out of memory, guest protection failed)"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(appliance.Output(), "guest=g3") {
		t.Fatalf("slow path log does not name the guest:\n%s", appliance.Output())
	}
	ev, err := e.cli("events", "--guest", "g3")
	if err != nil || !strings.Contains(ev, "guest_protection_failed") {
		t.Fatalf("events: %v\n%s", err, ev)
	}
	r = e.heap()
	if r.Failures != 1 || r.LastFailure == nil || r.LastFailure.Guest != "g3" || r.LastFailure.Need != per || r.Reserved > r.Max {
		t.Fatalf("heap after refusal: %+v", r)
	}
	if r.KernelReserved != r.KernelMeasured {
		t.Fatalf("reserved for the kernel %d B, kernel reports %d B", r.KernelReserved, r.KernelMeasured)
	}
	text, err := e.cli("heap")
	if err != nil {
		t.Fatalf("heap: %v\n%s", err, text)
	}
	for _, want := range []string{"failed reservations  1", "last failure", "g3 needed", "web", "g2", "kernel-measured"} {
		if !strings.Contains(text, want) {
			t.Errorf("heap output lacks %q:\n%s", want, text)
		}
	}
	// The protected guests keep working; g3 was never touched.
	for _, addr := range []string{"198.51.100.10:80", "198.51.100.11:80", "198.51.100.12:80"} {
		c, err := dial(e.peer.NS, addr, mustAnswer)
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		if err := roundTrip(c, "still here"); err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		c.Close()
	}
	// Shrinking below what is reserved is refused with the numbers.
	out, err = e.cli("heap", "set", "1MiB")
	if err == nil || !strings.Contains(out, "cannot set the heap to 1.00 MiB") || !strings.Contains(out, "is reserved") {
		t.Fatalf("heap set below reserved: %v\n%s", err, out)
	}
	// Free a guest: g3 fits now.
	if out, err := e.cli("deactivate", "g2"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := e.activateAs("g3", "vnic-g3", guestPolicy(2000)); err != nil {
		t.Fatalf("g3 after g2 left: %v\n%s", err, out)
	}
	r = e.heap()
	if len(r.Guests) != 2 || r.KernelReserved != r.KernelMeasured {
		t.Fatalf("heap at the end: %+v", r)
	}
}

// TestConnectionFloodStaysInItsGuest floods one guest's small table with
// 5,000 UDP flows while another guest holds established TCP connections.
func TestConnectionFloodStaysInItsGuest(t *testing.T) {
	e := newEnv(t)
	g2, err := e.lab.Endpoint(e.site, "g2", "vnic-g2", 11, nil)
	if err != nil {
		t.Fatal(err)
	}
	echoServer(t, e.web.NS, "[::]:80")
	if out, err := e.activateAs("web", "vnic-web", guestPolicy(1000)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := e.activateAs("g2", "vnic-g2", guestPolicy(200)); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var conns []net.Conn
	for i := 0; i < 10; i++ {
		c, err := dial(e.peer.NS, "198.51.100.10:80", mustAnswer)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns = append(conns, c)
	}
	flood, err := e.peer.NS.ListenPacket("udp", "198.51.100.20:0")
	if err != nil {
		t.Fatal(err)
	}
	defer flood.Close()
	for i := 0; i < 5000; i++ {
		if _, err := flood.WriteTo([]byte("x"), &net.UDPAddr{IP: g2.Addr4.AsSlice(), Port: 10000 + i}); err != nil {
			t.Fatal(err)
		}
		if i%500 == 0 {
			time.Sleep(5 * time.Millisecond) // let the vNIC keep up
		}
	}
	for i, c := range conns {
		if err := roundTrip(c, fmt.Sprintf("after the flood %d", i)); err != nil {
			t.Fatalf("web connection %d after g2's flood: %v", i, err)
		}
	}
	webStats := e.stats()
	if counter(webStats, "counters", "table_full") != 0 || webStats["tcp_connections"].(float64) < 10 {
		t.Fatalf("web: %v", webStats)
	}
	out, err := e.cli("stats", "g2", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var g2Stats map[string]any
	if err := json.Unmarshal([]byte(out), &g2Stats); err != nil {
		t.Fatalf("stats g2: %v\n%s", err, out)
	}
	if n := counter(g2Stats, "counters", "table_full"); n < 4000 {
		t.Fatalf("g2 table_full %d after 5000 flows into a 200-flow table", n)
	}
	t.Logf("g2: %d new flows evicted its oldest; web kept its 10 connections", counter(g2Stats, "counters", "table_full"))
}

// TestHeapSetSurvivesRestart sets the heap at runtime and restarts fastpathd
// with the same flags: the runtime size stays, and the start log says which
// size won and why, with both sizes as integers. Restarted with an edited
// --heap-max, the flag wins.
func TestHeapSetSurvivesRestart(t *testing.T) {
	e := newEnv(t)
	if out, err := e.cli("heap", "set", "300MiB"); err != nil {
		t.Fatalf("heap set: %v\n%s", err, out)
	}
	restart := func(extra ...string) map[string]any {
		t.Helper()
		if err := e.run.Fastpathd.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := e.lab.RestartFastpathd(e.run, e.output, append([]string{"--log-format", "json"}, extra...)...); err != nil {
			t.Fatal(err)
		}
		e.waitUp()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.run.Fastpathd.WaitOutput(ctx, `"msg":"heap max chosen"`); err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(e.run.Fastpathd.Output(), "\n") {
			dec := json.NewDecoder(strings.NewReader(line))
			dec.UseNumber()
			var m map[string]any
			if dec.Decode(&m) == nil && m["msg"] == "heap max chosen" {
				return m
			}
		}
		t.Fatalf("no heap max line:\n%s", e.run.Fastpathd.Output())
		return nil
	}
	want := func(fields map[string]any, chosen string, flag, saved, max uint64) {
		t.Helper()
		if fields["chosen"] != chosen || fields["flag_bytes"] != json.Number(fmt.Sprint(flag)) ||
			fields["saved_bytes"] != json.Number(fmt.Sprint(saved)) || fields["max_bytes"] != json.Number(fmt.Sprint(max)) {
			t.Fatalf("start log: %v; want chosen=%s flag_bytes=%d saved_bytes=%d max_bytes=%d", fields, chosen, flag, saved, max)
		}
		if r := e.heap(); r.Max != max {
			t.Fatalf("heap max %d after restart, want %d", r.Max, max)
		}
	}
	want(restart(), "saved", 256<<20, 300<<20, 300<<20)
	want(restart("--heap-max", "400MiB"), "flag", 400<<20, 300<<20, 400<<20)
}
