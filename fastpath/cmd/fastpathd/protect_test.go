package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/palisade/palisade/hypervisor/lab/wait"
)

const webPolicy = `{
  "name": "web-tier",
  "default_action": "deny",
  "pickup_grace": "1s",
  "rules": [
    {"id": 100, "action": "allow", "direction": "inbound", "protocol": "tcp", "destination_ports": ["80"]},
    {"id": 110, "action": "allow", "direction": "inbound", "protocol": "icmp", "icmp_types": [8]},
    {"id": 120, "action": "log-only", "direction": "inbound", "protocol": "tcp", "destination_ports": ["22"]},
    {"id": 200, "action": "allow", "direction": "outbound"}
  ]
}`

func TestProtectionEnforcesPolicyOnRealTraffic(t *testing.T) {
	e := newEnv(t)
	for _, port := range []string{"80", "22"} {
		echoServer(t, e.web.NS, "[::]:"+port) // dual-stack: IPv4 and IPv6
	}
	// Unprotected: both ports answer.
	for _, port := range []string{"80", "22"} {
		c, err := dial(e.peer.NS, "198.51.100.10:"+port, mustAnswer)
		if err != nil {
			t.Fatalf("before protection, port %s: %v", port, err)
		}
		c.Close()
	}
	e.activate(webPolicy)

	for _, addr := range []string{"198.51.100.10:80", "[2001:db8::a]:80"} {
		c, err := dial(e.peer.NS, addr, mustAnswer)
		if err != nil {
			t.Fatalf("allowed %s: %v", addr, err)
		}
		if err := roundTrip(c, "hello "+addr); err != nil {
			t.Fatalf("allowed %s: %v", addr, err)
		}
		c.Close()
	}
	for _, addr := range []string{"198.51.100.10:22", "[2001:db8::a]:22"} {
		c, err := dial(e.peer.NS, addr, noAnswer)
		if err == nil {
			c.Close()
			t.Fatalf("denied %s: connected", addr)
		}
		if !isTimeout(err) {
			t.Fatalf("denied %s: want a silent drop (timeout), got %v", addr, err)
		}
	}
	// The guest may connect out (rule 200), and the replies come back.
	echoServer(t, e.peer.NS, "0.0.0.0:8080")
	c, err := dial(e.web.NS, "198.51.100.20:8080", mustAnswer)
	if err != nil {
		t.Fatalf("outbound: %v", err)
	}
	if err := roundTrip(c, "out"); err != nil {
		t.Fatalf("outbound: %v", err)
	}
	c.Close()

	st := e.stats()
	if counter(st, "drops", "default_deny") == 0 || counter(st, "counters", "new_connections") < 3 {
		t.Fatalf("stats: %v", st)
	}
	hits := map[float64]float64{}
	for _, r := range st["rule_hits"].([]any) {
		m := r.(map[string]any)
		hits[m["id"].(float64)] = m["hits"].(float64)
	}
	if hits[100] < 2 || hits[120] < 2 || hits[200] < 1 {
		t.Fatalf("rule hits %v", hits)
	}
	// Events: the denied SYNs to 22, folded, and the log-only hits.
	wait.ForErr(t, "the deny and log-only events listed", func() error {
		out, err := e.cli("events", "--guest", "web")
		if err != nil || !strings.Contains(out, "deny") || !strings.Contains(out, "log") {
			return fmt.Errorf("%v\n%s", err, out)
		}
		return nil
	})
	out, err := e.cli("events", "--guest", "web")
	if err != nil || !strings.Contains(out, "default_deny") || !strings.Contains(out, "198.51.100.20") {
		t.Fatalf("events: %v\n%s", err, out)
	}
	out, err = e.cli("guests")
	if err != nil || !strings.Contains(out, "web") || !strings.Contains(out, "vnic-web") || !strings.Contains(out, "inline") {
		t.Fatalf("guests: %v\n%s", err, out)
	}
	out, err = e.cli("connections", "web")
	if err != nil || !strings.Contains(out, "198.51.100.10:80") || !strings.Contains(out, "remote") {
		t.Fatalf("connections: %v\n%s", err, out)
	}

	// Deactivated: port 22 answers again.
	if out, err := e.cli("deactivate", "web"); err != nil {
		t.Fatalf("deactivate: %v\n%s", err, out)
	}
	c, err = dial(e.peer.NS, "198.51.100.10:22", mustAnswer)
	if err != nil {
		t.Fatalf("after deactivation: %v", err)
	}
	c.Close()
}

func TestControlAPIRefusesBadRequests(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"activate", "web", "--vnic", "nope0", "--policy", e.policyFile(webPolicy)}, "vnic_not_found"},
		{[]string{"activate", "web", "--vnic", "vnic-web", "--policy", e.policyFile(`{"rules":[{"id":1,"action":"alow"}]}`)}, `"alow" is not allow`},
		{[]string{"stats", "ghost"}, "guest_not_found"},
		{[]string{"deactivate", "ghost"}, "guest_not_found"},
	}
	for _, c := range cases {
		out, err := e.cli(c.args...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("%v: %v\n%s", c.args, err, out)
		}
	}
	e.activate(webPolicy)
	out, err := e.cli("activate", "web", "--vnic", "vnic-web", "--policy", e.policyFile(webPolicy))
	if err == nil || !strings.Contains(out, "already_protected") {
		t.Fatalf("second activation: %v\n%s", err, out)
	}
	out, err = e.cli("activate", "other", "--vnic", "vnic-web", "--policy", e.policyFile(webPolicy))
	if err == nil || !strings.Contains(out, "vnic_in_use") {
		t.Fatalf("activation on a used vNIC: %v\n%s", err, out)
	}
	// The failed attempts left the guest as it was.
	out, err = e.cli("guests")
	if err != nil || strings.Count(out, "\n") != 2 {
		t.Fatalf("guests after refusals: %v\n%s", err, out)
	}
}
