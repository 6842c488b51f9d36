package bench

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/fastpath/policy"
	"github.com/palisade/palisade/hypervisor/lab"
)

// KernelCase is one row of the in-kernel table.
type KernelCase struct {
	Name   string
	Rules  int
	Runs   []time.Duration // one per repetition: the kernel's mean per packet
	Median time.Duration
}

// KernelBench measures the datapath's to-guest program per packet with
// BPF_PROG_TEST_RUN, the packets appearing on datapath.BenchmarkIfindex (the
// loopback of NS, the namespace the runs are made from).
type KernelBench struct {
	NS     *lab.Namespace
	PinDir string // on a private bpffs
	Repeat int    // runs per measurement
	Reps   int    // measurements per case (the median is reported)
	CPU    int    // CPU to run on, negative for any
	Seed   uint64
	// WordPool sizes the datapath's bitmap-word pool (0: the default);
	// it must hold two policies of the largest count (see WordPool).
	WordPool uint32
	// Verified is filled by Run: the verifier's instruction count per
	// datapath program.
	Verified map[string]uint32

	d      *datapath.Datapath
	slot   uint32
	nextID uint32
	cur    *installed
}

type installed struct {
	ip *datapath.InstalledPolicy
	c  *policy.Compiled
}

var (
	remote = Endpoint{MAC: macGen, Addr: netip.MustParseAddr("203.0.113.1")}
	guest  = Endpoint{MAC: macGuest, Addr: GuestAddr, Port: GuestPort}
	// KernelTarget is what the last rule of table 1 matches: TCP from the
	// generator's network to the guest's port.
	KernelTarget = Target{Proto: "tcp", Src: GenNet, Port: GuestPort}
)

