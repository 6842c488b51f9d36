package ips

import (
	ac "github.com/petar-dambovaliev/aho-corasick"

	"github.com/palisade/palisade/slowpath/internal/ascii"
	"github.com/palisade/palisade/slowpath/ips/rule"
)

// prefilter finds the rules worth evaluating for one evaluation point: one
// automaton per buffer over the rules' fast patterns, plus the rules
// without a usable fast pattern, which are always evaluated.
type prefilter struct {
	buffers [rule.NumBuffers]*bufferPrefilter
	always  []int32 // rule indexes, ascending
	// contents (stream point only) is over every positive payload content
	// of the rules with a fast pattern: a rule left pending on a direction
	// is evaluated again only when one of its contents is in new bytes.
	contents *bufferPrefilter
}

type bufferPrefilter struct {
	automaton ac.AhoCorasick
	// byPattern maps an automaton pattern id to the rules whose fast
	// pattern it is; case-sensitive and nocase rules share a pattern.
	byPattern [][]int32
	maxLen    int
}

// patterns collects lower-cased patterns and the rules of each.
type patterns struct {
	ids    map[string]int
	list   [][]byte
	byPat  [][]int32
	maxLen int
}

func (a *patterns) add(pattern []byte, idx int) {
	if a.ids == nil {
		a.ids = map[string]int{}
	}
	// The automaton is ASCII case-insensitive: one lower-cased pattern
	// serves both kinds, and evaluation checks the case.
	key := string(ascii.AppendLower(nil, pattern))
	id, ok := a.ids[key]
	if !ok {
		id = len(a.list)
		a.ids[key] = id
		a.list = append(a.list, []byte(key))
		a.byPat = append(a.byPat, nil)
		a.maxLen = max(a.maxLen, len(key))
	}
	if n := len(a.byPat[id]); n == 0 || a.byPat[id][n-1] != int32(idx) {
		a.byPat[id] = append(a.byPat[id], int32(idx))
	}
}

func (a *patterns) build() *bufferPrefilter {
	if a == nil || len(a.list) == 0 {
		return nil
	}
	builder := ac.NewAhoCorasickBuilder(ac.Opts{AsciiCaseInsensitive: true, MatchKind: ac.StandardMatch, DFA: true})
	return &bufferPrefilter{automaton: builder.BuildByte(a.list), byPattern: a.byPat, maxLen: a.maxLen}
}

func buildPrefilter(rules []*compiled, p point) *prefilter {
	pf := &prefilter{}
	var accs [rule.NumBuffers]*patterns
	var contents patterns
	for _, r := range rules {
		if r.point != p {
			continue
		}
		if r.fast == nil {
			pf.always = append(pf.always, int32(r.idx))
			continue
		}
		a := accs[r.fastBuffer]
		if a == nil {
			a = &patterns{}
			accs[r.fastBuffer] = a
		}
		a.add(r.fast.Pattern, r.idx)
		if p == atStream {
			for _, m := range r.byBuffer[rule.BufPayload] {
				if c := m.Content; c != nil && !c.Negated {
					contents.add(c.Pattern, r.idx)
				}
			}
		}
	}
	for b, a := range accs {
		pf.buffers[b] = a.build()
	}
	pf.contents = contents.build()
	return pf
}

// scan reports the rules whose fast pattern occurs in data ending at or
// after from (earlier matches were reported by an earlier scan of a
// growing stream).
func (bp *bufferPrefilter) scan(data []byte, from int, add func(int32)) {
	start := max(0, from-bp.maxLen+1)
	it := bp.automaton.IterOverlappingByte(data[start:])
	for m := it.Next(); m != nil; m = it.Next() {
		if start+m.End() <= from {
			continue
		}
		for _, idx := range bp.byPattern[m.Pattern()] {
			add(idx)
		}
	}
}
