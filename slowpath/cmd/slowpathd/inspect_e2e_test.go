package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const testdata = "../../inspect/testdata"

// buildSlowpathd builds the real binary once per test run.
func buildSlowpathd(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "slowpathd")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type eveLine struct {
	Timestamp string `json:"timestamp"`
	FlowID    uint64 `json:"flow_id"`
	PcapCnt   uint64 `json:"pcap_cnt"`
	EventType string `json:"event_type"`
	SrcIP     string `json:"src_ip"`
	SrcPort   int    `json:"src_port"`
	DestIP    string `json:"dest_ip"`
	DestPort  int    `json:"dest_port"`
	Proto     string `json:"proto"`
	Alert     struct {
		Action      string `json:"action"`
		GID         int    `json:"gid"`
		SignatureID int    `json:"signature_id"`
		Rev         int    `json:"rev"`
		Signature   string `json:"signature"`
		Category    string `json:"category"`
		Severity    int    `json:"severity"`
	} `json:"alert"`
	HTTP *struct {
		Hostname  string `json:"hostname"`
		URL       string `json:"url"`
		UserAgent string `json:"http_user_agent"`
		Method    string `json:"http_method"`
		Protocol  string `json:"protocol"`
	} `json:"http"`
	TLS *struct {
		SNI string `json:"sni"`
	} `json:"tls"`
}

func readEVE(t *testing.T, path string) []eveLine {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []eveLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l eveLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("EVE line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

func inspectCapture(t *testing.T, bin, capture, mode string, extra ...string) ([]eveLine, string, error) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "eve.json")
	args := append([]string{"inspect", "--rules", filepath.Join(testdata, "test.rules"), "--wrs-feed", filepath.Join(testdata, "wrs.feed"),
		"--config", filepath.Join(testdata, "palisade.yaml"), "--pcap", filepath.Join(testdata, "captures", capture),
		"--eve", out, "--mode", mode}, extra...)
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if _, serr := os.Stat(out); serr != nil {
		return nil, stderr.String(), err
	}
	return readEVE(t, out), stderr.String(), err
}

func TestInspectEndToEnd(t *testing.T) {
	bin := buildSlowpathd(t)

	t.Run("http attack ids", func(t *testing.T) {
		lines, stderr, err := inspectCapture(t, bin, "http-attack.pcap", "ids")
		if err != nil {
			t.Fatalf("%v\n%s", err, stderr)
		}
		if !strings.Contains(stderr, "rules: 4 loaded, 1 refused\n") || !strings.Contains(stderr, `sid 1000099: unsupported protocol "dns"`) {
			t.Fatalf("stderr:\n%s", stderr)
		}
		if !strings.Contains(stderr, "packets: 10 read, 10 inspected, 0 offloaded; alerts: 1; drops: 0") {
			t.Fatalf("summary:\n%s", stderr)
		}
		if len(lines) != 1 {
			t.Fatalf("%d lines", len(lines))
		}
		l := lines[0]
		if l.EventType != "alert" || l.PcapCnt != 6 || l.SrcIP != "198.51.100.7" || l.SrcPort != 41000 || l.DestIP != "192.0.2.10" ||
			l.DestPort != 80 || l.Proto != "TCP" || l.FlowID == 0 || l.Timestamp != "2026-11-21T05:36:00.005000+0000" {
			t.Fatalf("line %+v", l)
		}
		a := l.Alert
		if a.Action != "allowed" || a.GID != 1 || a.SignatureID != 1000001 || a.Rev != 3 || a.Category != "Web Application Attack" || a.Severity != 1 ||
			a.Signature != "PALISADE TEST path traversal to /etc/passwd" {
			t.Fatalf("alert %+v", a)
		}
		if l.HTTP == nil || l.HTTP.Hostname != "www.example.test" || l.HTTP.URL != "/download.php?file=../../../../etc/passwd" ||
			l.HTTP.Method != "GET" || l.HTTP.UserAgent != "sqlmap/1.7" || l.HTTP.Protocol != "HTTP/1.1" {
			t.Fatalf("http %+v", l.HTTP)
		}
	})

	t.Run("http attack ips", func(t *testing.T) {
		lines, stderr, err := inspectCapture(t, bin, "http-attack.pcap", "ips")
		if err != nil {
			t.Fatalf("%v\n%s", err, stderr)
		}
		if len(lines) != 1 || lines[0].Alert.Action != "blocked" || lines[0].PcapCnt != 6 {
			t.Fatalf("lines %+v", lines)
		}
		if !strings.Contains(stderr, "packets: 10 read, 6 inspected, 0 offloaded; alerts: 1; drops: 5 (4 in blocked flows)") {
			t.Fatalf("summary:\n%s", stderr)
		}
	})

	t.Run("pcapng raw and split", func(t *testing.T) {
		for _, c := range []struct {
			capture string
			sids    []int
			pcaps   []uint64
		}{
			{"http.pcapng", []int{1000001}, []uint64{6}},
			{"raw-ip.pcap", []int{1000001, 1000003}, []uint64{6, 11}},
			{"dlt-raw-12.pcap", []int{1000003}, []uint64{1}},
			{"split-content.pcap", []int{1000002}, []uint64{7}},
		} {
			lines, stderr, err := inspectCapture(t, bin, c.capture, "ids")
			if err != nil {
				t.Fatalf("%s: %v\n%s", c.capture, err, stderr)
			}
			if len(lines) != len(c.sids) {
				t.Fatalf("%s: %d lines", c.capture, len(lines))
			}
			for i, l := range lines {
				if l.Alert.SignatureID != c.sids[i] || l.PcapCnt != c.pcaps[i] || l.Alert.Action != "allowed" {
					t.Errorf("%s line %d: sid %d pcap_cnt %d action %s", c.capture, i, l.Alert.SignatureID, l.PcapCnt, l.Alert.Action)
				}
			}
		}
	})

	t.Run("tls sni", func(t *testing.T) {
		for mode, action := range map[string]string{"ids": "allowed", "ips": "blocked"} {
			lines, stderr, err := inspectCapture(t, bin, "tls-sni.pcap", mode)
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			if len(lines) != 1 || lines[0].TLS == nil || lines[0].TLS.SNI != "login.evil.test" || lines[0].Alert.SignatureID != 9000002 ||
				lines[0].Alert.Action != action || lines[0].Alert.Category != "Web Reputation: malware" {
				t.Fatalf("%s: lines %+v", mode, lines)
			}
		}
	})

	t.Run("truncated", func(t *testing.T) {
		lines, stderr, err := inspectCapture(t, bin, "truncated.pcap", "ids")
		if err == nil {
			t.Fatal("a truncated capture succeeded")
		}
		if !strings.Contains(stderr, "truncated or corrupt at byte offset 725 (packet 7)") {
			t.Fatalf("stderr:\n%s", stderr)
		}
		if len(lines) != 1 || lines[0].PcapCnt != 6 {
			t.Fatalf("alerts before the cut not written: %+v", lines)
		}
	})

	t.Run("bad feed", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.feed")
		os.WriteFile(bad, []byte("ok.test x 5\nbroken.test x\n"), 0o600)
		_, stderr, err := inspectCapture(t, bin, "http-attack.pcap", "ids", "--wrs-feed", bad)
		if err == nil || !strings.Contains(stderr, bad+":2: want") {
			t.Fatalf("err %v stderr:\n%s", err, stderr)
		}
	})
}
