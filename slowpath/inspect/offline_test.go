package inspect

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/slowpath/engine"
	"github.com/palisade/palisade/slowpath/eve"
	"github.com/palisade/palisade/slowpath/inspect/craft"
	"github.com/palisade/palisade/slowpath/inspect/flow"
	"github.com/palisade/palisade/slowpath/inspect/packet"
	"github.com/palisade/palisade/slowpath/ips"
	"github.com/palisade/palisade/slowpath/wrs"
)

// chain builds the engines over the test rules, feed and config.
func chain(t *testing.T, out eve.Sink) (engine.Chain, *Stamp) {
	t.Helper()
	cfg, err := ips.LoadConfig("testdata/palisade.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := ips.LoadFiles(cfg, "testdata/test.rules")
	if err != nil {
		t.Fatal(err)
	}
	feed, err := wrs.LoadFeeds("testdata/wrs.feed")
	if err != nil {
		t.Fatal(err)
	}
	pol, err := wrs.LoadPolicies("testdata/palisade.yaml")
	if err != nil {
		t.Fatal(err)
	}
	stamp := NewStamp(out)
	return engine.Chain{ips.New(rs, cfg, ips.WithSink(stamp)), wrs.New(feed, pol, wrs.WithSink(stamp))}, stamp
}

func runCapture(t *testing.T, name string, mode Mode) ([]eve.Record, Summary, error) {
	t.Helper()
	mem := &eve.Memory{}
	c, stamp := chain(t, mem)
	sum, err := Run(filepath.Join("testdata", "captures", name), c, stamp, mode)
	return mem.Records(), sum, err
}

type seenAlert struct {
	sid    uint32
	pcap   uint64
	action string
}

func alerts(recs []eve.Record) []seenAlert {
	var out []seenAlert
	for _, r := range recs {
		out = append(out, seenAlert{r.Alert.SignatureID, r.PcapCnt, r.Alert.Action})
	}
	return out
}

func TestCaptures(t *testing.T) {
	for _, c := range []struct {
		name string
		mode Mode
		want []seenAlert
		sum  Summary
	}{
		{"http-attack.pcap", IDS, []seenAlert{{1000001, 6, "allowed"}}, Summary{Packets: 10, Inspected: 10, Alerts: 1}},
		{"http-attack.pcap", IPS, []seenAlert{{1000001, 6, "blocked"}}, Summary{Packets: 10, Inspected: 6, Alerts: 1, Dropped: 5, FlowDropped: 4}},
		{"http.pcapng", IPS, []seenAlert{{1000001, 6, "blocked"}}, Summary{Packets: 10, Inspected: 6, Alerts: 1, Dropped: 5, FlowDropped: 4}},
		{"raw-ip.pcap", IDS, []seenAlert{{1000001, 6, "allowed"}, {1000003, 11, "allowed"}}, Summary{Packets: 11, Inspected: 11, Alerts: 2}},
		{"dlt-raw-12.pcap", IDS, []seenAlert{{1000003, 1, "allowed"}}, Summary{Packets: 1, Inspected: 1, Alerts: 1}},
		// Segment 8 completes "CMD.EXE /c dir" (the gap fill); the
		// conflicting retransmission changes nothing.
		{"split-content.pcap", IDS, []seenAlert{{1000002, 7, "allowed"}}, Summary{Packets: 11, Inspected: 11, Alerts: 1}},
		{"tls-sni.pcap", IPS, []seenAlert{{wrs.SIDTLSBlocked, 6, "blocked"}}, Summary{Packets: 14, Inspected: 12, Alerts: 1, Dropped: 2, FlowDropped: 1, Offloaded: 1}},
	} {
		recs, sum, err := runCapture(t, c.name, c.mode)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := alerts(recs); !slices.Equal(got, c.want) {
			t.Errorf("%s mode %d: alerts %+v, want %+v", c.name, c.mode, got, c.want)
		}
		if sum != c.sum {
			t.Errorf("%s mode %d: summary %+v, want %+v", c.name, c.mode, sum, c.sum)
		}
	}
}

// A truncated capture fails with the offset of the cut record, after the
// alerts of the packets before it.
func TestTruncatedCapture(t *testing.T) {
	recs, sum, err := runCapture(t, "truncated.pcap", IDS)
	var ce *CorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("err %v, want a CorruptError", err)
	}
	info, _ := os.Stat("testdata/captures/truncated.pcap")
	// The cut record starts 26 bytes before the end (16-byte header, 10 bytes of data).
	if ce.Offset != info.Size()-26 || ce.Packet != 7 || !strings.Contains(err.Error(), "byte offset 725") {
		t.Fatalf("err %v (offset %d, size %d)", err, ce.Offset, info.Size())
	}
	if got := alerts(recs); !slices.Equal(got, []seenAlert{{1000001, 6, "allowed"}}) || sum.Packets != 6 {
		t.Fatalf("alerts before the cut: %+v, summary %+v", got, sum)
	}
}

