package heap

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/palisade/palisade/fastpath/control/api"
)

// Defaults, after the appliance Palisade is modelled on (seed 000): a 256 MB
// heap, 10 MB of which are kept for migration state.
const (
	DefaultMax     = 256 << 20
	DefaultReserve = 10 << 20
)

// ExhaustedError refuses a guest whose reservation does not fit.
type ExhaustedError struct {
	Guest string
	Need  uint64
	Free  uint64
	Max   uint64
}

func (e *ExhaustedError) Error() string {
	return fmt.Sprintf("out of memory, guest protection failed: guest %s needs %s, %s free of %s (raise it with: fastpathd heap set SIZE)",
		e.Guest, api.FormatSize(e.Need), api.FormatSize(e.Free), api.FormatSize(e.Max))
}

// BelowReservedError refuses to shrink the budget under what is reserved.
type BelowReservedError struct{ Max, Reserved uint64 }

func (e *BelowReservedError) Error() string {
	return fmt.Sprintf("cannot set the heap to %s: %s is reserved (base, migration reserve and guests); deactivate guests first",
		api.FormatSize(e.Max), api.FormatSize(e.Reserved))
}

// Budget is the host's memory budget and who holds what.
type Budget struct {
	mu       sync.Mutex
	max      uint64
	reserve  uint64 // migration state
	base     uint64 // the datapath's own maps
	guests   map[string]api.Reservation
	failures uint64
	last     *api.HeapFailure
}

// NewBudget starts a budget of max bytes, of which reserve is kept for
// migration state and base is the datapath's own (measured) memory.
func NewBudget(max, reserve, base uint64) (*Budget, error) {
	if reserve+base > max {
		return nil, fmt.Errorf("heap of %s cannot hold the datapath (%s) and the migration reserve (%s)",
			api.FormatSize(max), api.FormatSize(base), api.FormatSize(reserve))
	}
	return &Budget{max: max, reserve: reserve, base: base, guests: map[string]api.Reservation{}}, nil
}

func (b *Budget) freeLocked() uint64 {
	if r := b.reservedLocked(); r < b.max {
		return b.max - r
	}
	return 0
}

func (b *Budget) reservedLocked() uint64 {
	n := b.reserve + b.base
	for _, r := range b.guests {
		n += r.Total
	}
	return n
}

// Reserve admits r for its guest, replacing what the guest held before (a
// policy change), or refuses it with an *ExhaustedError and records the
// failure. A refused guest keeps what it had.
func (b *Budget) Reserve(r api.Reservation) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	held := b.guests[r.Guest].Total
	free := b.freeLocked() + held
	if r.Total > free {
		b.failures++
		b.last = &api.HeapFailure{Guest: r.Guest, Need: r.Total, Free: free, At: time.Now()}
		return &ExhaustedError{Guest: r.Guest, Need: r.Total, Free: free, Max: b.max}
	}
	b.guests[r.Guest] = r
	return nil
}

// Adopt records a reservation without admission: for guests a restarted
// fastpathd finds already protected. Free may go negative in effect; the
// report shows it and new guests are refused until it recovers.
func (b *Budget) Adopt(r api.Reservation) {
	b.mu.Lock()
	b.guests[r.Guest] = r
	b.mu.Unlock()
}

// Max is the budget's size.
func (b *Budget) Max() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.max
}

// Release returns a guest's reservation.
func (b *Budget) Release(guest string) {
	b.mu.Lock()
	delete(b.guests, guest)
	b.mu.Unlock()
}

// SetMax changes the budget at runtime; it refuses to go below what is
// reserved.
func (b *Budget) SetMax(max uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if r := b.reservedLocked(); max < r {
		return &BelowReservedError{Max: max, Reserved: r}
	}
	b.max = max
	return nil
}

// Snapshot reports the budget; kernelMeasured is filled by the caller.
func (b *Budget) Snapshot() api.HeapReport {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := api.HeapReport{Max: b.max, Base: b.base, Reserve: b.reserve, Reserved: b.reservedLocked(), Failures: b.failures,
		KernelReserved: b.base}
	r.Free = b.freeLocked()
	for _, g := range b.guests {
		r.Guests = append(r.Guests, g)
		r.KernelReserved += g.KernelShare
	}
	sort.Slice(r.Guests, func(i, j int) bool { return r.Guests[i].Guest < r.Guests[j].Guest })
	if b.last != nil {
		f := *b.last
		r.LastFailure = &f
	}
	return r
}
