package stream

import "sort"

// Defaults for Limits' zero fields.
const (
	DefaultDepth         = 1 << 20
	DefaultPendingBytes  = 256 << 10
	DefaultPendingChunks = 128
)

// Limits bound one direction's memory.
type Limits struct {
	Depth         int // bytes reassembled before the stream is Full
	PendingBytes  int // out-of-order bytes held while waiting for a gap to fill
	PendingChunks int // out-of-order segments held
}

func (l Limits) withDefaults() Limits {
	if l.Depth <= 0 {
		l.Depth = DefaultDepth
	}
	if l.PendingBytes <= 0 {
		l.PendingBytes = DefaultPendingBytes
	}
	if l.PendingChunks <= 0 {
		l.PendingChunks = DefaultPendingChunks
	}
	return l
}

type chunk struct {
	off  int64 // stream offset of data[0]
	data []byte
}

// Stream is one direction of a connection. The zero value is unusable; call
// Start (on a SYN) or let Add start it midstream.
type Stream struct {
	limits       Limits
	started      bool
	next         uint32 // sequence number of the next in-order byte
	data         []byte // every in-order byte so far, up to the depth
	pending      []chunk
	pendingBytes int
	// skipped is the stream space given up to gaps: the stream offset of
	// Data()[i] is i plus the gaps before it.
	skipped int64
	// Dropped counts out-of-order bytes refused because the buffer was full;
	// the sender will retransmit them.
	Dropped int
	// Gaps counts holes skipped because the peer acknowledged data never
	// seen here (a lost copy); GapBytes is their total size.
	Gaps     int
	GapBytes int64
}

// New returns a stream with the given limits.
func New(l Limits) *Stream { return &Stream{limits: l.withDefaults()} }

// Started says whether the initial sequence number is known.
func (s *Stream) Started() bool { return s.started }

// Start sets the initial sequence number from a SYN: data begins at isn+1.
// A second SYN (retransmitted) changes nothing.
func (s *Stream) Start(isn uint32) {
	if !s.started {
		s.started, s.next = true, isn+1
	}
}

// Data is the in-order stream so far, from its first byte, the bytes of
// skipped gaps left out. It aliases the stream's buffer: valid until the
// next Add or Acked.
func (s *Stream) Data() []byte { return s.data }

// pos is the stream offset of the next in-order byte.
func (s *Stream) pos() int64 { return int64(len(s.data)) + s.skipped }

// Full says the depth is reached: later bytes are not kept. Gaps count.
func (s *Stream) Full() bool { return s.pos() >= int64(s.limits.Depth) }

// Next is the sequence number the stream expects next.
func (s *Stream) Next() uint32 { return s.next }

// Add takes one segment's payload and returns how many bytes were appended
// to Data in order (zero for retransmissions, out-of-order and empty
// segments).
func (s *Stream) Add(seq uint32, payload []byte) int {
	if len(payload) == 0 {
		return 0
	}
	if !s.started {
		// Midstream pickup: the first data segment seen defines the start.
		s.started, s.next = true, seq
	}
	if s.Full() {
		return 0
	}
	delivered := s.pos()
	// Offsets in stream space; int32 keeps sequence wrap-around right.
	off := delivered + int64(int32(seq-s.next))
	end := off + int64(len(payload))
	if end <= delivered {
		return 0 // entirely old: retransmission
	}
	if off < delivered {
		payload = payload[delivered-off:]
		off = delivered
	}
	// Nothing past the depth is worth keeping.
	if limit := int64(s.limits.Depth); end > limit {
		if off >= limit {
			return 0
		}
		payload = payload[:limit-off]
	}
	s.insert(off, payload)
	return s.drain()
}

// insert stores the parts of [off, off+len(p)) no pending chunk covers yet.
func (s *Stream) insert(off int64, p []byte) {
	end := off + int64(len(p))
	i := sort.Search(len(s.pending), func(i int) bool {
		c := s.pending[i]
		return c.off+int64(len(c.data)) > off
	})
	var pieces []chunk
	cur := off
	for j := i; j < len(s.pending) && cur < end; j++ {
		c := s.pending[j]
		if c.off >= end {
			break
		}
		if c.off > cur {
			pieces = append(pieces, chunk{cur, p[cur-off : c.off-off]})
		}
		if ce := c.off + int64(len(c.data)); ce > cur {
			cur = ce
		}
	}
	if cur < end {
		pieces = append(pieces, chunk{cur, p[cur-off:]})
	}
	for _, pc := range pieces {
		// The piece that continues the stream drains at once, so the
		// limits only hold back true out-of-order data.
		inOrder := pc.off == s.pos()
		if !inOrder && (s.pendingBytes+len(pc.data) > s.limits.PendingBytes || len(s.pending) >= s.limits.PendingChunks) {
			s.Dropped += len(pc.data)
			continue
		}
		// Copy: the caller's packet buffer is reused after Inspect.
		pc.data = append([]byte(nil), pc.data...)
		k := sort.Search(len(s.pending), func(k int) bool { return s.pending[k].off > pc.off })
		s.pending = append(s.pending, chunk{})
		copy(s.pending[k+1:], s.pending[k:])
		s.pending[k] = pc
		s.pendingBytes += len(pc.data)
	}
}

// drain moves pending chunks that continue the stream into data.
func (s *Stream) drain() int {
	added := 0
	for len(s.pending) > 0 && s.pending[0].off == s.pos() {
		c := s.pending[0]
		s.data = append(s.data, c.data...)
		s.next += uint32(len(c.data))
		s.pendingBytes -= len(c.data)
		added += len(c.data)
		s.pending = s.pending[1:]
	}
	if len(s.pending) == 0 {
		s.pending = nil
	}
	return added
}

// Acked takes the peer's acknowledgement number. When it passes data that
// never arrived here although later data is held (a segment lost before
// reaching us, which the peer did receive), the hole will not be filled:
// reassembly skips to the held data and delivers it. It returns how many
// bytes that appended to Data.
func (s *Stream) Acked(ack uint32) int {
	if !s.started {
		return 0
	}
	added := 0
	for len(s.pending) > 0 && int32(ack-s.next) > 0 {
		acked := s.pos() + int64(int32(ack-s.next))
		gap := s.pending[0].off - s.pos()
		if s.pending[0].off > acked {
			break // the peer has not got past the hole either: wait
		}
		s.Gaps++
		s.GapBytes += gap
		s.skipped += gap
		s.next += uint32(gap)
		added += s.drain()
	}
	return added
}

// Pending is the number of out-of-order bytes held.
func (s *Stream) Pending() int { return s.pendingBytes }
