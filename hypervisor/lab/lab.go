package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/jonboulle/clockwork"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where iproute2 and netns.NewNamed keep named namespaces.
const netnsDir = "/run/netns"

// Lab owns namespaces and the processes started in them.
type Lab struct {
	prefix string
	clock  clockwork.Clock // times Process.Stop's grace period

	mu     sync.Mutex
	spaces []*Namespace
	procs  []*Process
	closed bool
}

// New starts an empty lab whose namespaces are all named prefix-<short>.
func New(prefix string) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("lab: network namespaces need root")
	}
	if prefix == "" || strings.ContainsAny(prefix, "/ ") {
		return nil, fmt.Errorf("lab: invalid prefix %q", prefix)
	}
	return &Lab{prefix: prefix, clock: clockwork.NewRealClock()}, nil
}

// Prefix is the name prefix of every namespace of this lab.
func (l *Lab) Prefix() string { return l.prefix }

// Namespace is one named network namespace of the lab.
type Namespace struct {
	Name   string // full name, as `ip netns` lists it
	handle netns.NsHandle
	nl     *netlink.Handle
}

// onThreadIn runs fn on a fresh OS thread switched into ns. The goroutine is
// dedicated to fn: if the thread cannot be switched back, it dies with the
// goroutine instead of carrying the wrong namespace into other code.
func onThreadIn(target func() (netns.NsHandle, error), fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		restored, err := runIn(target, fn)
		if restored {
			runtime.UnlockOSThread() // back in its namespace: Go may use it again
		}
		errc <- err
	}()
	return <-errc
}

// runIn runs fn on the calling thread, which must be locked, in the
// namespace target switches it to, switches it back, and says whether the
// thread is in its original namespace again (restored), which it must be
// before it is unlocked. A target that fails may have switched already.
func runIn(target func() (netns.NsHandle, error), fn func() error) (restored bool, err error) {
	orig, err := netns.Get()
	if err != nil {
		return true, fmt.Errorf("current netns: %w", err)
	}
	defer orig.Close()
	h, err := target()
	if err != nil {
		if serr := netns.Set(orig); serr != nil {
			return false, errors.Join(err, fmt.Errorf("restore netns: %w", serr))
		}
		return true, err
	}
	defer h.Close()
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		return false, errors.Join(ferr, fmt.Errorf("restore netns: %w", err))
	}
	return true, ferr
}

// Namespace creates prefix-short with its loopback up.
func (l *Lab) Namespace(short string) (*Namespace, error) {
	name := l.prefix + "-" + short
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return nil, errors.New("lab: closed")
	}
	var h netns.NsHandle
	created := false
	err := onThreadIn(func() (netns.NsHandle, error) {
		nh, err := netns.NewNamed(name)
		if errors.Is(err, os.ErrExist) {
			// Another run's, or a killed one's: never ours to delete.
			return 0, fmt.Errorf("lab: network namespace %s already exists (another run's, or one a killed run left: "+
				"go tool task lab:down or sweep-tests removes those)", name)
		}
		if err != nil {
			return 0, fmt.Errorf("create netns %s: %w", name, err)
		}
		created = true
		h, err = netns.GetFromName(name) // a second handle, owned by the Namespace
		if err != nil {
			nh.Close()
			return 0, fmt.Errorf("open netns %s: %w", name, err)
		}
		return nh, nil
	}, func() error { return nil })
	if err != nil {
		if created {
			_ = netns.DeleteNamed(name)
		}
		return nil, err
	}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		h.Close()
		_ = netns.DeleteNamed(name)
		return nil, fmt.Errorf("netlink in %s: %w", name, err)
	}
	ns := &Namespace{Name: name, handle: h, nl: nl}
	l.mu.Lock()
	l.spaces = append(l.spaces, ns)
	l.mu.Unlock()
	lo, err := nl.LinkByName("lo")
	if err == nil {
		err = nl.LinkSetUp(lo)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: loopback up: %w", name, err)
	}
	// Addresses are usable at once: duplicate address detection would only
	// delay tests and the lab's links have no other hosts on them.
	if err := ns.Sysctl("net/ipv6/conf/all/accept_dad", "0"); err != nil {
		return nil, err
	}
	if err := ns.Sysctl("net/ipv6/conf/default/accept_dad", "0"); err != nil {
		return nil, err
	}
	return ns, nil
}

