package ips

import (
	"bytes"

	"github.com/palisade/palisade/slowpath/internal/ascii"
	"github.com/palisade/palisade/slowpath/ips/rule"
)

// maxMatchSteps bounds the backtracking of one buffer's matches, as
// Suricata bounds its inspection recursion: a rule that needs more does not
// match.
const maxMatchSteps = 20000

// matcher evaluates one buffer's content and pcre list against data with
// Suricata's semantics: offset/depth from the buffer start,
// distance/within from the end of the previous match in the same buffer,
// and backtracking over earlier matches when a later relative one fails.
//
// On a stream it also takes after and lo: the bytes up to after were
// inspected before, so only a match that ends past after is new (one of
// its contents or pcres ends there), and searches not anchored by
// offset/depth or by a previous match start no earlier than lo.
type matcher struct {
	ms    []rule.Match
	data  []byte
	steps int
	after int // a match must end past this offset (-1: any match)
	lo    int // unanchored searches start here or later
	force int // this match must itself end past after (-1: none)
}

// matchBuffer says whether ms match data.
func matchBuffer(ms []rule.Match, data []byte) bool { return matchStream(ms, data, -1, 0) }

// matchStream says whether ms match data with a match that ends past
// after (see matcher).
func matchStream(ms []rule.Match, data []byte, after, lo int) bool {
	if len(ms) == 0 {
		return after < 0
	}
	m := matcher{ms: ms, data: data, after: after, lo: lo, force: -1}
	if after < 0 {
		return m.from(0, 0, -1)
	}
	// A new match has some content or pcre ending in the new bytes: look
	// for one with each placed there in turn, the last first (the one a
	// growing stream usually completes). The placed one is searched for
	// from the new bytes on, so an old match costs nothing to skip.
	for k := len(ms) - 1; k >= 0; k-- {
		if isNegated(ms[k]) {
			continue
		}
		m.force, m.steps = k, 0
		if m.from(0, 0, -1) {
			return true
		}
	}
	return false
}

// from places ms[i:] given the end of the previous match and the furthest
// end so far.
func (m *matcher) from(i, prevEnd, furthest int) bool {
	if i == len(m.ms) {
		return furthest > m.after
	}
	m.steps++
	if m.steps > maxMatchSteps {
		return false
	}
	// Only a relative successor makes it worth retrying this match later
	// in the buffer (or, forced, finding one that ends in the new bytes).
	retry := i+1 < len(m.ms) && isRelative(m.ms[i+1])
	forced := i == m.force
	if c := m.ms[i].Content; c != nil {
		start, end := window(c, prevEnd, len(m.data), m.lo)
		if c.Negated {
			if start <= end && index(m.data[start:end], c) >= 0 {
				return false
			}
			return m.from(i+1, prevEnd, furthest)
		}
		if forced {
			start = max(start, m.after-len(c.Pattern)+1)
		}
		for start <= end {
			j := index(m.data[start:end], c)
			if j < 0 {
				return false
			}
			e := start + j + len(c.Pattern)
			if m.from(i+1, e, max(furthest, e)) {
				return true
			}
			if !retry {
				return false
			}
			start += j + 1
		}
		return false
	}
	pc := m.ms[i].PCRE
	// With R the subject starts where the previous match ended (so ^
	// anchors there, as in Suricata); a retry keeps that subject and only
	// moves the start, as PCRE's start offset does.
	base, off := 0, 0
	if pc.Relative {
		base = prevEnd
	} else {
		off = m.lo
	}
	if base > len(m.data) {
		return pc.Negated && m.from(i+1, prevEnd, furthest)
	}
	subject := m.data[base:]
	if pc.Negated {
		if _, _, ok := pc.FindFrom(subject, off); ok {
			return false
		}
		return m.from(i+1, prevEnd, furthest)
	}
	for off <= len(subject) {
		s, e, ok := pc.FindFrom(subject, off)
		if !ok {
			return false
		}
		e += base
		if forced && e <= m.after {
			// An old match: look further for one ending in new bytes.
			if m.steps++; m.steps > maxMatchSteps {
				return false
			}
			off = s + 1
			continue
		}
		if m.from(i+1, e, max(furthest, e)) {
			return true
		}
		if !retry {
			return false
		}
		off = s + 1
	}
	return false
}

func isNegated(m rule.Match) bool {
	return m.Content != nil && m.Content.Negated || m.PCRE != nil && m.PCRE.Negated
}

func isRelative(m rule.Match) bool {
	return m.Content != nil && m.Content.Relative || m.PCRE != nil && m.PCRE.Relative
}

// window is where content c may lie: [start, end) of data; a content
// anchored by neither depth nor a previous match starts at lo or later.
func window(c *rule.Content, prevEnd, n, lo int) (int, int) {
	start, end := 0, n
	if c.Relative {
		start = prevEnd
		if c.HasDistance {
			start += c.Distance
		}
		if c.Within > 0 {
			end = start + c.Within
		}
		start = max(start, 0)
	} else {
		start = c.Offset
		if c.Depth > 0 {
			end = c.Offset + c.Depth
		} else {
			start = max(start, lo)
		}
	}
	end = min(end, n)
	if start > end {
		return n + 1, n // empty
	}
	return start, end
}

// index finds c in data, ASCII case-insensitively for nocase.
func index(data []byte, c *rule.Content) int {
	if !c.Nocase {
		return bytes.Index(data, c.Pattern)
	}
	return indexFold(data, c.Pattern)
}

// indexFold is bytes.Index with ASCII case folding (Suricata's nocase does
// not fold other bytes).
func indexFold(data, pat []byte) int {
	if len(pat) == 0 {
		return 0
	}
	lo, up := ascii.Lower(pat[0]), ascii.Upper(pat[0])
	for i := 0; i+len(pat) <= len(data); {
		j := bytes.IndexByte(data[i:len(data)-len(pat)+1], lo)
		if lo != up {
			if k := bytes.IndexByte(data[i:len(data)-len(pat)+1], up); k >= 0 && (j < 0 || k < j) {
				j = k
			}
		}
		if j < 0 {
			return -1
		}
		i += j
		if equalFold(data[i+1:i+len(pat)], pat[1:]) {
			return i
		}
		i++
	}
	return -1
}

func equalFold(a, b []byte) bool {
	for i := range a {
		if a[i] != b[i] && ascii.Lower(a[i]) != ascii.Lower(b[i]) {
			return false
		}
	}
	return true
}
