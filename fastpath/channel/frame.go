package channel

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Frame header, big-endian:
//
//	0      2        3      4           8          12
//	+------+--------+------+-----------+----------+---------
//	| 'PL' | format | type | length    | sequence | payload (length bytes)
//	+------+--------+------+-----------+----------+---------
const (
	Magic       uint16 = 0x504c // "PL"
	FrameFormat uint8  = 1
	HeaderSize         = 12
	// MaxPayload bounds every frame. A punt batch of 64 jumbo frames fits;
	// anything larger is a broken or hostile peer.
	MaxPayload = 1 << 20
)

// FrameType says what a frame's payload is.
type FrameType uint8

// Frame types. Handshake types are only valid before the binding is
// established; the others only after it.
const (
	TypeHello        FrameType = 1  // slow path → fast path: version, nonce, capabilities
	TypeChallenge    FrameType = 2  // fast path → slow path: version, nonce, host proof
	TypeAuth         FrameType = 3  // slow path → fast path: slow-path proof
	TypeWelcome      FrameType = 4  // fast path → slow path: bound, negotiated capabilities
	TypeReject       FrameType = 5  // either way during the handshake: refusal with a reason
	TypePing         FrameType = 6  // either way: keepalive
	TypePong         FrameType = 7  // either way: keepalive answer
	TypePuntBatch    FrameType = 16 // fast path → slow path: held packets to inspect
	TypeVerdictBatch FrameType = 17 // slow path → fast path: verdicts for punted packets
	TypeEventBatch   FrameType = 18 // either way: events (alerts, guest protection failed)
	TypeGoodbye      FrameType = 31 // either way: orderly close with a reason
)

var typeNames = map[FrameType]string{
	TypeHello: "HELLO", TypeChallenge: "CHALLENGE", TypeAuth: "AUTH", TypeWelcome: "WELCOME",
	TypeReject: "REJECT", TypePing: "PING", TypePong: "PONG", TypePuntBatch: "PUNT_BATCH",
	TypeVerdictBatch: "VERDICT_BATCH", TypeEventBatch: "EVENT_BATCH", TypeGoodbye: "GOODBYE",
}

func (t FrameType) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Known reports whether t is a frame type of this protocol revision.
func (t FrameType) Known() bool { _, ok := typeNames[t]; return ok }

// Frame is one decoded frame. Payload aliases the Reader's buffer and is valid
// until the next ReadFrame.
type Frame struct {
	Type    FrameType
	Seq     uint32
	Payload []byte
}

// ProtocolError is a violation by the peer: the connection must be closed with
// Reason logged. Callers branch on it with errors.As to tell a misbehaving
// peer from a network failure.
type ProtocolError struct {
	Reason string
}

func (e *ProtocolError) Error() string { return "protocol error: " + e.Reason }

func protoErr(format string, args ...any) error {
	return &ProtocolError{Reason: fmt.Sprintf(format, args...)}
}

// IsProtocolError reports whether err is (or wraps) a ProtocolError.
func IsProtocolError(err error) bool {
	var pe *ProtocolError
	return errors.As(err, &pe)
}

// Reader decodes frames from a stream, enforcing magic, format, known type,
// maximum size and a gap-free sequence starting at 0.
type Reader struct {
	r    *bufio.Reader
	next uint32
	max  int
	hdr  [HeaderSize]byte
	buf  []byte
}

// NewReader reads frames of at most MaxPayload bytes from r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 64<<10), max: MaxPayload}
}

// ReadFrame returns the next frame. A ProtocolError means the peer broke the
// framing; io.EOF means it closed cleanly between frames.
func (r *Reader) ReadFrame() (Frame, error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return Frame{}, protoErr("connection closed inside a frame header")
		}
		return Frame{}, err
	}
	if m := binary.BigEndian.Uint16(r.hdr[0:2]); m != Magic {
		return Frame{}, protoErr("bad magic %#04x (want %#04x)", m, Magic)
	}
	if f := r.hdr[2]; f != FrameFormat {
		return Frame{}, protoErr("unsupported frame format %d (want %d)", f, FrameFormat)
	}
	t := FrameType(r.hdr[3])
	if !t.Known() {
		return Frame{}, protoErr("unknown frame type %d", uint8(t))
	}
	n := binary.BigEndian.Uint32(r.hdr[4:8])
	if n > uint32(r.max) {
		return Frame{}, protoErr("%s frame of %d bytes exceeds the maximum of %d", t, n, r.max)
	}
	seq := binary.BigEndian.Uint32(r.hdr[8:12])
	if seq != r.next {
		return Frame{}, protoErr("%s frame out of order: sequence %d, expected %d", t, seq, r.next)
	}
	if cap(r.buf) < int(n) {
		r.buf = make([]byte, n, max(int(n), 4096))
	}
	p := r.buf[:n]
	if got, err := io.ReadFull(r.r, p); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return Frame{}, protoErr("connection closed inside a %s frame (%d of %d payload bytes missing)", t, int(n)-got, n)
		}
		return Frame{}, err
	}
	r.next++
	return Frame{Type: t, Seq: seq, Payload: p}, nil
}

// Writer encodes frames into a buffered stream. Frames accumulate until Flush,
// so many small frames leave in one write. Not safe for concurrent use; the
// Session serialises writers.
type Writer struct {
	w   *bufio.Writer
	seq uint32
	hdr [HeaderSize]byte
}

// NewWriter writes frames to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: bufio.NewWriterSize(w, 64<<10)}
}

// WriteFrame appends one frame to the buffer.
func (w *Writer) WriteFrame(t FrameType, payload []byte) error {
	if len(payload) > MaxPayload {
		return fmt.Errorf("write %s frame: %d bytes exceeds the maximum of %d", t, len(payload), MaxPayload)
	}
	binary.BigEndian.PutUint16(w.hdr[0:2], Magic)
	w.hdr[2] = FrameFormat
	w.hdr[3] = byte(t)
	binary.BigEndian.PutUint32(w.hdr[4:8], uint32(len(payload)))
	binary.BigEndian.PutUint32(w.hdr[8:12], w.seq)
	if _, err := w.w.Write(w.hdr[:]); err != nil {
		return fmt.Errorf("write %s frame: %w", t, err)
	}
	if _, err := w.w.Write(payload); err != nil {
		return fmt.Errorf("write %s frame: %w", t, err)
	}
	w.seq++
	return nil
}

// Buffered is the number of bytes waiting for Flush.
func (w *Writer) Buffered() int { return w.w.Buffered() }

// Flush sends everything buffered.
func (w *Writer) Flush() error { return w.w.Flush() }
