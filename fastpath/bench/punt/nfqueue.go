package punt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/palisade/palisade/fastpath/bench"
	"github.com/palisade/palisade/hypervisor/lab"
)

// VerdictLoopArg, as a program's first argument followed by a queue number,
// makes MaybeVerdictLoop run the NFQUEUE verdict loop instead of the
// program: the benchmark runs it as a process of its own in the host
// namespace, as fastpathd and slowpathd are.
const VerdictLoopArg = "__punt-bench-nfqueue-verdict-loop"

// loopReady is what the verdict loop prints once it is bound to its queue.
const loopReady = "nfqueue: bound to queue"

// MaybeVerdictLoop runs the verdict loop and exits if the program was
// started with VerdictLoopArg; otherwise it returns at once. Call it first
// in main (and TestMain).
func MaybeVerdictLoop() {
	if len(os.Args) < 3 || os.Args[1] != VerdictLoopArg {
		return
	}
	q, err := strconv.ParseUint(os.Args[2], 10, 16)
	if err == nil {
		err = verdictLoop(uint16(q))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nfqueue:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// verdictLoop accepts every packet of queue q until SIGTERM or SIGINT. It
// is the minimal efficient loop: one verdict per packet as soon as it is
// read (no batch verdicts), the whole packet copied to user space (as an
// inspector needs it, and as Palisade ships it), GSO packets kept whole, no
// fail-open and no bypass: a packet the loop does not answer is never
// delivered, and one that finds the queue full is dropped by the kernel.
func verdictLoop(q uint16) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	nf, err := nfqueue.Open(&nfqueue.Config{
		NfQueue:      q,
		MaxPacketLen: 0xffff,
		MaxQueueLen:  1024, // the kernel's default
		Copymode:     nfqueue.NfQnlCopyPacket,
		AfFamily:     unix.AF_INET,
		Flags:        nfqueue.NfQaCfgFlagGSO,
		WriteTimeout: time.Second,
	})
	if err != nil {
		return fmt.Errorf("open queue %d: %w", q, err)
	}
	defer nf.Close()
	// Overflow is counted by the kernel (user_dropped); the socket must not
	// report it as an error on every read.
	if err := nf.SetOption(netlink.NoENOBUFS, true); err != nil {
		return fmt.Errorf("NETLINK_NO_ENOBUFS: %w", err)
	}
	if rc, err := nf.Con.SyscallConn(); err == nil {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		}); err != nil || serr != nil {
			return fmt.Errorf("receive buffer: %w", errors.Join(err, serr))
		}
	}
	var verdicts, verdictErrors, readErrors atomic.Uint64
	hook := func(a nfqueue.Attribute) int {
		if a.PacketID == nil {
			return 0
		}
		if err := nf.SetVerdict(*a.PacketID, nfqueue.NfAccept); err != nil {
			verdictErrors.Add(1)
			return 0
		}
		verdicts.Add(1)
		return 0
	}
	onErr := func(err error) int {
		if ctx.Err() != nil {
			return 1
		}
		readErrors.Add(1)
		return 0
	}
	if err := nf.RegisterWithErrorFunc(ctx, hook, onErr); err != nil {
		return fmt.Errorf("bind queue %d: %w", q, err)
	}
	fmt.Printf("%s %d\n", loopReady, q)
	<-ctx.Done()
	fmt.Printf("nfqueue: %d verdicts, %d verdict errors, %d read errors\n", verdicts.Load(), verdictErrors.Load(), readErrors.Load())
	return nil
}

// nfqRules are the host namespace's rules: both directions of the guest's
// IPv4 traffic, as the host bridges it, go to the queue.
func nfqRules() [][]string {
	g := lab.GuestAddr4(guestNum).Addr().String() + "/32"
	q := strconv.Itoa(NFQueueNum)
	return [][]string{
		{"-d", g, "-j", "NFQUEUE", "--queue-num", q},
		{"-s", g, "-j", "NFQUEUE", "--queue-num", q},
	}
}

func (e *Env) installNFQueue(ctx context.Context) error {
	// removeNFQueue flushes the ruleset with nft: iptables must keep its
	// rules in nf_tables.
	if _, err := bench.IPTablesVersion(e.Site.Host); err != nil {
		return err
	}
	if err := e.Site.Host.Sysctl(bridgeNFCall, "1"); err != nil {
		return err
	}
	cmd := append(append([]string(nil), e.opts.VerdictLoop[1:]...), strconv.Itoa(NFQueueNum))
	p, err := e.lab.Start(e.Site.Host, "nfqueue-loop", e.logWriter("nfqueue"), e.opts.VerdictLoop[0], cmd...)
	if err != nil {
		return err
	}
	e.loop = p
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.WaitOutput(c, loopReady); err != nil {
		return err
	}
	for _, r := range nfqRules() {
		if _, err := e.hostCmd("iptables", append([]string{"-w", "-A", "FORWARD"}, r...)...); err != nil {
			return err
		}
	}
	return nil
}

// removeNFQueue empties the host namespace's ruleset (the lab's own), stops
// the verdict loop and turns br_netfilter off again.
func (e *Env) removeNFQueue() error {
	var errs []error
	if _, err := e.hostCmd("nft", "flush", "ruleset"); err != nil {
		errs = append(errs, err)
	} else if out, err := e.hostCmd("nft", "list", "ruleset"); err != nil || strings.TrimSpace(out) != "" {
		errs = append(errs, fmt.Errorf("host namespace ruleset not empty after flush: %q %v", out, err))
	}
	if e.loop != nil {
		errs = append(errs, e.loop.Stop())
		e.loop = nil
	}
	errs = append(errs, e.Site.Host.Sysctl(bridgeNFCall, "0"))
	return errors.Join(errs...)
}

// QueueStats are the kernel's counters of one NFQUEUE queue
// (/proc/net/netfilter/nfnetlink_queue).
type QueueStats struct {
	Waiting     uint64 // packets in the queue now
	QueueFull   uint64 // dropped: the queue was at its maximum length
	UserDropped uint64 // dropped: the netlink socket's buffer was full
	Queued      uint64 // packets ever queued (the last packet id)
}

// QueueStats reads the verdict loop's queue's counters in the host
// namespace (zero if no loop is bound).
func (e *Env) QueueStats() (QueueStats, error) {
	var qs QueueStats
	err := e.Site.Host.Do(func() error {
		f, err := os.Open("/proc/thread-self/net/netfilter/nfnetlink_queue")
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var v [9]uint64
			fs := strings.Fields(sc.Text())
			if len(fs) < 8 {
				continue
			}
			for i := 0; i < 8; i++ {
				v[i], _ = strconv.ParseUint(fs[i], 10, 64)
			}
			if v[0] == NFQueueNum {
				qs = QueueStats{Waiting: v[2], QueueFull: v[5], UserDropped: v[6], Queued: v[7]}
			}
		}
		return sc.Err()
	})
	return qs, err
}
