package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/hypervisor/daemon"
)

// protectionFailed is the event fastpathd publishes when a guest does not
// fit its heap budget, with its body as fastpathd marshals it.
func protectionFailed(t *testing.T) channel.Frame {
	t.Helper()
	body, err := json.Marshal(map[string]any{"guest": "web1", "need_bytes": uint64(8392704), "free_bytes": uint64(4126144),
		"max_bytes": uint64(1<<60 + 1), "ratio": 0.5, "message": "out of memory, guest protection failed"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := channel.AppendEventBatch(nil, []channel.EventRecord{{Kind: channel.EventGuestProtectionFailed, Guest: 3, UnixNano: 1, Body: body}})
	if err != nil {
		t.Fatal(err)
	}
	return channel.Frame{Type: channel.TypeEventBatch, Payload: p}
}

// logged runs slowpathd's event handler on f with the daemon's logger in
// format and returns what it wrote.
func logged(t *testing.T, format string, f channel.Frame) string {
	t.Helper()
	log, err := (&daemon.LogFlags{Level: "info", Format: format}).Logger("slowpathd")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	log.Logger.SetOutput(&out)
	if err := (&fastPathEvents{log: log}).HandleFrame(f); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// Byte counts from the fast path are logged as integers (they were
// free_bytes=4.126144e+06), exactly even past 2^53; a fraction stays one.
func TestEventByteCountsAreLoggedAsIntegers(t *testing.T) {
	line := logged(t, "json", protectionFailed(t))
	var entry map[string]json.RawMessage
	if err := json.Unmarshal([]byte(line), &entry); err != nil {
		t.Fatalf("%v: %s", err, line)
	}
	for field, want := range map[string]string{"free_bytes": "4126144", "need_bytes": "8392704", "max_bytes": "1152921504606846977",
		"ratio": "0.5", "guest": `"web1"`, "kind": `"guest-protection-failed"`, "level": `"error"`,
		"msg": `"slowpath event received: 2(out of memory, guest protection failed)"`} {
		if got := string(entry[field]); got != want {
			t.Errorf("%s = %s, want %s: %s", field, got, want, line)
		}
	}
	text := logged(t, "text", protectionFailed(t))
	for _, want := range []string{" free_bytes=4126144 ", " need_bytes=8392704 ", " max_bytes=1152921504606846977 "} {
		if !strings.Contains(text, want) {
			t.Errorf("text log lacks %q: %s", want, text)
		}
	}
}

// An event whose body is not JSON is still logged, with the body as it came.
func TestUndecodableEventBodyIsLogged(t *testing.T) {
	p, err := channel.AppendEventBatch(nil, []channel.EventRecord{{Kind: channel.EventGuestProtectionFailed, Body: []byte("{broken")}})
	if err != nil {
		t.Fatal(err)
	}
	line := logged(t, "json", channel.Frame{Type: channel.TypeEventBatch, Payload: p})
	var entry map[string]string
	if err := json.Unmarshal([]byte(line), &entry); err != nil {
		t.Fatalf("%v: %s", err, line)
	}
	if entry["body"] != "{broken" || !strings.HasPrefix(entry["error"], "undecodable event body: ") || entry["level"] != "error" {
		t.Fatalf("logged %s", line)
	}
}
