package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/palisade/palisade/fastpath/bindserver"
	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/fastpath/control"
	"github.com/palisade/palisade/fastpath/control/api"
	"github.com/palisade/palisade/fastpath/control/server"
	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/fastpath/events"
	"github.com/palisade/palisade/fastpath/guests"
	"github.com/palisade/palisade/fastpath/heap"
	"github.com/palisade/palisade/fastpath/punt"
	"github.com/palisade/palisade/hypervisor/daemon"
	"github.com/palisade/palisade/hypervisor/localapi"
)

const (
	defaultControlSocket = "/run/palisade/fastpathd.sock"
	defaultBPFFS         = "/sys/fs/bpf"
)

// Capabilities this build of the fast path offers a slow path: it can hold
// packets for intrusion prevention and web reputation and take per-flow
// offload and block decisions.
const capabilities = channel.CapFirewall | channel.CapIPS | channel.CapWRS | channel.CapOffload | channel.CapTap | channel.CapEvents

type options struct {
	listen           string
	hostID           string
	controlSocket    string
	unboundWarnEvery time.Duration
	verdictTimeout   time.Duration
	puntQueue        uint64
	binding          daemon.BindingFlags
	log              daemon.LogFlags
	store            storeFlags
	heapMax          string
	heapReserve      string
}

// storeFlags say where the datapath's kernel and file state lives; every
// command that touches the datapath needs them.
type storeFlags struct {
	bpffs      string
	stateDir   string
	hostID     *string
	sweepEvery time.Duration
	wordPool   uint32
	rulePool   uint32
}

// check refuses an empty host id: the pin directory would be every host's
// (and uninstall would remove them all).
func (s *storeFlags) check() error {
	if *s.hostID == "" {
		return errors.New("--host-id is empty (and this host's name is unknown): name the host")
	}
	return nil
}

func (s *storeFlags) pinDir() string    { return filepath.Join(s.bpffs, "palisade", *s.hostID) }
func (s *storeFlags) stateFile() string { return filepath.Join(s.stateDir, *s.hostID+"-guests.json") }
func (s *storeFlags) config() datapath.Config {
	return datapath.Config{PinDir: s.pinDir(), WordPool: s.wordPool, RulePool: s.rulePool}
}

func main() {
	var o options
	root := daemon.RootCommand("fastpathd", "Palisade fast path: host daemon for the eBPF datapath and the slow-path binding")
	// An unknown hostname leaves --host-id empty, which the commands that
	// need it refuse (storeFlags.check).
	host, _ := os.Hostname()
	o.store.hostID = &o.hostID
	f := root.Flags()
	f.StringVar(&o.listen, "listen", channel.DefaultBindAddress, "bind address: IP:PORT (link-local) or vsock://:PORT")
	o.binding.Register(f, "slow path")
	f.DurationVar(&o.unboundWarnEvery, "unbound-warn-every", 10*time.Second, "how often to warn while no slow path is bound")
	f.DurationVar(&o.store.sweepEvery, "sweep-every", 5*time.Second, "how often idle connections are expired")
	f.DurationVar(&o.verdictTimeout, "verdict-timeout", 50*time.Millisecond, "how long a packet is held for the slow path's verdict before its guest's fail policy decides")
	f.Uint64Var(&o.puntQueue, "punt-queue", heap.DefaultPuntQueue, "packets held at most per inspected guest (each reserves 4 KiB of the heap budget)")
	f.Uint32Var(&o.store.wordPool, "rule-bitmap-words", 1<<20, "size of the shared rule-bitmap pool (8 bytes each)")
	f.Uint32Var(&o.store.rulePool, "rule-slots", 1<<18, "size of the shared rule pool")
	f.StringVar(&o.heapMax, "heap-max", "256MiB", "memory budget for the datapath and every protected guest")
	f.StringVar(&o.heapReserve, "heap-reserve", "10MiB", "part of the budget kept for migration state")
	o.log.Register(f)
	pf := root.PersistentFlags()
	pf.StringVar(&o.controlSocket, "control-socket", defaultControlSocket, "local control socket")
	pf.StringVar(&o.hostID, "host-id", host, "this host's name in the handshake, logs and pin paths")
	pf.StringVar(&o.store.bpffs, "bpffs", defaultBPFFS, "BPF filesystem holding the pinned datapath (<bpffs>/palisade/<host-id>)")
	pf.StringVar(&o.store.stateDir, "state-dir", "/var/lib/palisade", "directory of the guest state file")
	root.RunE = func(cmd *cobra.Command, _ []string) error { return run(o) }
	root.AddCommand(daemon.StatusCommand(&o.controlSocket))
	addGuestCommands(root, &o.controlSocket)
	root.AddCommand(uninstallCommand(&o), heapCommand(&o))
	daemon.Main(root)
}

