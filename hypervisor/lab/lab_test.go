package lab

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
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
	l, err := New(TestPrefix + "close")
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
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.WaitOutput(ctx, "ready"); err != nil {
		t.Fatal(err)
	}
	if err := p.ExitErr(); err != nil {
		t.Fatal(err)
	}
	// A fresh namespace holds only its loopback.
	if !strings.HasPrefix(p.Output(), "1\n") {
		t.Fatalf("namespace has other links: %q", p.Output())
	}
}

func TestSweepRemovesLeftovers(t *testing.T) {
	l, err := New(TestPrefix + "sweep")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Namespace("left"); err != nil {
		l.Close()
		t.Fatal(err)
	}
	// Simulate a killed run: the lab is never closed.
	removed, err := Sweep(TestPrefix + "sweep")
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0] != TestPrefix+"sweep-left" {
		t.Fatalf("swept %v", removed)
	}
}
