package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Limits of the loaded datapath (enum limits in bpf/datapath.h).
const (
	MaxGuests = uint32(dpLimitsMAX_GUESTS)
	MaxRules  = uint32(dpLimitsMAX_RULES)
)

// MaxEventsPerSec is the highest event rate the datapath can meter: its
// token buckets refill one token every 1e9/rate nanoseconds.
const MaxEventsPerSec = 1_000_000_000

// Config sizes and places the datapath.
type Config struct {
	// PinDir is a directory on a bpffs where maps and links are pinned,
	// e.g. /sys/fs/bpf/palisade/<host>. Everything the datapath creates
	// lives under it.
	PinDir string
	// WordPool and RulePool size the shared bitmap-word and rule arrays
	// (defaults 1 Mi words = 8 MiB, 256 Ki rules).
	WordPool uint32
	RulePool uint32
	// EventsPerSec and EventBurst bound the events one guest sends through
	// the ring buffer per CPU (defaults 1000/s, burst 200). EventsPerSec is
	// at most MaxEventsPerSec.
	EventsPerSec uint32
	EventBurst   uint32
}

// spec is the datapath's collection sized by cfg (defaults filled in).
func (cfg *Config) spec() (*ebpf.CollectionSpec, error) {
	if cfg.WordPool == 0 {
		cfg.WordPool = 1 << 20
	}
	if cfg.RulePool == 0 {
		cfg.RulePool = 1 << 18
	}
	spec, err := loadDp()
	if err != nil {
		return nil, fmt.Errorf("datapath: load spec: %w", err)
	}
	spec.Maps["words"].MaxEntries = cfg.WordPool
	spec.Maps["rules"].MaxEntries = cfg.RulePool
	spec.Maps["rule_hits"].MaxEntries = cfg.RulePool
	return spec, nil
}

// Datapath is the loaded programs and maps.
type Datapath struct {
	cfg  Config
	objs dpObjects

	mu       sync.Mutex
	words    *pool
	rules    *pool
	settings dpSettings
}

// NotBPFFSError says the pin directory is not on a bpffs.
type NotBPFFSError struct{ Path string }

func (e *NotBPFFSError) Error() string {
	return fmt.Sprintf("%s is not on a BPF filesystem (mount one: mount -t bpf bpf /sys/fs/bpf)", e.Path)
}

// CheckBPFFS fails unless dir's nearest existing ancestor is on a bpffs.
func CheckBPFFS(dir string) error {
	for p := dir; ; p = filepath.Dir(p) {
		var st unix.Statfs_t
		err := unix.Statfs(p, &st)
		if err == nil {
			if st.Type != unix.BPF_FS_MAGIC {
				return &NotBPFFSError{Path: dir}
			}
			return nil
		}
		if !errors.Is(err, os.ErrNotExist) || p == "/" {
			return fmt.Errorf("statfs %s: %w", p, err)
		}
	}
}

// Open loads the datapath, reusing the maps pinned under cfg.PinDir by an
// earlier run (so connection state survives restarts) or pinning new ones.
func Open(cfg Config) (*Datapath, error) {
	if cfg.PinDir == "" {
		return nil, errors.New("datapath: no pin directory")
	}
	if cfg.EventsPerSec == 0 {
		cfg.EventsPerSec = 1000
	}
	if cfg.EventsPerSec > MaxEventsPerSec {
		return nil, fmt.Errorf("datapath: %d events per second per guest and CPU is more than the %d the datapath can meter",
			cfg.EventsPerSec, MaxEventsPerSec)
	}
	if cfg.EventBurst == 0 {
		cfg.EventBurst = 200
	}
	if err := CheckBPFFS(cfg.PinDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.PinDir, "links"), 0o700); err != nil {
		return nil, fmt.Errorf("datapath: %w", err)
	}
	// Kernels before 5.11 charge map memory to RLIMIT_MEMLOCK; newer ones
	// to the memory cgroup, where this is a no-op.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("datapath: %w", err)
	}
	spec, err := cfg.spec()
	if err != nil {
		return nil, err
	}
	d := &Datapath{cfg: cfg, words: newPool(cfg.WordPool), rules: newPool(cfg.RulePool)}
	err = spec.LoadAndAssign(&d.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: cfg.PinDir}})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("datapath: verifier rejected the program: %+v", ve)
		}
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			return nil, fmt.Errorf("datapath: maps pinned under %s come from an incompatible build or sizing (uninstall first): %w", cfg.PinDir, err)
		}
		return nil, fmt.Errorf("datapath: load: %w", err)
	}
	// Keep what an earlier run set (the punt device), take the new rates.
	_ = d.objs.SettingsMap.Lookup(uint32(0), &d.settings)
	d.settings.EventsPerSec, d.settings.EventsBurst = cfg.EventsPerSec, cfg.EventBurst
	if err := d.putSettings(); err != nil {
		d.objs.Close()
		return nil, err
	}
	return d, nil
}

// Close releases this process's handles. Pinned maps and links stay: the
// datapath keeps enforcing while fastpathd is stopped or restarting.
func (d *Datapath) Close() error { return d.objs.Close() }

// PinDir is where the datapath's objects are pinned.
func (d *Datapath) PinDir() string { return d.cfg.PinDir }

