package heap

import (
	"errors"
	"fmt"
	"math/bits"

	"github.com/cilium/ebpf"

	"github.com/palisade/palisade/fastpath/control/api"
	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/fastpath/policy"
)

// Costs are what the kernel charges for Palisade's structures, measured on
// this kernel by creating probe maps and reading the memory the kernel
// reports for them (fdinfo "memlock", the map's own accounting). The fields
// are the control API's HeapCosts (the report carries them: api.HeapCosts(c));
// the methods turn them into a guest's reservation.
type Costs api.HeapCosts

// Defaults of the userspace share of an inspected guest.
const (
	DefaultPuntQueue       = 256
	DefaultPuntPacketBytes = 4096
)

// pow2 is the kernel's roundup_pow_of_two.
func pow2(n uint64) uint64 {
	if n <= 1 {
		return 1
	}
	return 1 << (64 - bits.LeadingZeros64(n-1))
}

// Table is the cost of one connection table holding n connections.
func (c Costs) Table(n uint32) uint64 {
	capacity := uint64(datapath.TableCapacity(n))
	return c.TableFixed + capacity*c.EntryBytes + pow2(capacity)*c.BucketBytes
}

// PerConnection is what one more tracked connection costs at table size n,
// buckets amortized.
func (c Costs) PerConnection(n uint32) float64 {
	capacity := uint64(datapath.TableCapacity(n))
	return float64(capacity*c.EntryBytes+pow2(capacity)*c.BucketBytes) / float64(n)
}

func memlock(m *ebpf.Map) (uint64, error) {
	info, err := m.Info()
	if err != nil {
		return 0, err
	}
	v, ok := info.Memlock()
	if !ok {
		return 0, errors.New("the kernel does not report map memory (fdinfo memlock)")
	}
	return v, nil
}

func probeTable(n uint32) (uint64, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "heap_probe", Type: ebpf.LRUHash,
		KeySize: datapath.ConnKeySize, ValueSize: datapath.ConnValueSize, MaxEntries: n})
	if err != nil {
		return 0, fmt.Errorf("probe table of %d: %w", n, err)
	}
	defer m.Close()
	return memlock(m)
}

// ModelError says the kernel's accounting does not follow the cost model:
// budgets computed from it would be wrong, so fastpathd refuses to guess.
type ModelError struct {
	Capacity         uint32
	Predicted, Found uint64
}

func (e *ModelError) Error() string {
	return fmt.Sprintf("kernel map accounting does not fit the cost model: a table of %d entries costs %d bytes, model says %d",
		e.Capacity, e.Found, e.Predicted)
}

// Measure probes the kernel. It needs the privileges to create BPF maps.
func Measure() (Costs, error) {
	c := Costs{PuntQueue: DefaultPuntQueue, PuntPacketBytes: DefaultPuntPacketBytes}
	// Three sizes pin down the three terms: 1024 and 2048 share no bucket
	// count with 1025; the fourth checks the model.
	a, err := probeTable(1024)
	if err != nil {
		return c, err
	}
	b, err := probeTable(1025)
	if err != nil {
		return c, err
	}
	d, err := probeTable(2048)
	if err != nil {
		return c, err
	}
	if d < b || b < a {
		return c, fmt.Errorf("probe tables cost %d, %d, %d bytes: not increasing", a, b, d)
	}
	c.EntryBytes = (d - b) / 1023
	c.BucketBytes = (b - a - c.EntryBytes) / 1024
	c.TableFixed = a - 1024*c.EntryBytes - 1024*c.BucketBytes
	const check = 3000
	found, err := probeTable(check)
	if err != nil {
		return c, err
	}
	if want := c.TableFixed + check*c.EntryBytes + pow2(check)*c.BucketBytes; want != found {
		return c, &ModelError{Capacity: check, Predicted: want, Found: found}
	}
	if c.VNICEntryBytes, err = probeEntries(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4,
		ValueSize: uint32(datapath.VNICValueSize), MaxEntries: 1024, Flags: 1 /* BPF_F_NO_PREALLOC */}, 0); err != nil {
		return c, fmt.Errorf("probe vNIC map: %w", err)
	}
	for dim := policy.Dim(0); dim < policy.NumDims; dim++ {
		per, err := probeTrie(4 + policy.KeyBytes[dim]) // policy id, then the field
		if err != nil {
			return c, fmt.Errorf("probe %s trie: %w", dim, err)
		}
		c.DimEntryBytes[dim] = per
	}
	return c, nil
}

