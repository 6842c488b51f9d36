package channel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

func frameBytes(t FrameType, seq uint32, payload []byte) []byte {
	b := make([]byte, HeaderSize, HeaderSize+len(payload))
	binary.BigEndian.PutUint16(b[0:2], Magic)
	b[2] = FrameFormat
	b[3] = byte(t)
	binary.BigEndian.PutUint32(b[4:8], uint32(len(payload)))
	binary.BigEndian.PutUint32(b[8:12], seq)
	return append(b, payload...)
}

func TestFrameRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	payloads := [][]byte{nil, []byte("x"), bytes.Repeat([]byte{0xab}, 70000)}
	for _, p := range payloads {
		if err := w.WriteFrame(TypeEventBatch, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r := NewReader(&buf)
	for i, p := range payloads {
		f, err := r.ReadFrame()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if f.Type != TypeEventBatch || f.Seq != uint32(i) || !bytes.Equal(f.Payload, p) {
			t.Fatalf("frame %d: got type %s seq %d len %d", i, f.Type, f.Seq, len(f.Payload))
		}
	}
	if _, err := r.ReadFrame(); !errors.Is(err, io.EOF) {
		t.Fatalf("after last frame: got %v, want io.EOF", err)
	}
}

func TestFrameRejections(t *testing.T) {
	oversize := frameBytes(TypePing, 0, nil)
	binary.BigEndian.PutUint32(oversize[4:8], MaxPayload+1)
	badMagic := frameBytes(TypePing, 0, make([]byte, 8))
	badMagic[0] = 'X'
	badFormat := frameBytes(TypePing, 0, make([]byte, 8))
	badFormat[2] = 9
	cases := []struct {
		name  string
		input []byte
		want  string
	}{
		{"bad magic", badMagic, "bad magic"},
		{"format", badFormat, "unsupported frame format 9"},
		{"unknown type", frameBytes(FrameType(200), 0, nil), "unknown frame type 200"},
		{"oversized", oversize, "exceeds the maximum of 1048576"},
		{"sequence gap", frameBytes(TypePing, 5, make([]byte, 8)), "out of order: sequence 5, expected 0"},
		{"truncated header", frameBytes(TypePing, 0, nil)[:7], "inside a frame header"},
		{"truncated payload", frameBytes(TypePing, 0, make([]byte, 8))[:15], "5 of 8 payload bytes missing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewReader(bytes.NewReader(c.input)).ReadFrame()
			if !IsProtocolError(err) {
				t.Fatalf("got %v, want a ProtocolError", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
		})
	}
}

func TestReplayedFrameIsOutOfOrder(t *testing.T) {
	one := frameBytes(TypePing, 0, make([]byte, 8))
	r := NewReader(bytes.NewReader(append(append([]byte{}, one...), one...)))
	if _, err := r.ReadFrame(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadFrame(); err == nil || !strings.Contains(err.Error(), "sequence 0, expected 1") {
		t.Fatalf("replayed frame: got %v", err)
	}
}

func TestWriterRefusesOversize(t *testing.T) {
	w := NewWriter(io.Discard)
	if err := w.WriteFrame(TypePuntBatch, make([]byte, MaxPayload+1)); err == nil {
		t.Fatal("oversized frame was written")
	}
}