// ensureBPFFS mounts the BPF filesystem at its standard place if nothing is
// mounted there yet; any other path must already be a bpffs.
func ensureBPFFS(dir string, log logrus.FieldLogger) error {
	err := datapath.CheckBPFFS(dir)
	var nb *datapath.NotBPFFSError
	if err == nil || !errors.As(err, &nb) || dir != defaultBPFFS {
		return err
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs on %s: %w", dir, err)
	}
	log.WithField("path", dir).Info("mounted the BPF filesystem")
	return nil
}

func run(o options) error {
	log, err := o.log.Logger("fastpathd")
	if err != nil {
		return err
	}
	if err := o.store.check(); err != nil {
		return err
	}
	ep, err := o.binding.Endpoint("listen", o.listen)
	if err != nil {
		return err
	}
	secret, err := channel.ReadSecretFile(o.binding.SecretFile)
	if err != nil {
		return err
	}
	if err := ensureBPFFS(o.store.bpffs, log); err != nil {
		return err
	}
	dp, err := datapath.Open(o.store.config())
	if err != nil {
		return err
	}
	defer dp.Close() // pins stay: the datapath keeps enforcing while we are down
	budget, costs, err := openBudget(o, dp)
	if err != nil {
		return err
	}
	log.WithFields(logrus.Fields{"max": o.heapMax, "reserve": o.heapReserve, "entry_bytes": costs.EntryBytes,
		"bucket_bytes": costs.BucketBytes, "table_fixed_bytes": costs.TableFixed}).Info("heap budget measured from the kernel")
	// Everything below is made in dependency order, each part from parts
	// that exist already. The one report that runs against that order (a
	// refused guest goes to the events and to the slow path, which need
	// the guests first) waits in refused until reportRefusals runs.
	refused := make(chan *heap.ExhaustedError, refusalQueue)
	mgr, err := guests.New(guests.Config{Datapath: dp, StateFile: o.store.stateFile(), Log: log, SweepEvery: o.store.sweepEvery,
		Budget: budget, Costs: costs, OnProtectionFailed: queueRefusal(refused, log)})
	if err != nil {
		return err
	}
	if err := mgr.Restore(); err != nil {
		// Guests that restored keep their protection; the others are
		// reported, and the agent will activate them again.
		log.WithError(err).Error("some guests could not be restored")
	}
	agg := events.New(events.Config{Name: mgr.SlotName, Log: log})
	inspector, err := newInspector(o, dp, mgr, agg, costs, log)
	if err != nil {
		return err
	}
	srv, err := bindserver.New(bindserver.Config{
		Self:     channel.Identity{Version: channel.Current(), Revision: channel.ProtocolRevision, Capabilities: capabilities, ID: o.hostID},
		Secret:   secret,
		Endpoint: ep.String(), Timing: o.binding.Timing, UnboundWarnEvery: o.unboundWarnEvery,
		Log: log, Handler: inspector,
	})
	if err != nil {
		return err
	}
	ln, err := ep.Listen()
	if err != nil {
		return fmt.Errorf("%w (is the link-local bind address configured on this host? see docs/troubleshooting.md)", err)
	}
	rd, err := dp.Events()
	if err != nil {
		return err
	}

	ctx, stop := daemon.SignalContext()
	defer stop()
	log.WithFields(logrus.Fields{"version": channel.Current().String(), "revision": channel.ProtocolRevision,
		"control_socket": o.controlSocket, "pin_dir": o.store.pinDir(), "guests": mgr.Count()}).Info("fastpathd starting")

	ctl := &server.Server{Guests: mgr, Events: agg, Binding: srv.Status, Inspection: inspector.Stats,
		Heap: heapReport(budget, costs, dp)}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(gctx, ln) })
	g.Go(func() error { return localapi.Serve(gctx, o.controlSocket, ctl.Handler()) })
	g.Go(func() error { return agg.Run(gctx, rd) })
	g.Go(func() error { mgr.Run(gctx); return nil })
	g.Go(func() error { return inspector.Run(gctx) })
	g.Go(func() error { reportRefusals(gctx, refused, agg.Note, srv.Publish, log); return nil })
	err = g.Wait()
	log.WithField("reason", context.Cause(ctx)).Info("fastpathd stopped; the datapath keeps enforcing")
	return err
}

