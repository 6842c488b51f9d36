package tlshello

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Record content types.
const (
	RecordHandshake       = 22
	RecordApplicationData = 23
)

// Handshake message types.
const (
	TypeClientHello = 1
	TypeServerHello = 2
)

// ErrNeedMore means the stream ends before the ClientHello does.
var ErrNeedMore = errors.New("ClientHello incomplete")

// ErrNotTLS means the stream does not start with a TLS handshake record.
var ErrNotTLS = errors.New("not a TLS handshake")

// maxHello bounds how much of a stream we reassemble looking for one hello.
const maxHello = 64 << 10

// LooksLikeTLS says whether a stream starts with a TLS handshake record
// header (it needs 3 bytes).
func LooksLikeTLS(b []byte) bool {
	return len(b) >= 3 && b[0] == RecordHandshake && b[1] == 3 && b[2] <= 4
}

// Hello is what the engines use from a ClientHello.
type Hello struct {
	Version    uint16 // legacy_version
	ServerName string // the first host_name in server_name, or ""
}

// ParseClientHello parses the ClientHello at the start of a client stream,
// which may be spread over several records. It returns ErrNeedMore until the
// whole message is there.
func ParseClientHello(stream []byte) (Hello, error) {
	msg, err := handshakeMessage(stream)
	if err != nil {
		return Hello{}, err
	}
	if msg[0] != TypeClientHello {
		return Hello{}, fmt.Errorf("%w: first handshake message has type %d", ErrNotTLS, msg[0])
	}
	return parseHelloBody(msg[4:])
}

// handshakeMessage joins the fragments of the first handshake message from
// consecutive handshake records.
func handshakeMessage(stream []byte) ([]byte, error) {
	var msg []byte
	for off := 0; ; {
		if len(stream)-off < 5 {
			return nil, ErrNeedMore
		}
		h := stream[off:]
		if h[0] != RecordHandshake || h[1] != 3 {
			return nil, fmt.Errorf("%w: record type %d version %d.%d at offset %d", ErrNotTLS, h[0], h[1], h[2], off)
		}
		n := int(binary.BigEndian.Uint16(h[3:]))
		if n == 0 || n > 1<<14+2048 {
			return nil, fmt.Errorf("TLS record length %d at offset %d", n, off)
		}
		if len(h) < 5+n {
			// Use what has arrived: the length check below may already
			// show the message is incomplete, or it is, and we wait.
			return nil, ErrNeedMore
		}
		msg = append(msg, h[5:5+n]...)
		off += 5 + n
		if len(msg) >= 4 {
			l := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
			if l > maxHello {
				return nil, fmt.Errorf("handshake message length %d exceeds %d", l, maxHello)
			}
			if len(msg) >= 4+l {
				return msg[:4+l], nil
			}
		}
	}
}

// reader is a bounds-checked cursor over a message.
type reader struct {
	b   []byte
	err error
}

func (r *reader) next(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.err = fmt.Errorf("ClientHello truncated in %s", what)
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8(what string) int {
	if v := r.next(1, what); v != nil {
		return int(v[0])
	}
	return 0
}

func (r *reader) u16(what string) int {
	if v := r.next(2, what); v != nil {
		return int(binary.BigEndian.Uint16(v))
	}
	return 0
}

func parseHelloBody(b []byte) (Hello, error) {
	r := reader{b: b}
	var h Hello
	h.Version = uint16(r.u16("version"))
	r.next(32, "random")
	r.next(r.u8("session id length"), "session id")
	r.next(r.u16("cipher suites length"), "cipher suites")
	r.next(r.u8("compression methods length"), "compression methods")
	if r.err != nil {
		return Hello{}, r.err
	}
	if len(r.b) == 0 {
		return h, nil // no extensions (SSLv3-style hello)
	}
	ext := reader{b: r.next(r.u16("extensions length"), "extensions")}
	if r.err != nil {
		return Hello{}, r.err
	}
	for len(ext.b) > 0 && ext.err == nil {
		typ := ext.u16("extension type")
		data := ext.next(ext.u16("extension length"), "extension")
		if ext.err != nil || typ != 0 || h.ServerName != "" {
			continue
		}
		name, err := serverName(data)
		if err != nil {
			return Hello{}, err
		}
		h.ServerName = name
	}
	if ext.err != nil {
		return Hello{}, ext.err
	}
	return h, nil
}

func serverName(b []byte) (string, error) {
	r := reader{b: b}
	list := reader{b: r.next(r.u16("server_name list length"), "server_name list")}
	for len(list.b) > 0 && list.err == nil {
		typ := list.u8("server_name type")
		name := list.next(list.u16("server_name length"), "server_name")
		if list.err == nil && typ == 0 {
			for _, c := range name {
				if c <= ' ' || c >= 0x7f {
					return "", fmt.Errorf("server_name has byte 0x%02x", c)
				}
			}
			return string(name), nil
		}
	}
	if r.err != nil {
		return "", r.err
	}
	return "", list.err
}

// RecordWalker follows one direction's TLS records by their headers,
// without decrypting, to see which content types a side has sent.
type RecordWalker struct {
	off         int
	Handshake   bool // a handshake record was seen
	ServerHello bool // a handshake record starting a ServerHello was seen
	AppData     bool // an application_data record was seen
	Broken      bool // the stream stopped looking like TLS records
}

// Walk consumes the records complete or started in stream (the whole side
// so far).
func (w *RecordWalker) Walk(stream []byte) {
	// Six bytes: the header and the first byte of the fragment, which for a
	// handshake record names the message.
	for !w.Broken && len(stream)-w.off >= 6 {
		h := stream[w.off:]
		if h[0] < 20 || h[0] > 24 || h[1] != 3 {
			w.Broken = true
			return
		}
		switch h[0] {
		case RecordHandshake:
			w.Handshake = true
			if h[5] == TypeServerHello {
				w.ServerHello = true
			}
		case RecordApplicationData:
			w.AppData = true
		}
		w.off += 5 + int(binary.BigEndian.Uint16(h[3:]))
	}
}
