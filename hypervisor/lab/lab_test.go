package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/palisade/palisade/hypervisor/lab/wait"
)

func rootLinks(t *testing.T) []string {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names
}

func TestSiteConnectsAppliancesOverLinkLocal(t *testing.T) {
	before := rootLinks(t)
	l := ForTest(t)
	site, err := l.Site("esx1", 2)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := site.Host.Listen("tcp", "169.254.1.1:2222")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(c.RemoteAddr().String()))
			c.Close()
		}
	}()
	for i, app := range site.Appliances {
		c, err := app.Dial(&net.Dialer{Timeout: 2 * time.Second}, "tcp", "169.254.1.1:2222")
		if err != nil {
			t.Fatalf("appliance %d: %v", i, err)
		}
		b, _ := io.ReadAll(c)
		c.Close()
		if want := ApplianceAddr(i).Addr().String() + ":"; !strings.HasPrefix(string(b), want) {
			t.Fatalf("appliance %d connected from %q, want %s*", i, b, want)
		}
	}
	// Nothing of the lab is in the root namespace: no links, no addresses.
	// (Never probe by dialing from the root namespace: its default route
	// leads off this machine.)
	if after := rootLinks(t); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Fatalf("root namespace links changed: %v -> %v", before, after)
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() && a.IP.To4() != nil {
			t.Fatalf("root namespace holds link-local %s", a.IP)
		}
	}
}