// newInspector makes the inline inspection engine on dp, for mgr's guests;
// the slow path's alerts go to agg.
func newInspector(o options, dp *datapath.Datapath, mgr *guests.Manager, agg *events.Aggregator, costs heap.Costs,
	log logrus.FieldLogger) (*punt.Engine, error) {
	return punt.New(punt.Config{Datapath: dp, VerdictTimeout: o.verdictTimeout, Log: log,
		GuestPackets: int(costs.PuntQueue), GuestBytes: int(costs.PuntQueue * costs.PuntPacketBytes),
		GuestOf: func(slot uint32) (punt.Guest, bool) {
			g, ok := mgr.BySlot(slot)
			return punt.Guest{ID: g.ID, FailClosed: g.FailClosed, Tap: g.Tap}, ok
		},
		Events: noteAlert(agg.Note, mgr.SlotName),
	})
}

// heapReport is the control API's heap answer: the budget's accounts, the
// costs they use, and what the kernel says it holds.
func heapReport(budget *heap.Budget, costs heap.Costs, dp *datapath.Datapath) func() (api.HeapReport, error) {
	return func() (api.HeapReport, error) {
		r := budget.Snapshot()
		r.Costs = api.HeapCosts(costs)
		var err error
		r.KernelMeasured, err = dp.KernelMemory()
		return r, err
	}
}

func uninstallCommand(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "uninstall",
		Short: "remove every program, link and pinned map of this host's datapath, and the guest state (fastpathd must be stopped)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Second)
			_, err := control.NewClient(o.controlSocket).Status(ctx)
			cancel()
			if err == nil {
				return fmt.Errorf("fastpathd is running on %s: stop it first", o.controlSocket)
			}
			if err := o.store.check(); err != nil {
				return err
			}
			if err := datapath.CheckBPFFS(o.store.pinDir()); err != nil {
				return err
			}
			if _, err := os.Stat(o.store.pinDir()); os.IsNotExist(err) {
				fmt.Fprintf(cmd.OutOrStdout(), "nothing installed under %s\n", o.store.pinDir())
				return os.RemoveAll(o.store.stateFile())
			}
			dp, err := datapath.Open(o.store.config())
			if err != nil {
				return err
			}
			links, err := dp.PinnedLinks()
			if err != nil {
				return fmt.Errorf("list pinned links: %w", err)
			}
			if err := dp.Uninstall(); err != nil {
				return err
			}
			if err := os.RemoveAll(o.store.stateFile()); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "uninstalled: %d links detached, %s and %s removed\n", len(links), o.store.pinDir(), o.store.stateFile())
			return nil
		},
	}
}
