package eve

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestFormatTime(t *testing.T) {
	ts := time.Date(2026, 11, 21, 6, 36, 0, 123456789, time.FixedZone("CET", 3600))
	if got, want := FormatTime(ts), "2026-11-21T05:36:00.123456+0000"; got != want {
		t.Fatalf("FormatTime = %q, want %q", got, want)
	}
}

func TestWriterAppendsJSONLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "eve.json")
	if err := os.WriteFile(path, []byte("{\"event_type\":\"old\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	w.Emit(&Record{Timestamp: "t", EventType: "alert", SrcIP: "10.0.0.1", SrcPort: 1234, DestIP: "10.0.0.2", DestPort: 80, Proto: "TCP",
		Alert: &Alert{Action: ActionBlocked, GID: 1, SignatureID: 7, Rev: 2, Signature: "<x> & y", Category: "c", Severity: 1},
		HTTP:  &HTTP{Hostname: "h", URL: "/u"}})
	w.Emit(&Record{EventType: "alert", Proto: "ICMP", TLS: &TLS{SNI: "s"}})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.Count() != 2 {
		t.Fatalf("Count = %d", w.Count())
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 3 || lines[0]["event_type"] != "old" {
		t.Fatalf("expected the old line kept and two appended, got %v", lines)
	}
	a := lines[1]["alert"].(map[string]any)
	if a["signature"] != "<x> & y" || a["action"] != "blocked" || a["signature_id"].(float64) != 7 || a["gid"].(float64) != 1 {
		t.Fatalf("alert object = %v", a)
	}
	if lines[1]["dest_port"].(float64) != 80 || lines[1]["http"].(map[string]any)["url"] != "/u" {
		t.Fatalf("record = %v", lines[1])
	}
	if _, ok := lines[2]["src_port"]; ok {
		t.Fatalf("ICMP record carries a port: %v", lines[2])
	}
	if _, ok := lines[2]["pcap_cnt"]; ok {
		t.Fatalf("pcap_cnt written when zero: %v", lines[2])
	}
}

func TestMemoryAndFanout(t *testing.T) {
	var a, b Memory
	s := Fanout{&a, &b, Discard}
	r := Record{EventType: "alert"}
	s.Emit(&r)
	r.EventType = "changed"
	if got := a.Records(); len(got) != 1 || got[0].EventType != "alert" {
		t.Fatalf("Memory kept %v; it must copy the record", got)
	}
	if len(b.Records()) != 1 {
		t.Fatal("fanout skipped a sink")
	}
}
