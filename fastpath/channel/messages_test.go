package channel

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func TestMessagesRoundTrip(t *testing.T) {
	h := Hello{Version: MustParseVersion("1.2.3.100"), Revision: 7, Capabilities: CapIPS | CapWRS, ApplianceID: "dsva-01"}
	h.Nonce[0], h.Nonce[31] = 1, 2
	c := Challenge{Version: MustParseVersion("1.2.3.200"), Revision: 7, Capabilities: CapFirewall, HostID: "esx-01"}
	c.Proof[5] = 9
	checks := []struct {
		name   string
		msg    interface{ Marshal() ([]byte, error) }
		decode func([]byte) (any, error)
	}{
		{"hello", h, func(b []byte) (any, error) { return UnmarshalHello(b) }},
		{"challenge", c, func(b []byte) (any, error) { return UnmarshalChallenge(b) }},
		{"auth", Auth{Proof: [ProofSize]byte{3}}, func(b []byte) (any, error) { return UnmarshalAuth(b) }},
		{"welcome", Welcome{SessionID: 42, Capabilities: CapIPS, KeepaliveMillis: 1000, DeadAfterMillis: 3000},
			func(b []byte) (any, error) { return UnmarshalWelcome(b) }},
		{"reject", Reject{Code: RejectSecretMismatch, Message: "nope"}, func(b []byte) (any, error) { return UnmarshalReject(b) }},
		{"ping", Ping{Token: 99}, func(b []byte) (any, error) { return UnmarshalPing(b) }},
	}
	for _, c := range checks {
		b, err := c.msg.Marshal()
		if err != nil {
			t.Fatalf("%s: marshal: %v", c.name, err)
		}
		got, err := c.decode(b)
		if err != nil {
			t.Fatalf("%s: unmarshal: %v", c.name, err)
		}
		if !reflect.DeepEqual(got, c.msg) {
			t.Fatalf("%s: round trip\n got %+v\nwant %+v", c.name, got, c.msg)
		}
		if _, err := c.decode(append(b, 0)); err == nil || !strings.Contains(err.Error(), "trailing") {
			t.Fatalf("%s: trailing byte accepted: %v", c.name, err)
		}
		if len(b) > 0 {
			if _, err := c.decode(b[:len(b)-1]); err == nil || !strings.Contains(err.Error(), "truncated") {
				t.Fatalf("%s: truncated message accepted: %v", c.name, err)
			}
		}
	}
}

