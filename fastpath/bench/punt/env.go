package punt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/palisade/palisade/fastpath/control"
	"github.com/palisade/palisade/fastpath/policy"
	"github.com/palisade/palisade/fastpath/punt"
	"github.com/palisade/palisade/hypervisor/lab"
	"github.com/palisade/palisade/hypervisor/lab/wait"
	"github.com/palisade/palisade/hypervisor/localapi"
	"github.com/palisade/palisade/slowpath/inspectd"
)

// The topology's names and ports.
const (
	GuestID   = "bench-guest"
	GuestVNIC = "vnic-g"
	PeerIf    = "peer0"
	guestNum  = 10 // 198.51.100.10
	peerNum   = 20 // 198.51.100.20

	FloodPort = 7000 // UDP, peer → guest
	EchoPort  = 7001 // UDP, the guest echoes
	TCPPort   = 7002 // TCP, peer → guest

	// NFQueueNum is the queue the NFQUEUE baseline uses.
	NFQueueNum = 7
)

// Policy is the inspected guest's policy: UDP and TCP to the benchmark's
// ports in, everything out, all of it held for the slow path; fail closed,
// so a packet that got no verdict is never delivered.
const Policy = `{"name":"punt-bench","default_action":"deny","inspection":["ips"],"inspection_failure":"closed","rules":[
	{"id":1,"action":"allow","direction":"inbound","protocol":"udp","destination_ports":["7000","7001"]},
	{"id":2,"action":"allow","direction":"inbound","protocol":"tcp","destination_ports":["7002"]},
	{"id":3,"action":"allow","direction":"outbound"}]}`

// Mode is a filter configuration of the guest's traffic.
type Mode int

const (
	None     Mode = iota // the host only bridges
	Palisade             // fastpathd holds both directions for slowpathd
	NFQueue              // br_netfilter + iptables NFQUEUE in FORWARD + a Go verdict loop
)

func (m Mode) String() string {
	switch m {
	case None:
		return "no filter"
	case Palisade:
		return "Palisade"
	case NFQueue:
		return "NFQUEUE"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// Options configure an Env.
type Options struct {
	Bins     lab.Binaries
	BPFFS    string // a private BPF filesystem (lab.MountBPFFS)
	StateDir string // secrets, sockets, guest state
	// VerdictLoop is the command that runs the NFQUEUE verdict loop (the
	// queue number is appended); default: this executable with
	// VerdictLoopArg (see MaybeVerdictLoop).
	VerdictLoop []string
	// OffloadAfter is slowpathd's --offload-after at start (0: never).
	OffloadAfter int
	// Log receives the daemons' output; nil keeps it only in memory.
	Log io.Writer
}

// Env is one lab host with a guest and a peer on its vSwitch, the real
// daemons running, and at most one filter configuration installed.
type Env struct {
	lab   *lab.Lab
	opts  Options
	Site  *lab.Site
	Guest *lab.Endpoint
	Peer  *lab.Endpoint
	Run   *lab.HostRun
	API   *control.Client
	slow  *lab.Process
	loop  *lab.Process // the NFQUEUE verdict loop while installed
	mode  Mode
	// NFQueueNA says why the NFQUEUE configuration cannot run on this
	// machine ("" if it can).
	NFQueueNA string

	mu   sync.Mutex
	logs bytes.Buffer
}

// Setup builds the topology in l and starts fastpathd and slowpathd (bound,
// with no guest protected: the guest's traffic is unfiltered).
func Setup(ctx context.Context, l *lab.Lab, o Options) (*Env, error) {
	if len(o.VerdictLoop) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		o.VerdictLoop = []string{exe, VerdictLoopArg}
	}
	e := &Env{lab: l, opts: o}
	var err error
	if e.Site, err = l.Site("host", 1); err != nil {
		return nil, err
	}
	if e.Guest, err = l.Endpoint(e.Site, "guest", GuestVNIC, guestNum, nil); err != nil {
		return nil, err
	}
	if e.Peer, err = l.Endpoint(e.Site, "peer", PeerIf, peerNum, nil); err != nil {
		return nil, err
	}
	// Where br_netfilter is there (built in, or a loaded module), bridged
	// IPv4 would cross the host namespace's (empty) iptables hooks in every
	// configuration. Only the NFQUEUE one needs it; the others run without,
	// as a host would. Where it is not, NFQUEUE cannot be measured: loading
	// the module would change how the machine's own bridges are filtered.
	if e.NFQueueNA = bridgeNetfilter(e.Site.Host); e.NFQueueNA == "" {
		if err := e.Site.Host.Sysctl(bridgeNFCall, "0"); err != nil {
			return nil, fmt.Errorf("br_netfilter: %w", err)
		}
	}
	if e.Run, err = l.StartFastpathd(e.Site, o.Bins, o.StateDir, o.BPFFS, e.logWriter("fastpathd")); err != nil {
		return nil, err
	}
	e.API = control.NewClient(e.Run.FastpathdSock)
	if err := e.waitFastpathd(ctx); err != nil {
		return nil, err
	}
	if err := e.StartSlowpathd(ctx, o.OffloadAfter); err != nil {
		return nil, err
	}
	return e, nil
}

type prefixWriter struct {
	e    *Env
	name string
}

func (w prefixWriter) Write(p []byte) (int, error) {
	w.e.mu.Lock()
	defer w.e.mu.Unlock()
	for _, line := range strings.SplitAfter(string(p), "\n") {
		if line != "" {
			w.e.logs.WriteString(w.name + ": " + line)
		}
	}
	if w.e.opts.Log != nil {
		_, _ = w.e.opts.Log.Write(p)
	}
	return len(p), nil
}

func (e *Env) logWriter(name string) io.Writer { return prefixWriter{e, name} }

// Logs is everything the daemons and the verdict loop printed.
func (e *Env) Logs() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.logs.String()
}

