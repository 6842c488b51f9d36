package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/palisade/palisade/hypervisor/lab"
	"github.com/palisade/palisade/hypervisor/lab/wait"
)

// TestRestartKeepsEstablishedConnections restarts fastpathd (cleanly, and
// after kill -9) under 20 open connections of a default-deny guest whose
// pickup window has closed: if connection state did not survive, their next
// segments would be dropped as invalid.
func TestRestartKeepsEstablishedConnections(t *testing.T) {
	for _, how := range []string{"SIGTERM", "SIGKILL"} {
		t.Run(how, func(t *testing.T) {
			e := newEnv(t)
			echoServer(t, e.web.NS, "[::]:80")
			e.activate(webPolicy) // pickup_grace 1s
			// Drives the scenario, asserts nothing about time: the
			// connections below must come after the datapath's pickup
			// window (its own monotonic clock) has closed.
			time.Sleep(1200 * time.Millisecond)
			var conns []net.Conn
			for i := 0; i < 20; i++ {
				c, err := dial(e.peer.NS, "198.51.100.10:80", mustAnswer)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if err := roundTrip(c, fmt.Sprintf("before %d", i)); err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
			}
			if how == "SIGTERM" {
				if err := e.run.Fastpathd.Stop(); err != nil {
					t.Fatal(err)
				}
			} else if err := e.run.Fastpathd.Kill(); err != nil {
				t.Fatal(err)
			}
			// While fastpathd is down the datapath keeps enforcing.
			for i, c := range conns {
				if err := roundTrip(c, fmt.Sprintf("down %d", i)); err != nil {
					t.Fatalf("connection %d while fastpathd is down: %v", i, err)
				}
			}
			if c, err := dial(e.peer.NS, "198.51.100.10:22", noAnswer); err == nil {
				c.Close()
				t.Fatal("port 22 opened while fastpathd was down")
			}
			if err := e.lab.RestartFastpathd(e.run, e.output); err != nil {
				t.Fatal(err)
			}
			e.waitUp()
			for i, c := range conns {
				if err := roundTrip(c, fmt.Sprintf("after %d", i)); err != nil {
					t.Fatalf("connection %d after restart: %v", i, err)
				}
			}
			st := e.stats()
			if n := counter(st, "counters", "invalid"); n != 0 {
				t.Fatalf("%d packets judged invalid across the restart", n)
			}
			if n := counter(st, "counters", "pickups"); n != 0 {
				t.Fatalf("%d flows had to be picked up again", n)
			}
			if n := st["tcp_connections"].(float64); n < 20 {
				t.Fatalf("%v TCP connections tracked after restart", n)
			}
		})
	}
}

