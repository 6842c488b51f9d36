package ips

import (
	ac "github.com/petar-dambovaliev/aho-corasick"

	"github.com/palisade/palisade/slowpath/ips/rule"
)

// prefilter finds the rules worth evaluating for one evaluation point: one
// automaton per buffer over the rules' fast patterns, plus the rules
// without a usable fast pattern, which are always evaluated.
type prefilter struct {
	buffers [rule.NumBuffers]*bufferPrefilter
	always  []int32 // rule indexes, ascending
}

type bufferPrefilter struct {
	automaton ac.AhoCorasick
	// byPattern maps an automaton pattern id to the rules whose fast
	// pattern it is; case-sensitive and nocase rules share a pattern.
	byPattern [][]int32
	maxLen    int
}

func buildPrefilter(rules []*compiled, p point) *prefilter {
	pf := &prefilter{}
	type acc struct {
		ids      map[string]int
		patterns [][]byte
		byPat    [][]int32
		maxLen   int
	}
	var accs [rule.NumBuffers]*acc
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
			a = &acc{ids: map[string]int{}}
			accs[r.fastBuffer] = a
		}
		// The automaton is ASCII case-insensitive: one lower-cased
		// pattern serves both kinds, and evaluation checks the case.
		key := asciiLower(r.fast.Pattern)
		id, ok := a.ids[key]
		if !ok {
			id = len(a.patterns)
			a.ids[key] = id
			a.patterns = append(a.patterns, []byte(key))
			a.byPat = append(a.byPat, nil)
			a.maxLen = max(a.maxLen, len(key))
		}
		a.byPat[id] = append(a.byPat[id], int32(r.idx))
	}
	for b, a := range accs {
		if a == nil {
			continue
		}
		builder := ac.NewAhoCorasickBuilder(ac.Opts{AsciiCaseInsensitive: true, MatchKind: ac.StandardMatch, DFA: true})
		pf.buffers[b] = &bufferPrefilter{automaton: builder.BuildByte(a.patterns), byPattern: a.byPat, maxLen: a.maxLen}
	}
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

// asciiLower folds A-Z only: bytes.ToLower would read the pattern as UTF-8
// and mangle bytes above 0x7f.
func asciiLower(b []byte) string {
	out := make([]byte, len(b))
	for i, c := range b {
		out[i] = lower(c)
	}
	return string(out)
}