// Run measures, for each rule count: a new flow classified against the
// rules (a TCP SYN that only the last rule matches, a deny, so no state is
// ever created and every run is classified), and for the smallest and
// largest count an established flow's data segment.
func (k *KernelBench) Run(ctx context.Context, counts []int) (rows []KernelCase, err error) {
	if len(counts) == 0 {
		return nil, nil
	}
	k.d, err = datapath.Open(datapath.Config{PinDir: k.PinDir, WordPool: k.WordPool})
	if err != nil {
		return nil, err
	}
	// Uninstall deletes the punt device in the namespace it runs in: NS's,
	// never the root namespace's (which may be a real fastpathd's).
	defer func() { err = errors.Join(err, k.NS.Do(k.d.Uninstall)) }()
	if k.Verified, err = k.d.VerifiedInstructions(); err != nil {
		return nil, err
	}
	k.nextID = 1
	if err := k.d.CreateTables(k.slot, policy.DefaultMaxTCP, policy.DefaultMaxUDP); err != nil {
		return nil, err
	}
	if err := k.d.ResetCounters(k.slot); err != nil {
		return nil, err
	}
	row, err := k.unprotected(ctx)
	if err != nil {
		return nil, err
	}
	rows = append(rows, row)
	sorted := append([]int(nil), counts...)
	sort.Ints(sorted)
	for i, n := range []int{sorted[0], sorted[len(sorted)-1]} {
		if i == 1 && n == sorted[0] {
			break
		}
		row, err := k.established(ctx, n, uint16(41000+i))
		if err != nil {
			return rows, err
		}
		rows = append(rows, row)
	}
	for _, n := range sorted {
		row, err := k.classified(ctx, n)
		if err != nil {
			return rows, err
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// use installs rules as the policy of the benchmark vNIC and retires the
// previous one.
func (k *KernelBench) use(rules []Rule, def policy.Action) error {
	p, err := Policy(rules, def)
	if err != nil {
		return err
	}
	c, err := policy.Compile(p)
	if err != nil {
		return err
	}
	ip, err := k.d.InstallPolicy(k.nextID, c)
	if err != nil {
		return err
	}
	k.nextID++
	if err := k.d.SetVNIC(datapath.BenchmarkIfindex, datapath.GuestConfig{Slot: k.slot, Policy: ip, Rules: p}); err != nil {
		return err
	}
	if old := k.cur; old != nil {
		if err := k.d.Barrier(); err != nil {
			return err
		}
		if err := k.d.RemovePolicy(old.ip, old.c); err != nil {
			return err
		}
	}
	k.cur = &installed{ip: ip, c: c}
	return nil
}

// run passes one frame through a program in NS, as Benchmark's runs do.
func (k *KernelBench) run(h datapath.Hook, frame []byte) (v datapath.Verdict, err error) {
	err = k.NS.Do(func() error {
		v, err = k.d.Run(h, datapath.BenchmarkIfindex, frame)
		return err
	})
	return v, err
}

func (k *KernelBench) measure(ctx context.Context, name string, rules int, frame []byte) (KernelCase, error) {
	row := KernelCase{Name: name, Rules: rules}
	for i := 0; i < k.Reps && ctx.Err() == nil; i++ {
		var per time.Duration
		err := k.NS.Do(func() error {
			return onCPU(k.CPU, func() (err error) {
				per, err = k.d.Benchmark(datapath.Egress, frame, k.Repeat)
				return err
			})
		})
		if err != nil {
			return row, err
		}
		row.Runs = append(row.Runs, per)
	}
	if err := ctx.Err(); err != nil {
		return row, err
	}
	row.Median = MedianDuration(row.Runs)
	return row, nil
}

// unprotected times the program on a vNIC it does not protect: one
// configuration lookup, then the packet passes. The floor of every case.
func (k *KernelBench) unprotected(ctx context.Context) (KernelCase, error) {
	syn, err := k.syn(43000, datapath.Next)
	if err != nil {
		return KernelCase{}, fmt.Errorf("unprotected vNIC: %w", err)
	}
	return k.measure(ctx, "vNIC not protected (configuration lookup, pass)", 0, syn)
}

// syn builds a SYN to the guest from the remote's port and checks that the
// to-guest program gives it the verdict want.
func (k *KernelBench) syn(port uint16, want datapath.Verdict) ([]byte, error) {
	cl := remote
	cl.Port = port
	syn, err := TCPFrame(cl, guest, TCPFlags{SYN: true}, 1, 0, 0)
	if err != nil {
		return nil, err
	}
	if v, err := k.run(datapath.Egress, syn); err != nil || v != want {
		return nil, fmt.Errorf("SYN verdict %v (%v), want %v", v, err, want)
	}
	return syn, nil
}

func (k *KernelBench) established(ctx context.Context, n int, port uint16) (KernelCase, error) {
	if err := k.use(Rules(n, KernelTarget, true, k.Seed), policy.Deny); err != nil {
		return KernelCase{}, err
	}
	cl := remote
	cl.Port = port
	steps := []struct {
		h    datapath.Hook
		from Endpoint
		to   Endpoint
		f    TCPFlags
	}{
		{datapath.Egress, cl, guest, TCPFlags{SYN: true}},
		{datapath.Ingress, guest, cl, TCPFlags{SYN: true, ACK: true}},
		{datapath.Egress, cl, guest, TCPFlags{ACK: true}},
	}
	for _, s := range steps {
		frame, err := TCPFrame(s.from, s.to, s.f, 1, 1, 0)
		if err != nil {
			return KernelCase{}, err
		}
		v, err := k.run(s.h, frame)
		if err != nil {
			return KernelCase{}, err
		}
		if v == datapath.Drop {
			return KernelCase{}, fmt.Errorf("handshake %+v of the established case dropped", s.f)
		}
	}
	data, err := TCPFrame(cl, guest, TCPFlags{ACK: true, PSH: true}, 2, 2, 64)
	if err != nil {
		return KernelCase{}, err
	}
	row, err := k.measure(ctx, "established flow hit (TCP data segment to the guest)", n, data)
	if err != nil {
		return row, err
	}
	c, ok, err := k.conn(port)
	if err != nil {
		return row, err
	}
	if !ok || c.State != "ESTABLISHED" || c.Packets[1] < uint64(k.Repeat) {
		return row, fmt.Errorf("established case: connection %+v (found %v) is not an established flow hit %d times", c, ok, k.Repeat)
	}
	return row, nil
}

func (k *KernelBench) conn(port uint16) (datapath.Conn, bool, error) {
	var found datapath.Conn
	ok := false
	err := k.d.Conns(k.slot, func(c datapath.Conn) bool {
		if c.RemotePort == port {
			found, ok = c, true
			return false
		}
		return true
	})
	return found, ok, err
}

func (k *KernelBench) classified(ctx context.Context, n int) (KernelCase, error) {
	// Every rule denies (one action and priority: evaluation order is the
	// order written) and the default allows, so a frame that missed the
	// last rule would pass and create state: the checks below catch it.
	if err := k.use(Rules(n, KernelTarget, false, k.Seed), policy.Allow); err != nil {
		return KernelCase{}, err
	}
	const port = 42000
	syn, err := k.syn(port, datapath.Drop)
	if err != nil {
		return KernelCase{}, fmt.Errorf("new-flow case with %d rules (the last rule denies): %w", n, err)
	}
	row, err := k.measure(ctx, "new flow classified (TCP SYN, last rule matches)", n, syn)
	if err != nil {
		return row, err
	}
	hits, err := k.d.RuleHits(k.cur.ip)
	if err != nil {
		return row, err
	}
	for i, h := range hits {
		if (i == len(hits)-1) != (h > 0) {
			return row, fmt.Errorf("new-flow case with %d rules: rule %d of %d hit %d times; only the last may match", n, i+1, len(hits), h)
		}
	}
	if _, ok, err := k.conn(port); err != nil || ok {
		return row, fmt.Errorf("new-flow case with %d rules created state (%v)", n, err)
	}
	return row, nil
}

// MedianDuration is the median of ds.
func MedianDuration(ds []time.Duration) time.Duration {
	v := make([]float64, len(ds))
	for i, d := range ds {
		v[i] = float64(d)
	}
	return time.Duration(Median(v))
}

// PolicySize is what a generated policy of n rules compiles to.
type PolicySize struct {
	Rules, Entries, Words int // trie entries, bitmap words (8 bytes each)
}

// PolicySizes compiles the generated policies of each count.
func PolicySizes(counts []int, t Target, seed uint64) ([]PolicySize, error) {
	var out []PolicySize
	for _, n := range counts {
		p, err := Policy(Rules(n, t, true, seed), policy.Deny)
		if err != nil {
			return nil, err
		}
		c, err := policy.Compile(p)
		if err != nil {
			return nil, err
		}
		out = append(out, PolicySize{Rules: n, Entries: c.EntryCount(), Words: c.WordCount()})
	}
	return out, nil
}

// DefaultWordPool is the datapath's default bitmap-word pool.
const DefaultWordPool = 1 << 20

// WordPool is a bitmap-word pool that holds two of the largest policies at
// once (one being replaced by the next): the default, or the next power of
// two above.
func WordPool(sizes []PolicySize) uint32 {
	need := 0
	for _, s := range sizes {
		need = max(need, 2*s.Words)
	}
	pool := uint32(DefaultWordPool)
	for int(pool) < need {
		pool *= 2
	}
	return pool
}
