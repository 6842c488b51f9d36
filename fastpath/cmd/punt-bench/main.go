package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/palisade/palisade/fastpath/bench/punt"
	"github.com/palisade/palisade/hypervisor/lab"
)

// prefix names every namespace of a run; a run first removes what a killed
// one left.
const prefix = "palpb"

func main() {
	punt.MaybeVerdictLoop() // the NFQUEUE baseline's verdict loop runs as this program

	c := punt.Defaults()
	quick := flag.Bool("quick", false, "short run: one repetition, 0.5 s floods, 500 round trips, a 10 MiB transfer")
	flag.DurationVar(&c.Duration, "duration", c.Duration, "length of one throughput measurement")
	flag.IntVar(&c.Reps, "reps", c.Reps, "measurements per figure; the median is reported")
	flag.IntVar(&c.Senders, "senders", c.Senders, "UDP sender goroutines (one flow each)")
	flag.IntVar(&c.Payload, "payload", c.Payload, "UDP payload bytes of the flood")
	flag.IntVar(&c.RoundTrips, "round-trips", c.RoundTrips, "round trips per latency measurement")
	mb := flag.Int64("mb", c.TransferBytes>>20, "MiB of the long TCP transfer")
	flag.IntVar(&c.OffloadAfter, "offload-after", c.OffloadAfter, "slowpathd --offload-after of the offload part")
	verbose := flag.Bool("v", false, "print every measurement to stderr")
	logs := flag.Bool("logs", false, "copy the daemons' output to stderr")
	flag.Parse()
	c.TransferBytes = *mb << 20
	if *quick { // short runs, unless set explicitly
		q := punt.Quick()
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["duration"] {
			c.Duration = q.Duration
		}
		if !set["reps"] {
			c.Reps = q.Reps
		}
		if !set["round-trips"] {
			c.RoundTrips = q.RoundTrips
		}
		if !set["mb"] {
			c.TransferBytes = q.TransferBytes
		}
		c.Warmup, c.WarmTrips = q.Warmup, q.WarmTrips
	}
	if c.Reps < 1 || c.Senders < 1 || c.Payload < 8 || c.RoundTrips < 1 || c.TransferBytes < 1 || c.Duration <= 0 {
		fmt.Fprintln(os.Stderr, "punt-bench: -reps, -senders, -round-trips and -mb must be positive, -payload at least 8")
		os.Exit(2)
	}
	if *verbose {
		c.Verbose = os.Stderr
	}
	var daemonLog io.Writer
	if *logs {
		daemonLog = os.Stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err := run(ctx, c, daemonLog, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "punt-bench:", err)
		os.Exit(1)
	}
}

// run owns every resource: the lock, the namespaces, the bpffs, the built
// daemons. Each is released by a deferred call, also when ctx is cancelled
// by a signal.
func run(ctx context.Context, c punt.Config, daemonLog io.Writer, out io.Writer) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, eBPF, iptables inside them)")
	}
	lock, err := lockRun()
	if err != nil {
		return err
	}
	defer lock.Close()
	if removed, err := lab.Sweep(prefix + "-"); err != nil {
		return fmt.Errorf("removing a killed run's namespaces: %w", err)
	} else if len(removed) > 0 {
		fmt.Fprintf(os.Stderr, "removed namespaces a killed run left: %v\n", removed)
	}
	if err := unmountStale(lock); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "palisade-punt-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	root, err := lab.ModuleRoot()
	if err != nil {
		return err
	}
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	bins, err := lab.BuildBinaries(bctx, root, tmp, "")
	cancel()
	if err != nil {
		return err
	}
	bpffs, unmount, err := lab.MountBPFFS()
	if err != nil {
		return err
	}
	defer func() {
		err = errors.Join(err, unmount())
		if err == nil {
			err = lock.Truncate(0)
		}
	}()
	// A killed run's bpffs is found, through the lock file, by the next.
	if _, err := lock.WriteAt([]byte(bpffs), 0); err != nil {
		return err
	}
	l, err := lab.New(prefix)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, l.Close()) }()
	state := filepath.Join(tmp, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		return err
	}
	_, err = punt.Run(ctx, l, punt.Options{Bins: bins, BPFFS: bpffs, StateDir: state, Log: daemonLog}, c, out)
	return err
}

// lockRun makes sure no other run uses the namespaces this one sweeps. The
// lock file holds the path of the running one's bpffs.
func lockRun() (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "palisade-punt-bench.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, errors.New("another punt-bench is running (benchmarks would disturb each other)")
	}
	return f, nil
}

// unmountStale unmounts the bpffs a killed run left, as its lock file names
// it (with the lock held, no run is using it).
func unmountStale(lock *os.File) error {
	b, err := io.ReadAll(io.NewSectionReader(lock, 0, 4096))
	if err != nil {
		return err
	}
	dir := strings.TrimSpace(string(b))
	var st unix.Statfs_t
	if dir == "" || unix.Statfs(dir, &st) != nil || st.Type != unix.BPF_FS_MAGIC {
		return lock.Truncate(0)
	}
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount the bpffs a killed run left at %s: %w", dir, err)
	}
	fmt.Fprintf(os.Stderr, "unmounted the bpffs a killed run left at %s\n", dir)
	if err := os.Remove(dir); err != nil {
		return err
	}
	return lock.Truncate(0)
}
