package punt

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// clockTick is the unit of /proc's CPU times.
var clockTick = 100 // USER_HZ on every Linux port we run on

// procCPU is the CPU time (user + system) a process used so far; 0 for
// pid 0 or a process that is gone.
func procCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may contain spaces: fields count from
	// after its closing parenthesis.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	fs := strings.Fields(string(b[i+1:]))
	if len(fs) < 13 {
		return 0
	}
	ut, _ := strconv.ParseUint(fs[11], 10, 64)
	st, _ := strconv.ParseUint(fs[12], 10, 64)
	return ticks(ut + st)
}

func ticks(n uint64) time.Duration { return time.Duration(n) * time.Second / time.Duration(clockTick) }

// machineCPU is the machine's CPU time by kind, all CPUs summed
// (/proc/stat's first line).
type machineCPU struct {
	User, System, SoftIRQ, Idle, Total time.Duration
}

func readMachineCPU() machineCPU {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return machineCPU{}
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	fs := strings.Fields(string(line))
	if len(fs) < 8 || fs[0] != "cpu" {
		return machineCPU{}
	}
	var v [10]uint64
	var total uint64
	for i := 1; i < len(fs) && i <= 8; i++ { // user nice system idle iowait irq softirq steal
		v[i-1], _ = strconv.ParseUint(fs[i], 10, 64)
		total += v[i-1]
	}
	return machineCPU{User: ticks(v[0] + v[1]), System: ticks(v[2] + v[5]), SoftIRQ: ticks(v[6]), Idle: ticks(v[3] + v[4]), Total: ticks(total)}
}

func (a machineCPU) sub(b machineCPU) machineCPU {
	return machineCPU{User: a.User - b.User, System: a.System - b.System, SoftIRQ: a.SoftIRQ - b.SoftIRQ, Idle: a.Idle - b.Idle, Total: a.Total - b.Total}
}

// CPU is where CPU time went during a measurement, each as a share of one
// CPU (1.0 = one CPU busy the whole time).
type CPU struct {
	Bench     float64 // this process: the peer's senders (and the guest's echo)
	Fastpathd float64
	Slowpathd float64
	Loop      float64 // the NFQUEUE verdict loop
	SoftIRQ   float64 // machine-wide
	Idle      float64 // machine-wide
}

// cpuSnap is one reading of every counter a CPU share is computed from.
type cpuSnap struct {
	at                        time.Time
	self, fast, slow, loop    time.Duration
	machine                   machineCPU
	pidFast, pidSlow, pidLoop int
}

func takeCPU(p Procs) cpuSnap {
	return cpuSnap{at: time.Now(), self: procCPU(os.Getpid()), fast: procCPU(p.Fastpathd), slow: procCPU(p.Slowpathd),
		loop: procCPU(p.Loop), machine: readMachineCPU(), pidFast: p.Fastpathd, pidSlow: p.Slowpathd, pidLoop: p.Loop}
}

// cpuBetween is the CPU shares between two snapshots of the same processes.
func cpuBetween(a, b cpuSnap) CPU {
	wall := b.at.Sub(a.at).Seconds()
	if wall <= 0 {
		return CPU{}
	}
	share := func(d time.Duration) float64 { return d.Seconds() / wall }
	m := b.machine.sub(a.machine)
	c := CPU{Bench: share(b.self - a.self), SoftIRQ: share(m.SoftIRQ), Idle: share(m.Idle)}
	if a.pidFast == b.pidFast {
		c.Fastpathd = share(b.fast - a.fast)
	}
	if a.pidSlow == b.pidSlow {
		c.Slowpathd = share(b.slow - a.slow)
	}
	if a.pidLoop == b.pidLoop {
		c.Loop = share(b.loop - a.loop)
	}
	return c
}

func numCPU() int {
	var set unix.CPUSet
	if unix.SchedGetaffinity(0, &set) == nil {
		return set.Count()
	}
	return 0
}