// Do runs fn on an OS thread inside the namespace. Sockets fn creates stay in
// the namespace after it returns.
func (n *Namespace) Do(fn func() error) error {
	return onThreadIn(func() (netns.NsHandle, error) {
		if err := netns.Set(n.handle); err != nil {
			return 0, fmt.Errorf("enter netns %s: %w", n.Name, err)
		}
		return netns.None(), nil
	}, fn)
}

// Netlink is a netlink handle operating inside the namespace.
func (n *Namespace) Netlink() *netlink.Handle { return n.nl }

// Handle is the namespace's file handle (for netlink.NsFd and BPF attach).
func (n *Namespace) Handle() netns.NsHandle { return n.handle }

// Sysctl writes /proc/sys/<key> inside the namespace.
func (n *Namespace) Sysctl(key, value string) error {
	return n.Do(func() error {
		if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(value), 0o644); err != nil {
			return fmt.Errorf("%s: sysctl %s=%s: %w", n.Name, key, value, err)
		}
		return nil
	})
}

// Command prepares name with args to run inside the namespace through `ip
// netns exec`, which execs the program itself (the command's pid is the
// program's) and mounts the namespace's own /sys for it.
func (n *Namespace) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs name with args inside the namespace with stdin as its input and
// returns its combined output. It refuses a namespace without a name, so
// that nothing ever runs in the caller's own namespace by mistake.
func (n *Namespace) Run(stdin, name string, args ...string) (string, error) {
	if n == nil || n.Name == "" {
		return "", errors.New("lab: refusing to run a command outside a lab namespace")
	}
	cmd := n.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Listen opens a listener inside the namespace.
func (n *Namespace) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ListenPacket opens a packet socket inside the namespace.
func (n *Namespace) ListenPacket(network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := n.Do(func() (err error) {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// Dial connects from inside the namespace. The socket is created on the
// namespace's thread; the connect completes on Go's poller as usual.
func (n *Namespace) Dial(d *net.Dialer, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		c, err = d.Dial(network, addr)
		return err
	})
	return c, err
}

// DialContext connects from inside the namespace, honouring ctx.
func (n *Namespace) DialContext(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Veth is one end of a veth pair.
type Veth struct {
	NS    *Namespace
	Name  string
	Addrs []netip.Prefix
	Index int
	MAC   net.HardwareAddr
}

// End describes one end of a link to create.
type End struct {
	NS    *Namespace
	Name  string         // interface name, at most 15 bytes
	Addrs []netip.Prefix // addresses to assign (none is fine)
	MAC   net.HardwareAddr
	// Master, if set, is a bridge in NS this end is enslaved to.
	Master string
}

// Link creates a veth pair between two namespaces, assigns the addresses and
// brings both ends up. The pair is created directly inside a's namespace and
// its peer inside b's, so it never appears in the root namespace.
func (l *Lab) Link(a, b End) (*Veth, *Veth, error) {
	for _, e := range []End{a, b} {
		if len(e.Name) == 0 || len(e.Name) > 15 {
			return nil, nil, fmt.Errorf("lab: interface name %q must be 1-15 bytes", e.Name)
		}
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = a.Name
	attrs.HardwareAddr = a.MAC
	v := &netlink.Veth{LinkAttrs: attrs, PeerName: b.Name, PeerHardwareAddr: b.MAC, PeerNamespace: netlink.NsFd(int(b.NS.handle))}
	if err := a.NS.nl.LinkAdd(v); err != nil {
		return nil, nil, fmt.Errorf("lab: veth %s/%s <-> %s/%s: %w", a.NS.Name, a.Name, b.NS.Name, b.Name, err)
	}
	var ends [2]*Veth
	for i, e := range []End{a, b} {
		link, err := e.NS.nl.LinkByName(e.Name)
		if err != nil {
			return nil, nil, fmt.Errorf("lab: %s/%s: %w", e.NS.Name, e.Name, err)
		}
		for _, p := range e.Addrs {
			addr := &netlink.Addr{IPNet: prefixNet(p)}
			if p.Addr().Is6() {
				addr.Flags = unix.IFA_F_NODAD
			}
			if err := e.NS.nl.AddrAdd(link, addr); err != nil {
				return nil, nil, fmt.Errorf("lab: %s/%s: add %s: %w", e.NS.Name, e.Name, p, err)
			}
		}
		if e.Master != "" {
			br, err := e.NS.nl.LinkByName(e.Master)
			if err != nil {
				return nil, nil, fmt.Errorf("lab: %s/%s: master %s: %w", e.NS.Name, e.Name, e.Master, err)
			}
			if err := e.NS.nl.LinkSetMaster(link, br); err != nil {
				return nil, nil, fmt.Errorf("lab: %s/%s: enslave to %s: %w", e.NS.Name, e.Name, e.Master, err)
			}
		}
		if err := e.NS.nl.LinkSetUp(link); err != nil {
			return nil, nil, fmt.Errorf("lab: %s/%s up: %w", e.NS.Name, e.Name, err)
		}
		ends[i] = &Veth{NS: e.NS, Name: e.Name, Addrs: e.Addrs, Index: link.Attrs().Index, MAC: link.Attrs().HardwareAddr}
	}
	return ends[0], ends[1], nil
}

// Bridge creates a bridge (the lab's vSwitch) inside the namespace with the
// given addresses, and brings it up.
func (n *Namespace) Bridge(name string, addrs ...netip.Prefix) error {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	br := &netlink.Bridge{LinkAttrs: attrs}
	if err := n.nl.LinkAdd(br); err != nil {
		return fmt.Errorf("%s: bridge %s: %w", n.Name, name, err)
	}
	for _, p := range addrs {
		addr := &netlink.Addr{IPNet: prefixNet(p)}
		if p.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := n.nl.AddrAdd(br, addr); err != nil {
			return fmt.Errorf("%s: bridge %s: add %s: %w", n.Name, name, p, err)
		}
	}
	if err := n.nl.LinkSetUp(br); err != nil {
		return fmt.Errorf("%s: bridge %s up: %w", n.Name, name, err)
	}
	return nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}

// AddRoute adds dst via gw (on the link named dev) inside the namespace.
func (n *Namespace) AddRoute(dst netip.Prefix, gw netip.Addr, dev string) error {
	link, err := n.nl.LinkByName(dev)
	if err != nil {
		return fmt.Errorf("%s: route via %s: %w", n.Name, dev, err)
	}
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: prefixNet(dst)}
	if gw.IsValid() {
		r.Gw = gw.AsSlice()
	}
	if err := n.nl.RouteAdd(r); err != nil {
		return fmt.Errorf("%s: route %s via %s dev %s: %w", n.Name, dst, gw, dev, err)
	}
	return nil
}

// Close stops every process, then deletes every namespace (which deletes the
// links in them). It reports every failure and is safe to call twice.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs, spaces := l.procs, l.spaces
	l.procs, l.spaces = nil, nil
	l.mu.Unlock()

	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, ns := range spaces {
		ns.nl.Close()
		ns.handle.Close()
		if err := netns.DeleteNamed(ns.Name); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("delete netns %s: %w", ns.Name, err))
		}
	}
	return errors.Join(errs...)
}

