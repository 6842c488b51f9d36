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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/palisade/palisade/fastpath/bench/punt"
	"github.com/palisade/palisade/hypervisor/lab"
)

// prefix names every namespace of a run; a run first removes what a killed
// one left.
const prefix = "palpb"

func main() {
	punt.MaybeVerdictLoop() // the NFQUEUE baseline's verdict loop runs as this program

	c := punt.Defaults()
	quick := flag.Bool("quick", false, "short run: one repetition, 0.5 s floods, 500 round trips, a 10 MiB transfer of at most 3 s")
	flag.DurationVar(&c.Duration, "duration", c.Duration, "length of one throughput measurement")
	flag.IntVar(&c.Reps, "reps", c.Reps, "measurements per figure; the median is reported")
	flag.Var((*loads)(&c.Senders), "senders", "offered loads: UDP sender goroutines (one flow each), comma-separated")
	flag.IntVar(&c.Payload, "payload", c.Payload, "UDP payload bytes of the flood")
	flag.IntVar(&c.RoundTrips, "round-trips", c.RoundTrips, "round trips per latency measurement")
	mb := flag.Int64("mb", c.TransferBytes>>20, "MiB of the long TCP transfer")
	flag.DurationVar(&c.TransferLimit, "transfer-limit", c.TransferLimit, "the most one TCP transfer may take")
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
		if !set["transfer-limit"] {
			c.TransferLimit = q.TransferLimit
		}
		c.Warmup, c.WarmTrips = q.Warmup, q.WarmTrips
	}
	if c.Reps < 1 || c.Payload < 8 || c.RoundTrips < 1 || c.TransferBytes < 1 || c.Duration <= 0 || c.TransferLimit <= 0 {
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

// loads is the -senders flag: sender counts, comma-separated.
type loads []int

func (l *loads) String() string {
	s := make([]string, len(*l))
	for i, n := range *l {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

func (l *loads) Set(v string) error {
	*l = nil
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return fmt.Errorf("sender count %q: want a positive number", f)
		}
		*l = append(*l, n)
	}
	if len(*l) == 0 {
		return fmt.Errorf("no sender count")
	}
	return nil
}

// run owns every resource: the session (lock, what a killed run left, a
// private bpffs and the directory of the built daemons and their state), the
// namespaces. Each is released by a deferred call, also when ctx is
// cancelled by a signal.
func run(ctx context.Context, c punt.Config, daemonLog io.Writer, out io.Writer) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, eBPF, iptables inside them)")
	}
	sess, err := lab.StartSession("palisade-punt-bench", prefix+"-", os.Stderr)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, sess.Close()) }()
	tmp := sess.Dir
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
	l, err := lab.New(prefix)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, l.Close()) }()
	state := filepath.Join(tmp, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		return err
	}
	_, err = punt.Run(ctx, l, punt.Options{Bins: bins, BPFFS: sess.BPFFS, StateDir: state, Log: daemonLog}, c, out)
	return err
}
