package datapath

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
)

// Verdict is what the datapath did with a frame: a TCX verdict, as the
// program returns it (enum tcx_verdict; TCX_NEXT, -1, reads as 0xffffffff).
type Verdict uint32

const (
	Next = Verdict(dpTcxVerdictTCX_NEXT) // passed on
	Pass = Verdict(dpTcxVerdictTCX_PASS)
	Drop = Verdict(dpTcxVerdictTCX_DROP)
)

func (v Verdict) String() string {
	switch v {
	case Next:
		return "pass"
	case Pass:
		return "pass(final)"
	case Drop:
		return "drop"
	}
	return fmt.Sprintf("verdict(%d)", int32(v))
}

// skbContext is the head of struct __sk_buff up to ifindex (offset 40):
// BPF_PROG_TEST_RUN accepts a prefix and takes skb->dev from ifindex.
func skbContext(ifindex int) []byte {
	ctx := make([]byte, 44)
	binary.NativeEndian.PutUint32(ctx[40:], uint32(ifindex))
	return ctx
}

func (d *Datapath) program(h Hook) *ebpf.Program {
	if h == Egress {
		return d.objs.ToGuest
	}
	return d.objs.FromGuest
}

// Run passes an Ethernet frame through the program of hook as if it crossed
// vNIC ifindex (which must exist in the caller's network namespace), with
// BPF_PROG_TEST_RUN: nothing is sent anywhere, but connection state,
// counters and events change exactly as for a real packet.
func (d *Datapath) Run(h Hook, ifindex int, frame []byte) (Verdict, error) {
	ret, err := d.program(h).Run(&ebpf.RunOptions{Data: frame, Context: skbContext(ifindex)})
	if err != nil {
		return 0, fmt.Errorf("test run: %w", err)
	}
	return Verdict(ret), nil
}

// BenchmarkIfindex is the vNIC index Benchmark's runs appear on: without a
// context, BPF_PROG_TEST_RUN gives the packet the loopback device.
const BenchmarkIfindex = 1

// Benchmark runs a frame repeat times in the kernel, as if it crossed vNIC
// BenchmarkIfindex, and returns the kernel's mean time per run.
func (d *Datapath) Benchmark(h Hook, frame []byte, repeat int) (time.Duration, error) {
	_, per, err := d.program(h).Benchmark(frame, repeat, nil)
	if err != nil {
		return 0, fmt.Errorf("benchmark: %w", err)
	}
	return per, nil
}