func TestCloseRemovesNamespacesAndProcesses(t *testing.T) {
	NeedRoot(t, "to create network namespaces")
	l, err := New(TestName())
	if err != nil {
		t.Fatal(err)
	}
	ns, err := l.Namespace("a")
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	p, err := l.Start(ns, "sleeper", nil, "sleep", "600")
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Done():
	default:
		t.Fatal("process still running after Close")
	}
	if _, err := os.Stat(filepath.Join(netnsDir, ns.Name)); !os.IsNotExist(err) {
		t.Fatalf("namespace %s still exists after Close: %v", ns.Name, err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestCleanupOnPanic runs a test in a child process that builds a lab and then
// panics, and checks that the child's namespaces are gone afterwards.
func TestCleanupOnPanic(t *testing.T) {
	NeedRoot(t, "to create network namespaces")
	names := filepath.Join(t.TempDir(), "names")
	cmd := exec.Command(os.Args[0], "-test.run=^TestPanickingLab$", "-test.v")
	cmd.Env = append(os.Environ(), "LAB_PANIC_NAMES="+names)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "panic: deliberate") {
		t.Fatalf("child did not panic as planned: %v\n%s", err, out)
	}
	data, err := os.ReadFile(names)
	if err != nil {
		t.Fatalf("child wrote no namespace names: %v\n%s", err, out)
	}
	for _, n := range strings.Fields(string(data)) {
		if _, err := os.Stat(filepath.Join(netnsDir, n)); !os.IsNotExist(err) {
			t.Errorf("namespace %s survived the panic", n)
		}
	}
}

func TestPanickingLab(t *testing.T) {
	path := os.Getenv("LAB_PANIC_NAMES")
	if path == "" {
		t.Skip("child process of TestCleanupOnPanic, not a test of its own")
	}
	l := ForTest(t)
	site, err := l.Site("esx1", 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Start(site.Host, "sleeper", nil, "sleep", "600"); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(path, []byte(site.Host.Name+" "+site.Appliances[0].Name), 0o600)
	panic("deliberate")
}

func TestProcessWaitOutput(t *testing.T) {
	l := ForTest(t)
	ns, err := l.Namespace("p")
	if err != nil {
		t.Fatal(err)
	}
	p, err := l.Start(ns, "echo", nil, "sh", "-c", "ip -o link show | grep -c . ; echo ready")
	if err != nil {
		t.Fatal(err)
	}
	waitOutput(t, p, "ready")
	if err := p.ExitErr(); err != nil {
		t.Fatal(err)
	}
	// A fresh namespace holds only its loopback.
	if !strings.HasPrefix(p.Output(), "1\n") {
		t.Fatalf("namespace has other links: %q", p.Output())
	}
}

// Stop ends a process that exits on SIGTERM without waiting out the grace
// period, and kills one that ignores SIGTERM once the grace period has
// passed on the lab's clock, reporting it.
func TestStopKillsAProcessThatIgnoresSIGTERM(t *testing.T) {
	l := ForTest(t)
	clock := clockwork.NewFakeClock()
	l.clock = clock
	ns, err := l.Namespace("stop")
	if err != nil {
		t.Fatal(err)
	}
	polite, err := l.Start(ns, "polite", nil, "sleep", "600")
	if err != nil {
		t.Fatal(err)
	}
	if err := polite.Stop(); err != nil { // the fake clock never moves: SIGTERM alone ended it
		t.Fatalf("Stop of a process that exits on SIGTERM: %v", err)
	}
	stubborn, err := l.Start(ns, "stubborn", nil, "sh", "-c", `trap "" TERM; echo ready; exec sleep 600`)
	if err != nil {
		t.Fatal(err)
	}
	waitOutput(t, stubborn, "ready")
	stopped := make(chan error, 1)
	go func() { stopped <- stubborn.Stop() }()
	ctx, cancel := context.WithTimeout(context.Background(), wait.Limit)
	defer cancel()
	if err := clock.BlockUntilContext(ctx, 1); err != nil { // Stop waits out the grace period
		t.Fatal(err)
	}
	clock.Advance(stopGrace)
	if err := <-stopped; err == nil || !strings.Contains(err.Error(), "stubborn (pid") || !strings.Contains(err.Error(), "ignored SIGTERM for 5s and was killed") {
		t.Fatalf("Stop: %v", err)
	}
	<-stubborn.Done()
}

// deadPID is the pid of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// TestSweepRemovesLeftovers: the sweep removes a namespace whose owning
// process has exited and leaves a live process's alone.
func TestSweepRemovesLeftovers(t *testing.T) {
	NeedRoot(t, "to create network namespaces")
	dead := fmt.Sprintf("%ssweep%d", TestPrefix, deadPID(t))
	l, err := New(dead)
	if err != nil {
		t.Fatal(err)
	}
	live := ForTest(t)
	if _, err := l.Namespace("left"); err != nil {
		l.Close()
		t.Fatal(err)
	}
	mine, err := live.Namespace("live")
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	// Simulate a killed run: the lab is never closed.
	removed, err := SweepDead(TestPrefix)
	if err != nil {
		t.Fatal(err)
	}
	var ours []string
	for _, n := range removed {
		if strings.HasPrefix(n, dead+"-") || n == mine.Name {
			ours = append(ours, n)
		}
	}
	if len(ours) != 1 || ours[0] != dead+"-left" {
		t.Fatalf("swept %v, want %s-left and not %s", removed, dead, mine.Name)
	}
	if _, err := os.Stat(filepath.Join(netnsDir, mine.Name)); err != nil {
		t.Fatalf("a live process's namespace was swept: %v", err)
	}
}

func TestOwnerPID(t *testing.T) {
	for name, want := range map[string]int{"palt1234-1-esx": 1234, "paltsweep77-left": 77, "palt4194304lab-esx1": 4194304,
		"paltclose-a": 0, "palt-1": 0, "pallab-esx1": 0} {
		if pid, ok := OwnerPID(name, TestPrefix); pid != want || ok != (want > 0) {
			t.Errorf("OwnerPID(%q) = %d %v, want %d", name, pid, ok, want)
		}
	}
}

// TestExistingNamespaceIsNeverDeleted: a name already taken (another run's)
// is an error naming it, and the namespace stays.
func TestExistingNamespaceIsNeverDeleted(t *testing.T) {
	a := ForTest(t)
	ns, err := a.Namespace("x")
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(a.Prefix())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Namespace("x"); err == nil || !strings.Contains(err.Error(), ns.Name+" already exists") {
		t.Fatalf("second namespace %s: %v", ns.Name, err)
	}
	if _, err := os.Stat(filepath.Join(netnsDir, ns.Name)); err != nil {
		t.Fatalf("the existing namespace was deleted: %v", err)
	}
	if out, err := ns.Run("", "ip", "-o", "link", "show"); err != nil || strings.Count(out, "\n") != 1 {
		t.Fatalf("the existing namespace is not intact: %v\n%s", err, out)
	}
}

// TestFailedEnterKeepsTheThread: when entering the target namespace fails
// (after the thread was switched, even) and the original is restored, the
// thread is reported restored, which is what returns it to Go's pool
// instead of letting it die (a thread's death kills the daemons started
// from it with Pdeathsig).
func TestFailedEnterKeepsTheThread(t *testing.T) {
	NeedRoot(t, "to create network namespaces and move threads between them")
	runtime.LockOSThread()
	before, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	restored, err := runIn(func() (netns.NsHandle, error) {
		h, err := netns.New() // an unnamed namespace, entered
		if err != nil {
			return 0, err
		}
		h.Close()
		return 0, errors.New("deliberate")
	}, func() error {
		t.Error("fn ran although entering failed")
		return nil
	})
	after, aerr := netns.Get()
	if aerr == nil {
		defer after.Close()
	}
	if aerr != nil || !after.Equal(before) {
		t.Fatalf("thread left in %v (%v), not its namespace %v", after, aerr, before) // the thread dies locked
	}
	runtime.UnlockOSThread()
	if err == nil || err.Error() != "deliberate" || !restored {
		t.Fatalf("runIn = %v, %v; want restored and the target's error", restored, err)
	}
}