// TestActivationUpdateDeactivationAreHitless runs a UDP echo stream (both
// directions, sequence-numbered) and a TCP stream through the guest while it
// is activated, re-policied five times, deactivated and activated again: no
// datagram may be lost and TCP may not retransmit.
func TestActivationUpdateDeactivationAreHitless(t *testing.T) {
	e := newEnv(t)
	echoServer(t, e.web.NS, "[::]:80")
	udpEcho, err := e.web.NS.ListenPacket("udp", "198.51.100.10:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer udpEcho.Close()
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := udpEcho.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = udpEcho.WriteTo(buf[:n], from)
		}
	}()
	sender, err := e.peer.NS.ListenPacket("udp", "198.51.100.20:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	if err := sender.(*net.UDPConn).SetReadBuffer(8 << 20); err != nil {
		t.Fatal(err)
	}
	dst := &net.UDPAddr{IP: net.ParseIP("198.51.100.10"), Port: 7000}

	tcp, err := dial(e.peer.NS, "198.51.100.10:80", mustAnswer)
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()

	var wg sync.WaitGroup
	stop := make(chan struct{})
	got := make([]bool, 100000)
	var gotMu sync.Mutex
	dups := 0
	wg.Add(1)
	go func() { // until the sender is closed
		defer wg.Done()
		buf := make([]byte, 64)
		for {
			n, _, err := sender.ReadFrom(buf)
			if err != nil {
				return
			}
			if n == 8 {
				seq := binary.BigEndian.Uint64(buf)
				gotMu.Lock()
				if got[seq] {
					dups++
				}
				got[seq] = true
				gotMu.Unlock()
			}
		}
	}()
	sent := 0
	sending := make(chan struct{})
	go func() { // ~4,000 datagrams per second
		defer close(sending)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		var b [8]byte
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for i := 0; i < 4; i++ {
				binary.BigEndian.PutUint64(b[:], uint64(sent))
				if _, err := sender.WriteTo(b[:], dst); err != nil {
					t.Errorf("send: %v", err)
					return
				}
				sent++
			}
		}
	}()
	tcpErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := bufio.NewReader(tcp)
		for i := 0; ; i++ {
			select {
			case <-stop:
				tcpErr <- nil
				return
			default:
			}
			if err := tcp.SetDeadline(time.Now().Add(mustAnswer)); err != nil {
				tcpErr <- err
				return
			}
			msg := fmt.Sprintf("segment %d %s", i, strings.Repeat("x", 200))
			if _, err := fmt.Fprintln(tcp, msg); err != nil {
				tcpErr <- err
				return
			}
			line, err := r.ReadString('\n')
			if err != nil || strings.TrimSpace(line) != msg {
				tcpErr <- fmt.Errorf("echo %d: %q %v", i, line, err)
				return
			}
		}
	}()

	policyN := func(n int) string {
		return fmt.Sprintf(`{"default_action":"deny","rules":[
			{"id":1,"action":"allow","direction":"inbound","protocol":"udp","destination_ports":["7000"]},
			{"id":2,"action":"allow","direction":"inbound","protocol":"tcp","destination_ports":["80"]},
			{"id":%d,"action":"deny","direction":"inbound","protocol":"tcp","destination_ports":["%d"]},
			{"id":3,"action":"allow","direction":"outbound"}]}`, 10+n, 1000+n)
	}
	// Steps drive the scenario (the streams run through each state for a
	// while); nothing is asserted about time.
	step := func() { time.Sleep(250 * time.Millisecond) }
	step()
	e.activate(policyN(0))
	for n := 1; n <= 5; n++ {
		step()
		if out, err := e.cli("policy", "web", "--set", e.policyFile(policyN(n))); err != nil {
			t.Fatalf("update %d: %v\n%s", n, err, out)
		}
	}
	step()
	if out, err := e.cli("deactivate", "web"); err != nil {
		t.Fatalf("deactivate: %v\n%s", err, out)
	}
	step()
	e.activate(policyN(6))
	step()
	close(stop)
	if err := <-tcpErr; err != nil {
		t.Fatalf("TCP stream broke: %v", err)
	}
	<-sending
	// The last echoes are in flight: wait for them; a lost datagram never
	// comes.
	lost := func() int {
		gotMu.Lock()
		defer gotMu.Unlock()
		n := 0
		for i := 0; i < sent; i++ {
			if !got[i] {
				n++
			}
		}
		return n
	}
	wait.ForErr(t, "every datagram echoed", func() error {
		if n := lost(); n != 0 {
			return fmt.Errorf("%d of %d datagrams lost", n, sent)
		}
		return nil
	})
	sender.Close()
	wg.Wait()
	info, err := tcpInfo(tcp)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d datagrams each way, none lost, %d duplicated; TCP retransmissions: %d", sent, dups, info.Total_retrans)
	if dups != 0 {
		t.Fatalf("%d of %d datagrams duplicated", dups, sent)
	}
	if info.Total_retrans != 0 {
		t.Fatalf("TCP retransmitted %d segments: something was dropped", info.Total_retrans)
	}
}

