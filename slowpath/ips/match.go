package ips

import (
	"bytes"

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
type matcher struct {
	ms    []rule.Match
	data  []byte
	steps int
}

func matchBuffer(ms []rule.Match, data []byte) bool {
	if len(ms) == 0 {
		return true
	}
	m := matcher{ms: ms, data: data}
	return m.from(0, 0)
}

func (m *matcher) from(i, prevEnd int) bool {
	if i == len(m.ms) {
		return true
	}
	m.steps++
	if m.steps > maxMatchSteps {
		return false
	}
	// Only a relative successor makes it worth retrying this match later
	// in the buffer.
	retry := i+1 < len(m.ms) && isRelative(m.ms[i+1])
	if c := m.ms[i].Content; c != nil {
		start, end := window(c, prevEnd, len(m.data))
		if c.Negated {
			if start <= end && index(m.data[start:end], c) >= 0 {
				return false
			}
			return m.from(i+1, prevEnd)
		}
		for start <= end {
			j := index(m.data[start:end], c)
			if j < 0 {
				return false
			}
			if m.from(i+1, start+j+len(c.Pattern)) {
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
	base := 0
	if pc.Relative {
		base = prevEnd
	}
	if base > len(m.data) {
		return pc.Negated && m.from(i+1, prevEnd)
	}
	subject := m.data[base:]
	if pc.Negated {
		if pc.Regexp.Match(subject) {
			return false
		}
		return m.from(i+1, prevEnd)
	}
	for off := 0; off <= len(subject); {
		s, e, ok := pc.FindFrom(subject, off)
		if !ok {
			return false
		}
		if m.from(i+1, base+e) {
			return true
		}
		if !retry {
			return false
		}
		off = s + 1
	}
	return false
}

func isRelative(m rule.Match) bool {
	return m.Content != nil && m.Content.Relative || m.PCRE != nil && m.PCRE.Relative
}

// window is where content c may lie: [start, end) of data.
func window(c *rule.Content, prevEnd, n int) (int, int) {
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

func lower(b byte) byte {
	if b >= 'A' && b <= 'Z' {
		return b + 'a' - 'A'
	}
	return b
}

func upper(b byte) byte {
	if b >= 'a' && b <= 'z' {
		return b - ('a' - 'A')
	}
	return b
}

// indexFold is bytes.Index with ASCII case folding (Suricata's nocase does
// not fold other bytes).
func indexFold(data, pat []byte) int {
	if len(pat) == 0 {
		return 0
	}
	lo, up := lower(pat[0]), upper(pat[0])
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
		if a[i] != b[i] && lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}