func TestTruncatedPcapng(t *testing.T) {
	data, err := os.ReadFile("testdata/captures/http.pcapng")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cut.pcapng")
	if err := os.WriteFile(path, data[:len(data)-40], 0o600); err != nil {
		t.Fatal(err)
	}
	mem := &eve.Memory{}
	c, stamp := chain(t, mem)
	sum, err := Run(path, c, stamp, IDS)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Packet != sum.Packets+1 || ce.Offset <= 0 || ce.Offset >= int64(len(data)-40) {
		t.Fatalf("err %v summary %+v", err, sum)
	}
	if len(mem.Records()) != 1 {
		t.Fatalf("alerts before the cut: %d", len(mem.Records()))
	}
}

func TestNotACapture(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pcap")
	os.WriteFile(path, []byte("this is not a capture file at all"), 0o600)
	mem := &eve.Memory{}
	c, stamp := chain(t, mem)
	_, err := Run(path, c, stamp, IDS)
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Offset != 0 {
		t.Fatalf("err %v", err)
	}
}

// A later connection on the 5-tuple of a blocked flow is a new connection:
// it is inspected, not dropped as part of the old one.
func TestTupleReusedAfterBlock(t *testing.T) {
	clock := &craft.Clock{Now: craft.Epoch}
	frames := httpAttack(true, clock)
	e := &craft.Endpoints{Ethernet: true, Clock: clock}
	c := e.NewTCP(attacker+":41000", server+":80")
	c.CSeq, c.SSeq = 700000, 900000
	frames = append(frames, c.Handshake()...)
	frames = append(frames, c.Send(true, []byte(attackRequest)))
	path := filepath.Join(t.TempDir(), "reuse.pcap")
	if err := os.WriteFile(path, capture{link: layers.LinkTypeEthernet, frames: frames}.bytes(t), 0o600); err != nil {
		t.Fatal(err)
	}
	mem := &eve.Memory{}
	ch, stamp := chain(t, mem)
	sum, err := Run(path, ch, stamp, IPS)
	if err != nil {
		t.Fatal(err)
	}
	got := alerts(mem.Records())
	if len(got) != 2 || got[0].sid != 1000001 || got[1].sid != 1000001 || got[1].pcap != uint64(len(frames)) {
		t.Fatalf("alerts %+v, summary %+v: the second connection was not inspected", got, sum)
	}
	if sum.FlowDropped != 4 { // the first connection's answer and close
		t.Fatalf("summary %+v", sum)
	}
}

// Decisions are forgotten with the flow: on a new connection's SYN, and
// once idle as long as the engines' flow timeouts.
func TestDecisionsExpire(t *testing.T) {
	e := &craft.Endpoints{}
	c := e.NewTCP("10.0.0.5:40000", "192.0.2.10:80")
	hs := c.Handshake()
	data := c.Send(true, []byte("x"))
	d := newDecisions()
	t0 := craft.Epoch
	d.set(data.Decoded(), 0, channel.FlowOffload, t0)
	if v, _ := d.get(data.Decoded(), t0.Add(time.Minute)); v != channel.FlowOffload {
		t.Fatal("decision lost")
	}
	if v, _ := d.get(data.Decoded(), t0.Add(time.Minute+flow.DefaultIdleTimeout+time.Second)); v != 0 || d.len() != 0 {
		t.Fatal("idle decision kept")
	}
	d.set(data.Decoded(), 0, channel.FlowBlock, t0)
	if v, _ := d.get(hs[0].Decoded(), t0.Add(time.Second)); v != 0 || d.len() != 0 {
		t.Fatal("a bare SYN did not clear the decision")
	}
	d.set(data.Decoded(), 0, channel.FlowBlock, t0)
	rst := c.Segment(false, c.SSeq, c.CSeq, packet.RST|packet.ACK, nil)
	d.get(rst.Decoded(), t0)
	if v, _ := d.get(data.Decoded(), t0.Add(flow.DefaultClosedTimeout+time.Second)); v != 0 {
		t.Fatal("a reset flow's decision outlived the closed timeout")
	}
}
