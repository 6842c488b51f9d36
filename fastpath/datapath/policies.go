package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/palisade/palisade/fastpath/policy"
)

// InstalledPolicy records where a compiled policy lives in the kernel, so it
// can be removed (and, after a restart, its space reserved again).
type InstalledPolicy struct {
	ID        uint32 `json:"id"`
	RuleBase  uint32 `json:"rule_base"`
	RuleCount uint32 `json:"rule_count"`
	WordBase  uint32 `json:"word_base"`
	WordCount uint32 `json:"word_count"`
	Entries   int    `json:"entries"`
}

func (d *Datapath) dimMap(dim policy.Dim) *ebpf.Map {
	switch dim {
	case policy.DimSrc4:
		return d.objs.DimSrc4
	case policy.DimDst4:
		return d.objs.DimDst4
	case policy.DimSrc6:
		return d.objs.DimSrc6
	case policy.DimDst6:
		return d.objs.DimDst6
	case policy.DimSport:
		return d.objs.DimSport
	}
	return d.objs.DimDport
}

// dimKey lays out an LPM key: prefix length in bits (covering the policy id
// and the entry's prefix), the policy id, then the field in network order.
func dimKey(id uint32, e *policy.Entry) []byte {
	k := make([]byte, 8, 8+len(e.Key))
	binary.NativeEndian.PutUint32(k[0:], uint32(32+e.Bits))
	binary.NativeEndian.PutUint32(k[4:], id)
	return append(k, e.Key...)
}

// InstallPolicy writes a compiled policy under a fresh id. Packets use it
// only once a vNIC's configuration names the id.
func (d *Datapath) InstallPolicy(id uint32, c *policy.Compiled) (*InstalledPolicy, error) {
	// Identical bitmaps (common: every port a rule set does not name has
	// the same rules) are stored once.
	bases := map[string]uint32{}
	var words []uint64
	for dim := range c.Dims {
		for i := range c.Dims[dim] {
			e := &c.Dims[dim][i]
			for _, b := range []*policy.Bitmap{&e.Specific, e.Any} {
				if _, ok := bases[b.Key()]; !ok {
					bases[b.Key()] = uint32(len(words))
					words = append(words, b.Words...)
				}
			}
		}
	}
	d.mu.Lock()
	wbase, err := d.words.alloc("bitmap word", uint32(len(words)))
	if err != nil {
		d.mu.Unlock()
		return nil, err
	}
	rbase, err := d.rules.alloc("rule", uint32(len(c.Rules)))
	if err != nil {
		d.words.release(wbase, uint32(len(words)))
		d.mu.Unlock()
		return nil, err
	}
	d.mu.Unlock()
	ip := &InstalledPolicy{ID: id, RuleBase: rbase, RuleCount: uint32(len(c.Rules)), WordBase: wbase,
		WordCount: uint32(len(words)), Entries: c.EntryCount()}
	if err := d.writePolicy(ip, c, words, bases); err != nil {
		return nil, errors.Join(err, d.RemovePolicy(ip, c))
	}
	return ip, nil
}

func (d *Datapath) writePolicy(ip *InstalledPolicy, c *policy.Compiled, words []uint64, bases map[string]uint32) error {
	if len(words) > 0 {
		keys := make([]uint32, len(words))
		for i := range keys {
			keys[i] = ip.WordBase + uint32(i)
		}
		if _, err := d.objs.Words.BatchUpdate(keys, words, nil); err != nil {
			return fmt.Errorf("policy %d: bitmap words: %w", ip.ID, err)
		}
	}
	if n := len(c.Rules); n > 0 {
		keys := make([]uint32, n)
		infos := make([]dpRuleInfo, n)
		zero := make([]uint64, ebpf.MustPossibleCPU()*n)
		for i, r := range c.Rules {
			keys[i] = ip.RuleBase + uint32(i)
			infos[i] = dpRuleInfo{Id: r.ID, Action: uint8(actionCodes[r.Action])}
		}
		if _, err := d.objs.Rules.BatchUpdate(keys, infos, nil); err != nil {
			return fmt.Errorf("policy %d: rules: %w", ip.ID, err)
		}
		if _, err := d.objs.RuleHits.BatchUpdate(keys, zero, nil); err != nil {
			return fmt.Errorf("policy %d: rule counters: %w", ip.ID, err)
		}
	}
	for dim := range c.Dims {
		m := d.dimMap(policy.Dim(dim))
		for i := range c.Dims[dim] {
			e := &c.Dims[dim][i]
			v := dpDimVal{Summary: e.Specific.Summary, Base: ip.WordBase + bases[e.Specific.Key()],
				AnySummary: e.Any.Summary, AnyBase: ip.WordBase + bases[e.Any.Key()]}
			if err := m.Put(dimKey(ip.ID, e), v); err != nil {
				return fmt.Errorf("policy %d: %s entry %x/%d: %w", ip.ID, policy.Dim(dim), e.Key, e.Bits, err)
			}
		}
	}
	return nil
}

// RemovePolicy deletes a policy's entries and frees its space. The caller
// makes sure no vNIC uses it and calls Barrier first, so no packet still
// reads it.
func (d *Datapath) RemovePolicy(ip *InstalledPolicy, c *policy.Compiled) error {
	var errs []error
	for dim := range c.Dims {
		m := d.dimMap(policy.Dim(dim))
		for i := range c.Dims[dim] {
			if err := m.Delete(dimKey(ip.ID, &c.Dims[dim][i])); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, fmt.Errorf("policy %d: %s: %w", ip.ID, policy.Dim(dim), err))
			}
		}
	}
	d.mu.Lock()
	d.words.release(ip.WordBase, ip.WordCount)
	d.rules.release(ip.RuleBase, ip.RuleCount)
	d.mu.Unlock()
	return errors.Join(errs...)
}

// ReservePolicy marks an installed policy's space used after a restart.
func (d *Datapath) ReservePolicy(ip *InstalledPolicy) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.words.reserve(ip.WordBase, ip.WordCount); err != nil {
		return fmt.Errorf("policy %d words: %w", ip.ID, err)
	}
	if err := d.rules.reserve(ip.RuleBase, ip.RuleCount); err != nil {
		d.words.release(ip.WordBase, ip.WordCount)
		return fmt.Errorf("policy %d rules: %w", ip.ID, err)
	}
	return nil
}

// RuleHits returns the hit count of each rule of an installed policy.
func (d *Datapath) RuleHits(ip *InstalledPolicy) ([]uint64, error) {
	out := make([]uint64, ip.RuleCount)
	var per []uint64
	for i := range out {
		if err := d.objs.RuleHits.Lookup(ip.RuleBase+uint32(i), &per); err != nil {
			return nil, fmt.Errorf("rule counter %d: %w", i, err)
		}
		for _, v := range per {
			out[i] += v
		}
	}
	return out, nil
}
