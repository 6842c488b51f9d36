package tlshello

import (
	"errors"
	"testing"

	"github.com/palisade/palisade/slowpath/inspect/craft"
)

func TestParseClientHello(t *testing.T) {
	rec := craft.ClientHello("www.Example.org")
	h, err := ParseClientHello(rec)
	if err != nil || h.ServerName != "www.Example.org" || h.Version != 0x0303 {
		t.Fatalf("hello %+v err %v", h, err)
	}
	// Every strict prefix is incomplete, never an error or a wrong name.
	for i := 0; i < len(rec); i++ {
		if _, err := ParseClientHello(rec[:i]); !errors.Is(err, ErrNeedMore) {
			t.Fatalf("prefix %d: err %v, want ErrNeedMore", i, err)
		}
	}
	if h, err := ParseClientHello(craft.ClientHello("")); err != nil || h.ServerName != "" {
		t.Fatalf("no SNI: %+v %v", h, err)
	}
}

// A ClientHello split across two handshake records (a record boundary in
// the middle of the message) is joined.
func TestClientHelloAcrossRecords(t *testing.T) {
	rec := craft.ClientHello("split.example")
	msg := rec[5:]
	cut := 40
	two := append([]byte{22, 3, 1, 0, byte(cut)}, msg[:cut]...)
	rest := msg[cut:]
	two = append(two, 22, 3, 1, byte(len(rest)>>8), byte(len(rest)))
	two = append(two, rest...)
	h, err := ParseClientHello(two)
	if err != nil || h.ServerName != "split.example" {
		t.Fatalf("hello %+v err %v", h, err)
	}
}

func TestNotTLS(t *testing.T) {
	if _, err := ParseClientHello([]byte("GET / HTTP/1.1\r\n\r\n")); !errors.Is(err, ErrNotTLS) {
		t.Fatalf("err %v", err)
	}
	sh := craft.ServerHello()
	if _, err := ParseClientHello(sh); !errors.Is(err, ErrNotTLS) {
		t.Fatalf("ServerHello accepted as ClientHello: %v", err)
	}
	if LooksLikeTLS([]byte("GET")) || !LooksLikeTLS(sh) {
		t.Fatal("LooksLikeTLS")
	}
}

func TestMalformedLengths(t *testing.T) {
	rec := craft.ClientHello("a.example")
	bad := append([]byte(nil), rec...)
	bad[5+4+2+32] = 200 // session id length past the message
	if _, err := ParseClientHello(bad); err == nil || errors.Is(err, ErrNeedMore) {
		t.Fatalf("err %v, want a truncation error", err)
	}
}

func TestRecordWalker(t *testing.T) {
	var w RecordWalker
	s := craft.ServerHello()
	w.Walk(s[:5])
	if w.Handshake {
		t.Fatal("judged a record from its header alone")
	}
	s = append(s, craft.AppData(10)...)
	w.Walk(s)
	if !w.Handshake || !w.ServerHello || !w.AppData || w.Broken {
		t.Fatalf("%+v", w)
	}
	var b RecordWalker
	b.Walk([]byte("HTTP/1.1 200 OK\r\n"))
	if !b.Broken {
		t.Fatal("plain text not flagged")
	}
}

func FuzzParseClientHello(f *testing.F) {
	f.Add(craft.ClientHello("fuzz.example"))
	f.Add(craft.ServerHello())
	f.Add([]byte{22, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseClientHello(b)
		if err != nil {
			return
		}
		// A parsed hello parses the same with trailing data after it.
		h2, err := ParseClientHello(append(append([]byte(nil), b...), 23, 3, 3, 0, 1, 0))
		if err != nil || h2 != h {
			t.Fatalf("trailing data changed the result: %+v %v vs %+v", h2, err, h)
		}
		var w RecordWalker
		w.Walk(b)
	})
}
