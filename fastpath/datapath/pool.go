package datapath

import (
	"fmt"
	"sort"
)

// pool hands out contiguous ranges of a fixed-size array map (bitmap words,
// rules), first fit, merging freed neighbours.
type pool struct {
	size uint32
	free []span // sorted by start, never adjacent
}

type span struct{ start, n uint32 }

func newPool(size uint32) *pool { return &pool{size: size, free: []span{{0, size}}} }

// PoolFullError says a pool has no room for a request.
type PoolFullError struct {
	Pool       string
	Want, Free uint32
}

func (e *PoolFullError) Error() string {
	return fmt.Sprintf("%s pool full: need %d contiguous entries, %d free in all", e.Pool, e.Want, e.Free)
}

func (p *pool) alloc(name string, n uint32) (uint32, error) {
	if n == 0 {
		return 0, nil
	}
	for i, s := range p.free {
		if s.n >= n {
			p.free[i] = span{s.start + n, s.n - n}
			if p.free[i].n == 0 {
				p.free = append(p.free[:i], p.free[i+1:]...)
			}
			return s.start, nil
		}
	}
	return 0, &PoolFullError{Pool: name, Want: n, Free: p.available()}
}

// reserve marks [start, start+n) used, for ranges recorded before a restart.
func (p *pool) reserve(start, n uint32) error {
	if n == 0 {
		return nil
	}
	for i, s := range p.free {
		if start >= s.start && start+n <= s.start+s.n {
			var repl []span
			if start > s.start {
				repl = append(repl, span{s.start, start - s.start})
			}
			if end := s.start + s.n; start+n < end {
				repl = append(repl, span{start + n, end - start - n})
			}
			p.free = append(p.free[:i], append(repl, p.free[i+1:]...)...)
			return nil
		}
	}
	return fmt.Errorf("range %d+%d is not free", start, n)
}

func (p *pool) release(start, n uint32) {
	if n == 0 {
		return
	}
	p.free = append(p.free, span{start, n})
	sort.Slice(p.free, func(i, j int) bool { return p.free[i].start < p.free[j].start })
	merged := p.free[:1]
	for _, s := range p.free[1:] {
		last := &merged[len(merged)-1]
		if last.start+last.n == s.start {
			last.n += s.n
		} else {
			merged = append(merged, s)
		}
	}
	p.free = merged
}

func (p *pool) available() uint32 {
	var n uint32
	for _, s := range p.free {
		n += s.n
	}
	return n
}