// sweep deletes every named namespace starting with prefix: what a killed
// run left behind. Only a holder of the prefix's session lock may call it.
func sweep(prefix string) ([]string, error) {
	return sweepIf(prefix, func(string) bool { return true })
}

// SweepDead deletes the named namespaces starting with prefix whose owner,
// the process whose pid follows the prefix (after any letters, as in
// palt1234-1-esx), has exited: what killed test runs left. Namespaces of a
// live process, or with no pid in their name, are left alone.
func SweepDead(prefix string) ([]string, error) {
	return sweepIf(prefix, func(name string) bool {
		pid, ok := OwnerPID(name, prefix)
		return ok && !alive(pid)
	})
}

// OwnerPID is the pid in name after prefix and any letters following it.
func OwnerPID(name, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	rest = strings.TrimLeft(rest, "abcdefghijklmnopqrstuvwxyz")
	end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(rest)
	}
	pid, err := strconv.Atoi(rest[:end])
	return pid, err == nil && pid > 0
}

// alive says whether a process with this pid exists.
func alive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

func sweepIf(prefix string, remove func(name string) bool) ([]string, error) {
	if prefix == "" {
		return nil, errors.New("lab: sweep needs a prefix")
	}
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) || !remove(e.Name()) {
			continue
		}
		if err := netns.DeleteNamed(e.Name()); err != nil {
			errs = append(errs, fmt.Errorf("delete netns %s: %w", e.Name(), err))
			continue
		}
		removed = append(removed, e.Name())
	}
	return removed, errors.Join(errs...)
}
