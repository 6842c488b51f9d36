package stream

import (
	"math/rand"
	"testing"
)

func TestInOrderAndRetransmit(t *testing.T) {
	s := New(Limits{})
	s.Start(999)
	if n := s.Add(1000, []byte("GET /a")); n != 6 {
		t.Fatalf("added %d", n)
	}
	if n := s.Add(1000, []byte("GET /a")); n != 0 {
		t.Fatalf("retransmission added %d bytes", n)
	}
	if n := s.Add(1003, []byte("XXXbc")); n != 2 {
		t.Fatalf("partial retransmission added %d, want the 2 new bytes", n)
	}
	if got := string(s.Data()); got != "GET /abc" {
		t.Fatalf("data %q: delivered bytes must not be rewritten", got)
	}
}

func TestOutOfOrderFirstSeenWins(t *testing.T) {
	s := New(Limits{})
	s.Start(0)
	// Stream offsets: seq 1 is offset 0.
	s.Add(7, []byte("ghij"))    // [6,10) early
	s.Add(5, []byte("EFGHIJK")) // [4,11): overlaps the buffered [6,10), which wins
	if len(s.Data()) != 0 || s.Pending() != 7 {
		t.Fatalf("data %q pending %d", s.Data(), s.Pending())
	}
	if n := s.Add(1, []byte("abcdZZ")); n != 11 {
		t.Fatalf("gap fill added %d", n)
	}
	if got := string(s.Data()); got != "abcdEFghijK" {
		t.Fatalf("data %q, want first-seen bytes for every offset", got)
	}
}

func TestSequenceWrap(t *testing.T) {
	s := New(Limits{})
	s.Start(0xfffffffd)
	s.Add(0, []byte("cd"))
	s.Add(0xfffffffe, []byte("ab"))
	if got := string(s.Data()); got != "abcd" {
		t.Fatalf("data %q across the wrap", got)
	}
}

func TestDepthAndPendingLimits(t *testing.T) {
	s := New(Limits{Depth: 8, PendingBytes: 4, PendingChunks: 2})
	s.Start(0)
	s.Add(20, []byte("zzzzzz")) // beyond the depth: trimmed to nothing
	if s.Pending() != 0 {
		t.Fatalf("kept %d bytes past the depth", s.Pending())
	}
	s.Add(4, []byte("def"))
	s.Add(8, []byte("hij")) // trimmed by the depth to "h" at offset 7
	if s.Dropped != 0 || s.Pending() != 4 {
		t.Fatalf("dropped %d pending %d", s.Dropped, s.Pending())
	}
	s.Add(2, []byte("b")) // the pending buffer is full: refused
	if s.Dropped != 1 || s.Pending() != 4 {
		t.Fatalf("dropped %d pending %d", s.Dropped, s.Pending())
	}
	s.Add(1, []byte("abc"))
	if got := string(s.Data()); len(got) > 8 || got[:6] != "abcdef" {
		t.Fatalf("data %q", got)
	}
	s.Add(7, []byte("ghijkl"))
	if !s.Full() || string(s.Data()) != "abcdefgh" {
		t.Fatalf("data %q full %v", s.Data(), s.Full())
	}
	if s.Add(9, []byte("more")) != 0 {
		t.Fatal("added past the depth")
	}
}

// Any delivery order of the same segments yields the same stream when they
// do not conflict.
func TestShuffledSegments(t *testing.T) {
	msg := []byte("the quick brown fox jumps over the lazy dog, again and again and again")
	r := rand.New(rand.NewSource(3))
	for round := 0; round < 200; round++ {
		type seg struct {
			seq  uint32
			data []byte
		}
		var segs []seg
		for off := 0; off < len(msg); {
			n := 1 + r.Intn(9)
			if off+n > len(msg) {
				n = len(msg) - off
			}
			segs = append(segs, seg{uint32(1000 + off), msg[off : off+n]})
			if r.Intn(3) == 0 { // an overlapping duplicate of the same bytes
				segs = append(segs, seg{uint32(1000 + off), msg[off : off+n]})
			}
			off += n
		}
		r.Shuffle(len(segs), func(i, j int) { segs[i], segs[j] = segs[j], segs[i] })
		s := New(Limits{})
		s.Start(999)
		for _, sg := range segs {
			s.Add(sg.seq, sg.data)
		}
		if string(s.Data()) != string(msg) || s.Pending() != 0 {
			t.Fatalf("round %d: %q pending %d", round, s.Data(), s.Pending())
		}
	}
}

// Data the peer acknowledged but that never reached us (a lost copy) is a
// gap: once an acknowledgement passes it, reassembly skips to the data
// held after it instead of waiting for it forever.
func TestGapSkippedWhenAcknowledged(t *testing.T) {
	s := New(Limits{Depth: 20})
	s.Start(0)
	s.Add(1, []byte("abc"))
	s.Add(7, []byte("ghi")) // "def" at seq 4 is lost
	if n := s.Acked(4); n != 0 || s.Gaps != 0 {
		t.Fatalf("ack up to the hole skipped %d bytes, %d gaps", n, s.Gaps)
	}
	if n := s.Acked(10); n != 3 || s.Gaps != 1 || s.GapBytes != 3 {
		t.Fatalf("ack past the hole delivered %d, gaps %d (%d bytes)", n, s.Gaps, s.GapBytes)
	}
	if got := string(s.Data()); got != "abcghi" || s.Pending() != 0 {
		t.Fatalf("data %q pending %d", got, s.Pending())
	}
	if n := s.Add(4, []byte("def")); n != 0 {
		t.Fatalf("the late copy of the gap added %d bytes", n)
	}
	if n := s.Add(10, []byte("jkl")); n != 3 {
		t.Fatalf("in-order data after the gap added %d", n)
	}
	// The gap counts toward the depth (it is stream space).
	s.Add(13, []byte("mnopqrstuvw"))
	if !s.Full() || len(s.Data()) != 17 {
		t.Fatalf("full %v with %d bytes", s.Full(), len(s.Data()))
	}
	// Nothing held after the hole: the acknowledgement alone skips nothing.
	q := New(Limits{})
	q.Start(0)
	q.Add(1, []byte("abc"))
	if n := q.Acked(100); n != 0 || q.Gaps != 0 {
		t.Fatalf("skipped with nothing held: %d, %d gaps", n, q.Gaps)
	}
}
