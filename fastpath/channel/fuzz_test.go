package channel

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// decodePayload decodes a frame's payload by type and re-encodes what it
// decoded. A payload that decodes must re-encode to the same bytes: the
// encoding is canonical, so nothing is silently dropped or reinterpreted.
func decodePayload(f Frame) ([]byte, error) {
	switch f.Type {
	case TypeHello:
		m, err := UnmarshalHello(f.Payload)
		if err != nil {
			return nil, err
		}
		return m.Marshal()
	case TypeChallenge:
		m, err := UnmarshalChallenge(f.Payload)
		if err != nil {
			return nil, err
		}
		return m.Marshal()
	case TypeAuth:
		m, err := UnmarshalAuth(f.Payload)
		if err != nil {
			return nil, err
		}
		return m.Marshal()
	case TypeWelcome:
		m, err := UnmarshalWelcome(f.Payload)
		if err != nil {
			return nil, err
		}
		return m.Marshal()
	case TypeReject, TypeGoodbye:
		m, err := UnmarshalReject(f.Payload)
		if err != nil {
			return nil, err
		}
		return m.Marshal()
	case TypePing, TypePong:
		m, err := UnmarshalPing(f.Payload)
		if err != nil {
			return nil, err
		}
		return m.Marshal()
	case TypePuntBatch:
		var recs []PuntRecord
		if err := DecodePuntBatch(f.Payload, func(r PuntRecord) error { recs = append(recs, r); return nil }); err != nil {
			return nil, err
		}
		return AppendPuntBatch(nil, recs)
	case TypeVerdictBatch:
		recs, err := DecodeVerdictBatch(f.Payload, nil)
		if err != nil {
			return nil, err
		}
		return AppendVerdictBatch(nil, recs)
	case TypeEventBatch:
		recs, err := DecodeEventBatch(f.Payload, nil)
		if err != nil {
			return nil, err
		}
		return AppendEventBatch(nil, recs)
	}
	return nil, errors.New("no decoder")
}

// FuzzDecode feeds arbitrary bytes to the frame reader and every payload
// decoder. The seeds in testdata/fuzz/FuzzDecode are valid streams of each
// frame type and near misses. Run: go tool task fuzz.
func FuzzDecode(f *testing.F) {
	for _, s := range seedStreams() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		for i := 0; i < 64; i++ {
			fr, err := r.ReadFrame()
			if err != nil {
				if !errors.Is(err, io.EOF) && !IsProtocolError(err) {
					t.Fatalf("frame %d: error is neither EOF nor a ProtocolError: %v", i, err)
				}
				return
			}
			if len(fr.Payload) > MaxPayload {
				t.Fatalf("frame %d: %d-byte payload passed the limit", i, len(fr.Payload))
			}
			again, err := decodePayload(fr)
			if err != nil {
				if !IsProtocolError(err) {
					t.Fatalf("frame %d (%s): decode error is not a ProtocolError: %v", i, fr.Type, err)
				}
				continue
			}
			if !bytes.Equal(again, fr.Payload) {
				t.Fatalf("frame %d (%s): re-encoding differs\n in  %x\n out %x", i, fr.Type, fr.Payload, again)
			}
		}
	})
}

// seedStreams are the corpus' starting points: one valid stream covering
// every frame type, and each frame alone.
func seedStreams() [][]byte {
	var frames [][]byte
	add := func(t FrameType, p []byte, err error) {
		if err != nil {
			panic(err)
		}
		var b bytes.Buffer
		w := NewWriter(&b)
		_ = w.WriteFrame(t, p)
		_ = w.Flush()
		frames = append(frames, b.Bytes())
	}
	h := Hello{Version: MustParseVersion("1.2.3.4"), Revision: 1, Capabilities: CapIPS, ApplianceID: "dsva"}
	p, err := h.Marshal()
	add(TypeHello, p, err)
	p, err = Challenge{Version: MustParseVersion("1.2.3.5"), Revision: 1, HostID: "esx"}.Marshal()
	add(TypeChallenge, p, err)
	p, err = Auth{}.Marshal()
	add(TypeAuth, p, err)
	p, err = Welcome{SessionID: 1, Capabilities: CapIPS, KeepaliveMillis: 1000, DeadAfterMillis: 3000}.Marshal()
	add(TypeWelcome, p, err)
	p, err = Reject{Code: RejectVersionMismatch, Message: "version mismatch"}.Marshal()
	add(TypeReject, p, err)
	p, err = Ping{Token: 1}.Marshal()
	add(TypePing, p, err)
	p, err = AppendPuntBatch(nil, []PuntRecord{{Guest: 1, Direction: FromGuest, FlowID: 2, PacketID: 3, Data: []byte{0x45, 0, 0, 20}}})
	add(TypePuntBatch, p, err)
	p, err = AppendVerdictBatch(nil, []VerdictRecord{{Guest: 1, FlowID: 2, PacketID: 3, Action: ActionAllow, Flow: FlowOffload}})
	add(TypeVerdictBatch, p, err)
	p, err = AppendEventBatch(nil, []EventRecord{{Kind: EventAlert, Guest: 1, Body: []byte(`{}`)}})
	add(TypeEventBatch, p, err)

	// Each frame was written with sequence 0; a stream of all of them is
	// renumbered by writing through one Writer.
	var stream bytes.Buffer
	w := NewWriter(&stream)
	seeds := make([][]byte, 0, len(frames)+1)
	for _, fr := range frames {
		_ = w.WriteFrame(FrameType(fr[3]), fr[HeaderSize:])
		seeds = append(seeds, fr)
	}
	_ = w.Flush()
	return append(seeds, stream.Bytes())
}