func tcpInfo(c net.Conn) (*unix.TCPInfo, error) {
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return nil, err
	}
	var info *unix.TCPInfo
	var serr error
	err = raw.Control(func(fd uintptr) { info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if err == nil {
		err = serr
	}
	return info, err
}

// hostFilter is the host namespace's packet-filter state as text: the whole
// nftables ruleset and both iptables views, without the save tools'
// timestamp comments.
func hostFilter(t *testing.T, ns *lab.Namespace) string {
	t.Helper()
	var b strings.Builder
	for _, cmd := range [][]string{{"nft", "list", "ruleset"}, {"iptables-save"}, {"ip6tables-save"}} {
		out, err := ns.Run("", cmd[0], cmd[1:]...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", cmd, err, out)
		}
		fmt.Fprintf(&b, "== %s\n", strings.Join(cmd, " "))
		for _, line := range strings.Split(out, "\n") {
			if !strings.HasPrefix(line, "# Generated by") && !strings.HasPrefix(line, "# Completed on") {
				b.WriteString(line + "\n")
			}
		}
	}
	return b.String()
}

// TestHostPacketFilterIsNeverTouched puts an nftables NAT masquerade rule and
// an iptables rule into the host namespace before install, and checks they
// are byte-identical after install, activation, traffic, deactivation,
// restart and uninstall (seed 002).
func TestHostPacketFilterIsNeverTouched(t *testing.T) {
	e := newEnvBefore(t, func(host *lab.Namespace) {
		nat := `table ip palisade_test_nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "uplink0" ip saddr 198.51.100.0/24 masquerade
	}
}`
		if out, err := host.Run(nat, "nft", "-f", "-"); err != nil {
			t.Fatalf("nft: %v\n%s", err, out)
		}
		if out, err := host.Run("", "iptables", "-A", "INPUT", "-p", "tcp",
			"--dport", "9999", "-m", "comment", "--comment", "palisade-test", "-j", "DROP"); err != nil {
			t.Fatalf("iptables: %v\n%s", err, out)
		}
	})
	before := hostFilter(t, e.site.Host)
	if !strings.Contains(before, "masquerade") || !strings.Contains(before, "palisade-test") {
		t.Fatalf("test rules missing:\n%s", before)
	}
	check := func(phase string) {
		t.Helper()
		if after := hostFilter(t, e.site.Host); after != before {
			t.Fatalf("host packet filter changed after %s:\n--- before\n%s\n--- after\n%s", phase, before, after)
		}
	}
	check("install")
	echoServer(t, e.web.NS, "[::]:80")
	e.activate(webPolicy)
	check("activation")
	c, err := dial(e.peer.NS, "198.51.100.10:80", mustAnswer)
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(c, "through"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	check("traffic")
	if out, err := e.cli("deactivate", "web"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	check("deactivation")
	e.activate(webPolicy)
	if err := e.run.Fastpathd.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := e.lab.RestartFastpathd(e.run, e.output); err != nil {
		t.Fatal(err)
	}
	e.waitUp()
	check("restart")
	if err := e.run.Fastpathd.Stop(); err != nil {
		t.Fatal(err)
	}
	if out, err := e.uninstall(); err != nil {
		t.Fatalf("uninstall: %v\n%s", err, out)
	}
	check("uninstall")
}

// uninstall runs `fastpathd uninstall` where fastpathd runs: in the host
// namespace (it removes the punt device there).
func (e *env) uninstall() (string, error) {
	return e.site.Host.Run("", bins.Fastpathd, append([]string{"uninstall"}, e.run.StoreArgs()...)...)
}

// TestPortReuse2000Connections makes 2,000 sequential connections from one
// client that reuses four source ports through a protected guest whose
// server closes first, so every new SYN lands on a tuple still in TIME_WAIT
// (seed 003: proxies reuse ports fast).
func TestPortReuse2000Connections(t *testing.T) {
	e := newEnv(t)
	ln, err := e.web.NS.Listen("tcp", "198.51.100.10:80")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The server closes first (AcceptLoop closes after answering): its side
	// enters TIME_WAIT.
	go lab.AcceptLoop(ln, func(c net.Conn) {
		line, _ := bufio.NewReader(c).ReadString('\n')
		_, _ = io.WriteString(c, "ok "+line)
	})
	e.activate(webPolicy)
	reuse := func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
		if err != nil {
			return err
		}
		return serr
	}
	ok := 0
	start := time.Now()
	for i := 0; i < 2000; i++ {
		d := &net.Dialer{Timeout: mustAnswer, Control: reuse,
			LocalAddr: &net.TCPAddr{IP: net.ParseIP("198.51.100.20"), Port: 40000 + i%4}}
		c, err := e.peer.NS.Dial(d, "tcp", "198.51.100.10:80")
		if err != nil {
			t.Fatalf("connection %d (source port %d): %v (after %d successes)", i, 40000+i%4, err, ok)
		}
		if err := c.SetDeadline(time.Now().Add(mustAnswer)); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "req %d\n", i)
		reply, err := io.ReadAll(c)
		c.Close()
		if err != nil || !strings.HasPrefix(string(reply), "ok req ") {
			t.Fatalf("connection %d: %q %v", i, reply, err)
		}
		ok++
	}
	st := e.stats()
	t.Logf("2000 connections over 4 source ports in %s; port_reuse=%d invalid=%d", time.Since(start).Round(time.Millisecond),
		counter(st, "counters", "port_reuse"), counter(st, "counters", "invalid"))
	if counter(st, "counters", "port_reuse") < 1996 {
		t.Fatalf("only %d SYNs reused a closing tuple", counter(st, "counters", "port_reuse"))
	}
	if counter(st, "drops", "invalid_state") != 0 {
		t.Fatalf("%d segments dropped as invalid", counter(st, "drops", "invalid_state"))
	}
}

// TestUninstallRemovesEverything checks that uninstall leaves no program on
// the vNIC, no pinned object, and no program or map of ours in the kernel.
func TestUninstallRemovesEverything(t *testing.T) {
	e := newEnv(t)
	e.activate(webPolicy)
	pinDir := filepath.Join(e.run.BPFFS, "palisade", e.site.Host.Name)
	var progIDs []ebpf.ProgramID
	var ifindex int
	err := e.site.Host.Do(func() error {
		l, err := net.InterfaceByName("vnic-web")
		if err != nil {
			return err
		}
		ifindex = l.Index
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at})
			if err != nil {
				return err
			}
			for _, p := range res.Programs {
				progIDs = append(progIDs, p.ID)
			}
		}
		return nil
	})
	if err != nil || len(progIDs) != 2 {
		t.Fatalf("attached programs: %v %v", progIDs, err)
	}
	var mapIDs []ebpf.MapID
	entries, err := os.ReadDir(pinDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		if en.IsDir() {
			continue
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, en.Name()), nil)
		if err != nil {
			t.Fatalf("%s: %v", en.Name(), err)
		}
		info, err := m.Info()
		m.Close()
		if err != nil {
			t.Fatalf("%s: %v", en.Name(), err)
		}
		id, ok := info.ID()
		if !ok {
			t.Fatalf("%s: the kernel gives no map id", en.Name())
		}
		mapIDs = append(mapIDs, id)
	}
	if len(mapIDs) < 10 {
		t.Fatalf("pinned maps: %v", mapIDs)
	}
	if err := e.run.Fastpathd.Stop(); err != nil {
		t.Fatal(err)
	}
	out, err := e.uninstall()
	if err != nil || !regexp.MustCompile(`uninstalled: 2 links detached`).MatchString(out) {
		t.Fatalf("uninstall: %v\n%s", err, out)
	}
	if _, err := os.Stat(pinDir); !os.IsNotExist(err) {
		t.Fatalf("pin directory survived: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.run.Dir, e.site.Host.Name+"-guests.json")); !os.IsNotExist(err) {
		t.Fatalf("state file survived: %v", err)
	}
	if _, err := e.site.Host.Netlink().LinkByName("palpunt0"); err == nil {
		t.Fatal("the punt device survived uninstall")
	}
	err = e.site.Host.Do(func() error {
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at})
			if err != nil || len(res.Programs) != 0 {
				t.Errorf("%v after uninstall: %+v %v", at, res, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Freed objects leave the kernel after an RCU grace period or two.
	wait.ForErr(t, "our programs and maps gone from the kernel", func() error {
		alive := 0
		for _, id := range progIDs {
			if p, err := ebpf.NewProgramFromID(id); err == nil {
				p.Close()
				alive++
			}
		}
		for _, id := range mapIDs {
			if m, err := ebpf.NewMapFromID(id); err == nil {
				m.Close()
				alive++
			}
		}
		if alive != 0 {
			return fmt.Errorf("%d of our programs and maps still in the kernel after uninstall", alive)
		}
		return nil
	})
}
