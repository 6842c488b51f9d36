package main

import (
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/hypervisor/lab/wait"
	"github.com/palisade/palisade/slowpath/eve"
	"github.com/palisade/palisade/slowpath/inspect/craft"
	"github.com/palisade/palisade/slowpath/inspectd/inspecttest"
)

func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startDaemon runs slowpathd bound to a test fast path on loopback.
func startDaemon(t *testing.T, bin string, args ...string) (*inspecttest.FastPath, string) {
	t.Helper()
	dir := t.TempDir()
	secret := writeFile(t, dir, "secret", string(inspecttest.Secret))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fast := inspecttest.Start(t, ln, channel.Timing{})
	sock := filepath.Join(dir, "slowpathd.sock")
	cmd := exec.Command(bin, append([]string{"--connect", ln.Addr().String(), "--allow-non-link-local", "--secret-file", secret,
		"--control-socket", sock, "--appliance-id", "e2e"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("slowpathd stderr:\n%s", stderr.String())
		}
	})
	fast.WaitBound(nil)
	return fast, sock
}

func TestLiveInspectionEndToEnd(t *testing.T) {
	bin := buildSlowpathd(t)
	dir := t.TempDir()
	rules := writeFile(t, dir, "live.rules",
		`drop http any any -> any any (msg:"PALISADE TEST traversal"; flow:established,to_server; http.uri; content:"/etc/passwd"; sid:1000020; rev:1;)`+"\n")
	evePath := filepath.Join(dir, "eve.json")
	fast, sock := startDaemon(t, bin, "--rules", rules, "--wrs-feed", filepath.Join(testdata, "wrs.feed"),
		"--config", filepath.Join(testdata, "palisade.yaml"), "--eve", evePath, "--drop-marker", "PALISADE-DROP",
		"--offload-after", "4", "--workers", "2")
	guest := netip.MustParseAddr("192.0.2.10")
	ep := &craft.Endpoints{Ethernet: true}
	session := func(server string) *craft.TCP { return ep.NewTCP("192.0.2.10:40000", server) }

	marked := session("198.51.100.7:7")
	fast.Punt(inspecttest.Punts(3, 1, guest, craft.Seq(marked.Handshake(), marked.Send(true, []byte("PALISADE-DROP"))))...)
	attack := session("198.51.100.7:80")
	fast.Punt(inspecttest.Punts(3, 2, guest, craft.Seq(attack.Handshake(),
		attack.Send(true, []byte("GET /../../etc/passwd HTTP/1.1\r\nHost: www.example.test\r\n\r\n"))))...)
	blocked := session("198.51.100.8:80")
	fast.Punt(inspecttest.Punts(3, 3, guest, craft.Seq(blocked.Handshake(),
		blocked.Send(true, []byte("GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n"))))...)
	tls := session("198.51.100.9:443")
	fast.Punt(inspecttest.Punts(3, 4, guest, craft.Seq(tls.Handshake(), tls.Send(true, craft.ClientHello("www.example.test")),
		tls.Send(false, craft.ServerHello()), tls.Send(true, craft.AppData(100))))...)

	byFlow := inspecttest.ByFlow(fast.WaitVerdicts(4*4 + 2))
	last := func(flow uint64) inspecttest.Verdict { vs := byFlow[[2]uint64{3, flow}]; return vs[len(vs)-1] }
	if v := last(1); v.Action != channel.ActionDrop || v.Flow != channel.FlowBlock {
		t.Errorf("drop marker: %s/%s", v.Action, v.Flow)
	}
	if v := last(2); v.Action != channel.ActionDrop || v.Flow != channel.FlowBlock {
		t.Errorf("IPS drop rule: %s/%s", v.Action, v.Flow)
	}
	if v := last(3); v.Action != channel.ActionReject || v.Flow != channel.FlowBlock || !bytes.Contains(v.Reply, []byte("403 Forbidden")) {
		t.Errorf("web reputation: %s/%s with a %d-byte reply", v.Action, v.Flow, len(v.Reply))
	}
	// Every engine is done with a TLS flow once application data flows.
	if v := last(4); v.Action != channel.ActionAllow || v.Flow != channel.FlowOffload {
		t.Errorf("TLS flow after its handshake: %s/%s", v.Action, v.Flow)
	}

	evs := fast.WaitEvents(2)
	sids := map[string]bool{}
	for _, e := range evs {
		var r eve.Record
		if e.Kind != channel.EventAlert || e.Guest != 3 || json.Unmarshal(e.Body, &r) != nil || r.Alert == nil {
			t.Fatalf("event %+v %s", e, e.Body)
		}
		sids[r.Alert.Signature] = true
	}
	if !sids["PALISADE TEST traversal"] || !sids["Palisade WRS: HTTP request to blocked.test"] {
		t.Errorf("alerts %v", sids)
	}

	// The daemon counts a verdict once its frame is queued, which may be
	// after the fast path has it.
	var st inspectionStatus
	var out []byte
	fast.WaitFor("verdicts counted", func() bool {
		var err error
		if out, err = exec.Command(bin, "inspection", "--control-socket", sock, "--json").CombinedOutput(); err != nil {
			t.Fatalf("slowpathd inspection: %v\n%s", err, out)
		}
		st = inspectionStatus{}
		if err := json.Unmarshal(out, &st); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return st.Verdicts.Sent >= 18 && st.Alerts.Sent >= 2
	})
	if !st.Bound || st.Punts != 18 || st.Verdicts.Sent != 18 || st.Verdicts.Drop != 2 || st.Verdicts.Reject != 1 || st.Alerts.Sent != 2 ||
		st.Rules == nil || *st.Rules != 1 || st.WRSEntries == nil || *st.WRSEntries != 4 ||
		strings.Join(st.Engines, ",") != "drop-marker,ips,wrs,offload-after" {
		t.Errorf("inspection status %s", out)
	}
	text, err := exec.Command(bin, "inspection", "--control-socket", sock).CombinedOutput()
	if err != nil || !strings.Contains(string(text), "verdicts") || !strings.Contains(string(text), "latency") {
		t.Errorf("slowpathd inspection: %v\n%s", err, text)
	}
	t.Logf("slowpathd inspection:\n%s", text)
	status, err := exec.Command(bin, "status", "--control-socket", sock, "--json").CombinedOutput()
	var bs channel.BindingStatus
	if err != nil || json.Unmarshal(status, &bs) != nil || strings.Join(bs.Negotiated, ",") != "ips,wrs,offload,events" {
		t.Errorf("slowpathd status: %v\n%s", err, status)
	}
}