// ForDatapath measures this kernel's costs and dp's own memory and opens a
// budget of max bytes, reserve of which is kept for migration state. The
// entries of guests already protected (a restart) are not part of dp's own
// memory: their reservations count them once restored.
func ForDatapath(dp *datapath.Datapath, max, reserve uint64) (*Budget, Costs, error) {
	costs, err := Measure()
	if err != nil {
		return nil, costs, fmt.Errorf("measure the kernel's map costs: %w", err)
	}
	base, err := dp.BaseMemory()
	if err != nil {
		return nil, costs, fmt.Errorf("measure the datapath's memory: %w", err)
	}
	vnics, err := dp.VNICCount()
	if err != nil {
		return nil, costs, err
	}
	b, err := NewBudget(max, reserve, base-uint64(vnics)*costs.VNICEntryBytes)
	return b, costs, err
}

// probeTrie measures one LPM trie entry with the datapath's key layout
// (prefix length, then keyBytes of policy id and field) and value.
func probeTrie(keyBytes int) (uint64, error) {
	return probeEntries(&ebpf.MapSpec{Type: ebpf.LPMTrie, KeySize: uint32(4 + keyBytes),
		ValueSize: datapath.DimValueSize, MaxEntries: 1024, Flags: 1 /* BPF_F_NO_PREALLOC */}, uint8(8*keyBytes))
}

// probeEntries measures what one entry of a map allocated on demand costs:
// it fills 64 distinct keys (an LPM key's first byte is its prefix length,
// prefixlen, for tries) and divides the growth the kernel reports.
func probeEntries(spec *ebpf.MapSpec, prefixlen uint8) (uint64, error) {
	spec.Name = "heap_probe"
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return 0, err
	}
	defer m.Close()
	// An empty map of this kind may cost nothing, which the kernel reports
	// as 0 and reads as "not reported"; the table probes have shown that
	// it reports.
	empty, _ := memlock(m)
	const n = 64
	key := make([]byte, spec.KeySize)
	key[0] = prefixlen
	for i := 0; i < n; i++ {
		key[len(key)-1] = byte(i)
		if err := m.Put(key, make([]byte, spec.ValueSize)); err != nil {
			return 0, err
		}
	}
	full, err := memlock(m)
	if err != nil {
		return 0, err
	}
	if full <= empty || (full-empty)%n != 0 {
		return 0, fmt.Errorf("%d entries cost %d bytes: not a whole number each", n, full-empty)
	}
	return (full - empty) / n, nil
}

// ForPolicy is what a guest with policy p (compiled to c) will use.
func (c Costs) ForPolicy(guest string, p *policy.Policy, comp *policy.Compiled) api.Reservation {
	r := api.Reservation{Guest: guest, TCPTable: c.Table(p.MaxTCP), UDPTable: c.Table(p.MaxUDP), MaxTCP: p.MaxTCP, MaxUDP: p.MaxUDP}
	for dim, entries := range comp.Dims {
		r.Rules += uint64(len(entries)) * c.DimEntryBytes[dim]
		r.TrieEntries += len(entries)
	}
	if len(p.Inspection) > 0 {
		r.PuntBuffers = c.PuntQueue * c.PuntPacketBytes
	}
	r.VNICEntry = c.VNICEntryBytes
	r.KernelShare = r.TCPTable + r.UDPTable + r.Rules + r.VNICEntry
	r.Total = r.KernelShare + r.PuntBuffers
	return r
}

// DuringSwap is what a guest holds while its policy changes from old to
// next. The new rules are installed beside the old ones, which go only once
// no packet can still read them; when tablesRebuilt, new connection tables
// are built and filled beside the old ones too. The kernel holds both until
// the swap ends, so the budget admits the change at this size and returns
// to next afterwards.
func DuringSwap(old, next api.Reservation, tablesRebuilt bool) api.Reservation {
	r := next
	r.Rules += old.Rules
	r.TrieEntries += old.TrieEntries
	if tablesRebuilt {
		r.TCPTable += old.TCPTable
		r.UDPTable += old.UDPTable
	}
	// One queue per guest in fastpathd, bounded by the larger policy.
	r.PuntBuffers = max(old.PuntBuffers, next.PuntBuffers)
	r.KernelShare = r.TCPTable + r.UDPTable + r.Rules + r.VNICEntry
	r.Total = r.KernelShare + r.PuntBuffers
	return r
}
