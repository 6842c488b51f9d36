package inspect

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"github.com/palisade/palisade/slowpath/inspect/craft"
	"github.com/palisade/palisade/slowpath/inspect/packet"
)

var update = flag.Bool("update", false, "rewrite testdata/captures from the generator")

// capture is one generated test capture.
type capture struct {
	name   string
	link   layers.LinkType
	ng     bool
	frames []craft.Frame
	// truncate, if not zero, cuts the file this many bytes into the
	// record of frame number truncate (1-based).
	truncate int
}

const (
	attacker = "198.51.100.7"
	server   = "192.0.2.10"
)

var (
	benignRequest = "GET / HTTP/1.1\r\nHost: www.example.test\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n\r\n"
	attackRequest = "GET /download.php?file=../../../../etc/passwd HTTP/1.1\r\nHost: www.example.test\r\nUser-Agent: sqlmap/1.7\r\n\r\n"
	okResponse    = "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 13\r\n\r\n<html></html>"
)

// httpAttack is a connection with a benign request, then the traversal,
// then the server's answer and the close: in IPS mode everything after the
// attack is dropped with the flow.
func httpAttack(ethernet bool, clock *craft.Clock) []craft.Frame {
	e := &craft.Endpoints{Ethernet: ethernet, Clock: clock}
	c := e.NewTCP(attacker+":41000", server+":80")
	var fs []craft.Frame
	fs = append(fs, c.Handshake()...)
	fs = append(fs, c.Send(true, []byte(benignRequest)), c.Send(false, []byte(okResponse)))
	fs = append(fs, c.Send(true, []byte(attackRequest)), c.Send(false, []byte(okResponse)))
	fs = append(fs, c.Close()...)
	return fs
}

// splitContent sends "CMD.EXE /c dir" across segments, out of order, with
// a retransmission whose different bytes must lose (first seen wins).
func splitContent(clock *craft.Clock) []craft.Frame {
	e := &craft.Endpoints{Ethernet: true, Clock: clock}
	c := e.NewTCP(attacker+":41001", server+":4444")
	var fs []craft.Frame
	fs = append(fs, c.Handshake()...)
	msg := []byte("run CMD.EXE /c dir now\n")
	seq := c.CSeq
	fs = append(fs,
		c.Segment(true, seq, c.SSeq, packet.PSH|packet.ACK, msg[:7]),             // "run CMD"
		c.Segment(true, seq+12, c.SSeq, packet.PSH|packet.ACK, msg[12:]),         // " /c dir now\n" early
		c.Segment(true, seq+12, c.SSeq, packet.PSH|packet.ACK, []byte("XXXXXX")), // conflicting retransmission: loses
		c.Segment(true, seq+7, c.SSeq, packet.PSH|packet.ACK, msg[7:12]),         // ".EXE " fills the gap
		c.Segment(true, seq, c.SSeq, packet.PSH|packet.ACK, msg[:7]),             // plain retransmission
	)
	c.CSeq += uint32(len(msg))
	fs = append(fs, c.Close()...)
	return fs
}

// tlsSNI opens a TLS connection to a blocked name, its ClientHello split
// over two segments, and one to an allowed name.
func tlsSNI(clock *craft.Clock) []craft.Frame {
	e := &craft.Endpoints{Ethernet: true, Clock: clock}
	var fs []craft.Frame
	c := e.NewTCP("192.0.2.20:50000", "203.0.113.5:443")
	fs = append(fs, c.Handshake()...)
	fs = append(fs, c.SendChunks(true, craft.ClientHello("login.evil.test"), 60)...)
	fs = append(fs, c.Send(false, craft.ServerHello()))
	ok := e.NewTCP("192.0.2.20:50001", "203.0.113.6:443")
	fs = append(fs, ok.Handshake()...)
	fs = append(fs, ok.Send(true, craft.ClientHello("www.good.test")), ok.Send(false, craft.ServerHello()),
		ok.Send(true, craft.AppData(40)), ok.Send(false, craft.AppData(80)))
	return fs
}

func udpProbe(clock *craft.Clock) craft.Frame {
	e := &craft.Endpoints{Clock: clock}
	return e.UDP(mustAddrPort(attacker+":5353"), mustAddrPort(server+":53"), []byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3})
}

func captures() []capture {
	clock := func() *craft.Clock { return &craft.Clock{Now: craft.Epoch} }
	var raw []craft.Frame
	c := clock()
	raw = append(raw, httpAttack(false, c)...)
	raw = append(raw, udpProbe(c))
	var dlt12 []craft.Frame
	c12 := clock()
	dlt12 = append(dlt12, udpProbe(c12))
	return []capture{
		{name: "http-attack.pcap", link: layers.LinkTypeEthernet, frames: httpAttack(true, clock())},
		{name: "split-content.pcap", link: layers.LinkTypeEthernet, frames: splitContent(clock())},
		{name: "tls-sni.pcap", link: layers.LinkTypeEthernet, frames: tlsSNI(clock())},
		{name: "raw-ip.pcap", link: layers.LinkTypeRaw, frames: raw},
		{name: "dlt-raw-12.pcap", link: layers.LinkType(12), frames: dlt12},
		{name: "http.pcapng", link: layers.LinkTypeEthernet, ng: true, frames: httpAttack(true, clock())},
		// Cut inside the server's answer to the attack (frame 7), after
		// the attack itself (frame 6) was read.
		{name: "truncated.pcap", link: layers.LinkTypeEthernet, frames: httpAttack(true, clock()), truncate: 7},
	}
}

func (c capture) bytes(t testing.TB) []byte {
	var buf bytes.Buffer
	offsets := []int{}
	if c.ng {
		w, err := pcapgo.NewNgWriterInterface(&buf, pcapgo.NgInterface{Name: "palisade0", LinkType: c.link, SnapLength: 65535},
			pcapgo.NgWriterOptions{SectionInfo: pcapgo.NgSectionInfo{Application: "palisade capture generator"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range c.frames {
			if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: f.Time, CaptureLength: len(f.Data), Length: len(f.Data)}, f.Data); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	w := pcapgo.NewWriter(&buf)
	if err := w.WriteFileHeader(65535, c.link); err != nil {
		t.Fatal(err)
	}
	for _, f := range c.frames {
		offsets = append(offsets, buf.Len())
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: f.Time, CaptureLength: len(f.Data), Length: len(f.Data)}, f.Data); err != nil {
			t.Fatal(err)
		}
	}
	b := buf.Bytes()
	if c.truncate > 0 {
		b = b[:offsets[c.truncate-1]+16+10]
	}
	return b
}

// TestCapturesUpToDate regenerates every capture and compares it with the
// committed file; run with -update to rewrite them.
func TestCapturesUpToDate(t *testing.T) {
	dir := filepath.Join("testdata", "captures")
	for _, c := range captures() {
		want := c.bytes(t)
		path := filepath.Join(dir, c.name)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test ./slowpath/inspect -run TestCapturesUpToDate -update)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the generator's output (run with -update and commit)", path)
		}
	}
}