func (e *Env) waitFastpathd(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	err := wait.Poll(ctx, func(ctx context.Context) error {
		select {
		case <-e.Run.Fastpathd.Done():
			return wait.Abort(fmt.Errorf("fastpathd exited: %v", e.Run.Fastpathd.ExitErr()))
		default:
		}
		c, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_, err := e.API.ListGuests(c)
		return err
	})
	if err != nil {
		return fmt.Errorf("fastpathd did not come up: %w\n%s", err, e.Logs())
	}
	return nil
}

// StartSlowpathd (re)starts slowpathd: no rules, no feeds, so its chain is
// only the offload-after-N engine (0: never offload; every packet of an
// inspected flow is answered allow). It returns once fastpathd punts to it.
func (e *Env) StartSlowpathd(ctx context.Context, offloadAfter int) error {
	if e.slow != nil {
		if err := e.slow.Stop(); err != nil {
			return err
		}
	}
	p, err := e.lab.StartSlowpathd(e.Run, 0, e.opts.Bins.Slowpathd, e.logWriter("slowpathd"),
		"--offload-after", fmt.Sprint(offloadAfter))
	if err != nil {
		return err
	}
	e.slow = p
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := p.WaitOutput(c, "bound to fast path"); err != nil {
		return err
	}
	err = wait.Poll(c, func(ctx context.Context) error {
		st, err := e.API.Inspection(ctx)
		if err == nil && !st.Bound {
			err = errors.New("not bound")
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("fastpathd does not see slowpathd bound: %w", err)
	}
	return nil
}

// Procs are the PIDs of the processes a configuration runs (0: none).
type Procs struct{ Fastpathd, Slowpathd, Loop int }

// Procs returns the PIDs of the running daemons and verdict loop.
func (e *Env) Procs() Procs {
	p := Procs{Fastpathd: e.Run.Fastpathd.PID(), Slowpathd: e.slow.PID()}
	if e.loop != nil {
		p.Loop = e.loop.PID()
	}
	return p
}

// Use installs configuration m, removing the current one first.
func (e *Env) Use(ctx context.Context, m Mode) error {
	if err := e.Clear(ctx); err != nil {
		return err
	}
	switch m {
	case Palisade:
		p, err := policy.Parse([]byte(Policy))
		if err != nil {
			return err
		}
		if _, err := e.API.Activate(ctx, GuestID, GuestVNIC, p); err != nil {
			return fmt.Errorf("activate the guest: %w", err)
		}
	case NFQueue:
		if e.NFQueueNA != "" {
			return fmt.Errorf("NFQUEUE: n/a (%s)", e.NFQueueNA)
		}
		if err := e.installNFQueue(ctx); err != nil {
			return errors.Join(err, e.removeNFQueue())
		}
	}
	e.mode = m
	return nil
}

// Clear removes the installed configuration: the guest is unprotected, the
// host namespace's ruleset empty, br_netfilter off, the verdict loop gone.
func (e *Env) Clear(ctx context.Context) error {
	var err error
	switch e.mode {
	case Palisade:
		err = e.API.Deactivate(ctx, GuestID)
	case NFQueue:
		err = e.removeNFQueue()
	}
	if err != nil {
		return fmt.Errorf("removing %s: %w", e.mode, err)
	}
	e.mode = None
	return nil
}

// Inspection returns fastpathd's inspection counters.
func (e *Env) Inspection(ctx context.Context) (punt.Stats, error) { return e.API.Inspection(ctx) }

// SlowInspection returns slowpathd's inspection counters.
func (e *Env) SlowInspection(ctx context.Context) (inspectd.Stats, error) {
	var st inspectd.Stats
	err := localapi.NewClient(e.Run.SlowpathdSock(0)).Do(ctx, http.MethodGet, "/v1/inspection", nil, &st)
	return st, err
}

// hostCmd runs a command in the lab's host namespace.
func (e *Env) hostCmd(name string, args ...string) (string, error) {
	out, err := e.Site.Host.Run("", name, args...)
	if err != nil {
		return out, fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), e.Site.Host.Name, err, strings.TrimSpace(out))
	}
	return out, nil
}

// bridgeNFDir is where br_netfilter's settings are, under /proc/sys.
var bridgeNFDir = "net/bridge"

// bridgeNFCall is the setting that sends bridged IPv4 through iptables.
var bridgeNFCall = bridgeNFDir + "/bridge-nf-call-iptables"

// bridgeNetfilter says why br_netfilter cannot be used in ns, or "" if it
// can. It never loads the module.
func bridgeNetfilter(ns *lab.Namespace) string {
	var reason string
	err := ns.Do(func() error {
		_, err := os.Stat(filepath.Join("/proc/sys", bridgeNFDir))
		return err
	})
	switch {
	case errors.Is(err, os.ErrNotExist):
		reason = fmt.Sprintf("br_netfilter not available: /proc/sys/%s is absent, the module is not loaded; "+
			"the benchmark does not load it, which would change how the machine's own bridges are filtered", bridgeNFDir)
	case err != nil:
		reason = fmt.Sprintf("br_netfilter not available: %v", err)
	}
	return reason
}