func TestLiveInspectionRefusesBadFiles(t *testing.T) {
	bin := buildSlowpathd(t)
	dir := t.TempDir()
	secret := writeFile(t, dir, "secret", string(inspecttest.Secret))
	badFeed := writeFile(t, dir, "bad.feed", "ok.test news 5\nbroken.test x\n")
	badConfig := writeFile(t, dir, "bad.yaml", "vars:\n  address-groups:\n    HOME_NET: [unclosed\n")
	rules := filepath.Join(testdata, "test.rules")
	// A refused rule is listed with its sid and reason and the daemon runs
	// with the rules it can enforce (a real rule set always has some it
	// cannot).
	cmd := exec.Command(bin, "--secret-file", secret, "--control-socket", filepath.Join(dir, "sock"), "--rules", rules,
		"--connect", "127.0.0.1:9", "--allow-non-link-local") // loopback only: nothing may leave this machine
	// The daemon writes its log to a file itself, so the test can read it
	// while it runs without sharing a buffer with exec's copying goroutine.
	logFile, err := os.Create(filepath.Join(dir, "slowpathd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logs := func() string {
		b, _ := os.ReadFile(logFile.Name())
		return string(b)
	}
	wait.For(t, "rules loaded", func() bool { return strings.Contains(logs(), `msg="rules loaded"`) })
	_ = cmd.Process.Signal(os.Interrupt)
	_ = cmd.Wait()
	for _, want := range []string{`msg="rule refused"`, `sid 1000099: unsupported protocol \"dns\"`, "loaded=4", "refused=1"} {
		if !strings.Contains(logs(), want) {
			t.Errorf("refused rule: log lacks %s:\n%s", want, logs())
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--wrs-feed", badFeed}, badFeed + ":2: want"},
		{[]string{"--config", badConfig}, badConfig + ": yaml: line"},
		{[]string{"--rules", filepath.Join(dir, "missing.rules")}, "missing.rules: no such file"},
		{[]string{"--offload-after", "-1"}, "--offload-after -1"},
	} {
		// Each case fails before dialing; loopback anyway, in case one ever does not.
		cmd := exec.Command(bin, append([]string{"--secret-file", secret, "--control-socket", filepath.Join(dir, "sock"),
			"--connect", "127.0.0.1:9", "--allow-non-link-local"}, c.args...)...)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("%v: %v\n%s\nwant %q", c.args, err, out, c.want)
		}
	}
}