// Uninstall detaches every link and removes every pin under the pin
// directory, then closes the datapath. Afterwards nothing of it remains in
// the kernel once the last handle is gone.
func (d *Datapath) Uninstall() error {
	var errs []error
	links, err := d.PinnedLinks()
	if err != nil {
		errs = append(errs, err)
	}
	for _, l := range links {
		if err := d.unpinLink(l); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, d.RemovePuntDevice(nil), d.objs.Close())
	if err := os.RemoveAll(d.cfg.PinDir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", d.cfg.PinDir, err))
	}
	return errors.Join(errs...)
}

// Barrier returns once every datapath program that was running when it was
// called has finished. Updating a map-of-maps from user space waits for an
// RCU grace period (the kernel's maybe_wait_bpf_programs), which covers every
// non-sleepable program; rewriting the barrier's only slot with the inner
// map it already holds changes nothing else.
func (d *Datapath) Barrier() error {
	var inner *ebpf.Map
	if err := d.objs.RcuBarrier.Lookup(uint32(0), &inner); err != nil || inner == nil {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
		if err != nil {
			return fmt.Errorf("barrier map: %w", err)
		}
		inner = m
	}
	defer inner.Close()
	if err := d.objs.RcuBarrier.Put(uint32(0), inner); err != nil {
		return fmt.Errorf("barrier: %w", err)
	}
	return nil
}

// maps lists the datapath's own maps by name.
func (d *Datapath) maps() map[string]*ebpf.Map {
	out := map[string]*ebpf.Map{}
	v := reflect.ValueOf(&d.objs.dpMaps).Elem()
	for i := 0; i < v.NumField(); i++ {
		if m, ok := v.Field(i).Interface().(*ebpf.Map); ok && m != nil {
			out[v.Type().Field(i).Tag.Get("ebpf")] = m
		}
	}
	return out
}

// memlockOf is what the kernel charges for m. The kernel reports an empty
// trie or unpreallocated hash as 0, which cilium/ebpf cannot tell from "not
// reported"; heap.Measure refuses kernels that do not report at all, so 0
// is read as 0.
func memlockOf(m *ebpf.Map) (uint64, error) {
	info, err := m.Info()
	if err != nil {
		return 0, err
	}
	v, _ := info.Memlock()
	return v, nil
}

// dimMaps are the classification tries, whose memory grows with policies.
var dimMaps = map[string]bool{"dim_src4": true, "dim_dst4": true, "dim_src6": true, "dim_dst6": true, "dim_sport": true, "dim_dport": true}

// BaseMemory is what the kernel charges for the datapath's own maps,
// including the entries of the vNIC map but not the classification tries
// (whose entries belong to guests' policies).
func (d *Datapath) BaseMemory() (uint64, error) {
	var n uint64
	for name, m := range d.maps() {
		if dimMaps[name] {
			continue
		}
		v, err := memlockOf(m)
		if err != nil {
			return 0, fmt.Errorf("map %s: %w", name, err)
		}
		n += v
	}
	return n, nil
}

// VNICCount is the number of protected vNICs in the kernel.
func (d *Datapath) VNICCount() (int, error) {
	v, err := d.VNICs()
	return len(v), err
}

// KernelMemory is everything the kernel charges for the datapath: its own
// maps, the classification tries and every guest's connection tables.
func (d *Datapath) KernelMemory() (uint64, error) {
	var n uint64
	for name, m := range d.maps() {
		v, err := memlockOf(m)
		if err != nil {
			return 0, fmt.Errorf("map %s: %w", name, err)
		}
		n += v
	}
	for slot := uint32(0); slot < MaxGuests; slot++ {
		for _, outer := range []*ebpf.Map{d.objs.ConnTcp, d.objs.ConnOther} {
			var inner *ebpf.Map
			if err := outer.Lookup(slot, &inner); err != nil || inner == nil {
				continue
			}
			v, err := memlockOf(inner)
			inner.Close()
			if err != nil {
				return 0, fmt.Errorf("guest slot %d table: %w", slot, err)
			}
			n += v
		}
	}
	return n, nil
}

// MeasureBase loads the datapath unpinned, reports BaseMemory for cfg's
// sizes, and unloads it: what a host will need before any guest.
func MeasureBase(cfg Config) (uint64, error) {
	spec, err := cfg.spec()
	if err != nil {
		return 0, err
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	d := &Datapath{cfg: cfg}
	if err := spec.LoadAndAssign(&d.objs, nil); err != nil {
		return 0, fmt.Errorf("load unpinned datapath: %w", err)
	}
	defer d.objs.Close()
	return d.BaseMemory()
}

// VerifiedInstructions is, per program, how many instructions the verifier
// processed to accept it: the datapath's complexity as the kernel sees it,
// printed by bench:fastpath so that it never grows unnoticed.
func (d *Datapath) VerifiedInstructions() (map[string]uint32, error) {
	progs := map[string]*ebpf.Program{
		"from_guest": d.objs.FromGuest, "to_guest": d.objs.ToGuest,
		"punt_out": d.objs.PuntOut, "reinject": d.objs.Reinject, "punt_sink": d.objs.PuntSink,
	}
	out := make(map[string]uint32, len(progs))
	for name, p := range progs {
		info, err := p.Info()
		if err != nil {
			return nil, fmt.Errorf("program %s: info: %w", name, err)
		}
		n, ok := info.VerifiedInstructions()
		if !ok {
			return nil, fmt.Errorf("program %s: the kernel does not report verified instructions (needs 5.16)", name)
		}
		out[name] = n
	}
	return out, nil
}