func TestBatchesRoundTrip(t *testing.T) {
	punts := []PuntRecord{
		{Guest: 1, Direction: FromGuest, FlowID: 10, PacketID: 100, Data: []byte("GET / HTTP/1.1\r\n")},
		{Guest: 2, Direction: ToGuest, Flags: PuntTapCopy, FlowID: 11, PacketID: 101, Data: nil},
	}
	p, err := AppendPuntBatch(nil, punts)
	if err != nil {
		t.Fatal(err)
	}
	var got []PuntRecord
	if err := DecodePuntBatch(p, func(r PuntRecord) error {
		r.Data = append([]byte{}, r.Data...)
		got = append(got, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].FlowID != 10 || string(got[0].Data) != "GET / HTTP/1.1\r\n" || got[1].Flags != PuntTapCopy || got[1].Direction != ToGuest {
		t.Fatalf("punts: %+v", got)
	}
	if size := PuntRecordSize(punts[0]) + PuntRecordSize(punts[1]) + 2; size != len(p) {
		t.Fatalf("PuntRecordSize sums to %d, encoding is %d", size, len(p))
	}

	verdicts := []VerdictRecord{{Guest: 1, FlowID: 10, PacketID: 100, Action: ActionDrop, Flow: FlowBlock},
		{Guest: 1, FlowID: 11, PacketID: 101, Action: ActionReject, Flow: FlowBlock, Reply: []byte{0x45, 0, 0, 20}}}
	vb, err := AppendVerdictBatch(nil, verdicts)
	if err != nil {
		t.Fatal(err)
	}
	vs, err := DecodeVerdictBatch(vb, nil)
	if err != nil || !reflect.DeepEqual(vs, verdicts) {
		t.Fatalf("verdicts: %+v %v", vs, err)
	}

	events := []EventRecord{{Kind: EventAlert, Guest: 3, UnixNano: 12345, Body: []byte(`{"event_type":"alert"}`)}}
	eb, err := AppendEventBatch(nil, events)
	if err != nil {
		t.Fatal(err)
	}
	es, err := DecodeEventBatch(eb, nil)
	if err != nil || !reflect.DeepEqual(es, events) {
		t.Fatalf("events: %+v %v", es, err)
	}
}

func TestMalformedBatchDeliversNothing(t *testing.T) {
	p, _ := AppendPuntBatch(nil, []PuntRecord{
		{Guest: 1, Direction: FromGuest, PacketID: 1, Data: []byte("a")},
		{Guest: 1, Direction: FromGuest, PacketID: 2, Data: []byte("b")},
	})
	calls := 0
	err := DecodePuntBatch(p[:len(p)-1], func(PuntRecord) error { calls++; return nil })
	if !IsProtocolError(err) || calls != 0 {
		t.Fatalf("truncated batch: err %v, %d records delivered", err, calls)
	}

	bad, _ := AppendVerdictBatch(nil, []VerdictRecord{{Action: ActionAllow}})
	bad[len(bad)-4] = 9 // action
	if _, err := DecodeVerdictBatch(bad, nil); err == nil || !strings.Contains(err.Error(), "invalid action(9)") {
		t.Fatalf("invalid action accepted: %v", err)
	}
	replyOnAllow, _ := AppendVerdictBatch(nil, []VerdictRecord{{Action: ActionReject, Reply: []byte{1}}})
	replyOnAllow[len(replyOnAllow)-5] = byte(ActionAllow)
	if _, err := DecodeVerdictBatch(replyOnAllow, nil); err == nil || !strings.Contains(err.Error(), "a reply with allow") {
		t.Fatalf("reply with allow accepted: %v", err)
	}
	if _, err := AppendPuntBatch(nil, []PuntRecord{{Direction: 7}}); err == nil {
		t.Fatal("invalid direction encoded")
	}
}

func TestVersionCompatibility(t *testing.T) {
	cases := []struct {
		a, b string
		ok   bool
	}{
		{"1.2.3.100", "1.2.3.200", true},
		{"1.2.2.100", "1.2.3.100", false},
		{"1.3.3.1", "1.2.3.1", false},
		{"2.2.3.1", "1.2.3.1", false},
	}
	for _, c := range cases {
		if got := MustParseVersion(c.a).Compatible(MustParseVersion(c.b)); got != c.ok {
			t.Errorf("%s vs %s: compatible=%v, want %v", c.a, c.b, got, c.ok)
		}
	}
	for _, bad := range []string{"1.2.3", "1.2.3.4.5", "1.x.3.4", "70000.0.0.0", ""} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q) accepted", bad)
		}
	}
	if v := Current(); v.String() != release+"."+build {
		t.Errorf("Current() = %s, stamped %s.%s", v, release, build)
	}
}

func TestCapabilities(t *testing.T) {
	c, err := ParseCapabilities("ips, wrs,firewall")
	if err != nil || c != CapIPS|CapWRS|CapFirewall {
		t.Fatalf("parse: %v %v", c, err)
	}
	if got := (c | 1<<40).String(); got != "firewall,ips,wrs,bit40" {
		t.Fatalf("names: %s", got)
	}
	if _, err := ParseCapabilities("ips,teleport"); err == nil || !strings.Contains(err.Error(), `"teleport"`) {
		t.Fatalf("unknown capability: %v", err)
	}
}

func TestLargeBatchFitsOneFrame(t *testing.T) {
	// A batch of 64 jumbo frames must fit under MaxPayload.
	recs := make([]PuntRecord, 64)
	for i := range recs {
		recs[i] = PuntRecord{Direction: FromGuest, Data: bytes.Repeat([]byte{1}, 9000)}
	}
	p, err := AppendPuntBatch(nil, recs)
	if err != nil || len(p) > MaxPayload {
		t.Fatalf("64 jumbo frames: %d bytes, err %v", len(p), err)
	}
}
