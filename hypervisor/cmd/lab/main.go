// Command lab stands a small Palisade site up on this machine, inside network
// namespaces: a host running fastpathd on 169.254.1.1:2222 and an appliance
// running slowpathd, bound to each other. Ctrl-C (or --for) tears it all down.
package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/fastpath/daemon"
	"github.com/palisade/palisade/fastpath/localapi"
	"github.com/palisade/palisade/hypervisor/lab"
)

// labPrefix names every namespace the lab command creates; `lab down` removes
// them all, also after a crash.
const labPrefix = "pallab"

func main() {
	root := daemon.RootCommand("lab", "Palisade lab: a host, an appliance and their binding in network namespaces")
	var binDir string
	var hold time.Duration
	root.Flags().StringVar(&binDir, "bin-dir", "bin", "directory holding fastpathd and slowpathd")
	root.Flags().DurationVar(&hold, "for", 0, "tear down after this long instead of waiting for Ctrl-C")
	root.RunE = func(cmd *cobra.Command, _ []string) error { return up(cmd.OutOrStdout(), binDir, hold) }
	root.AddCommand(&cobra.Command{
		Use:   "down",
		Short: "remove every namespace a lab left behind (after a crash or kill -9)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return sweep(cmd.OutOrStdout(), labPrefix)
		},
	}, &cobra.Command{
		Use:   "sweep-tests",
		Short: "remove every namespace a killed test run left behind",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return sweep(cmd.OutOrStdout(), lab.TestPrefix)
		},
	})
	daemon.Main(root)
}

func sweep(out io.Writer, prefix string) error {
	removed, err := lab.Sweep(prefix)
	fmt.Fprintf(out, "removed %d namespaces with prefix %q\n", len(removed), prefix)
	return err
}

func up(out io.Writer, binDir string, hold time.Duration) (err error) {
	bins := lab.Binaries{Fastpathd: filepath.Join(binDir, "fastpathd"), Slowpathd: filepath.Join(binDir, "slowpathd")}
	for _, b := range []string{bins.Fastpathd, bins.Slowpathd} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%w (build them first: go tool task build)", err)
		}
	}
	if removed, _ := lab.Sweep(labPrefix); len(removed) > 0 {
		fmt.Fprintf(out, "removed %d namespaces left by an earlier lab\n", len(removed))
	}
	ctx, stop := daemon.SignalContext()
	defer stop()
	if hold > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, hold)
		defer cancel()
	}

	l, err := lab.New(labPrefix)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "palisade-lab-")
	if err != nil {
		return err
	}
	bpffs, unmount, err := lab.MountBPFFS()
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	defer func() {
		cerr := l.Close()
		// Unmounting the lab's own bpffs releases every program, link and
		// map its fastpathd pinned.
		cerr = errors.Join(cerr, unmount())
		_ = os.RemoveAll(dir)
		if cerr != nil {
			err = errors.Join(err, cerr)
			return
		}
		fmt.Fprintln(out, "lab down: every namespace, link, process and file removed")
	}()

	site, err := l.Site("esx1", 1)
	if err != nil {
		return err
	}
	logs := &prefixWriter{out: out}
	run, err := l.StartFastpathd(site, bins, dir, bpffs, logs.named("fastpathd@esx1"))
	if err != nil {
		return err
	}
	rules, config := filepath.Join(dir, "lab.rules"), filepath.Join(dir, "lab.yaml")
	if err := os.WriteFile(rules, labRules, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(config, labConfig, 0o600); err != nil {
		return err
	}
	if _, err := l.StartSlowpathd(run, 0, bins.Slowpathd, logs.named("slowpathd@appliance"), "--rules", rules, "--config", config); err != nil {
		return err
	}
	if err := waitBound(ctx, run.FastpathdSock, 10*time.Second); err != nil {
		return err
	}
	demo, err := protectGuest(l, site, run, bins)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n== lab up: host %s (vmkernel 169.254.1.1) and appliance %s (169.254.1.10) ==\n",
		site.Host.Name, site.Appliances[0].Name)
	for _, s := range []struct{ bin, sock string }{{bins.Fastpathd, run.FastpathdSock}, {bins.Slowpathd, run.SlowpathdSock(0)}} {
		st, err := exec.Command(s.bin, "status", "--control-socket", s.sock).CombinedOutput()
		fmt.Fprintf(out, "\n$ %s status\n%s", filepath.Base(s.bin), st)
		if err != nil {
			return fmt.Errorf("%s status: %w", filepath.Base(s.bin), err)
		}
	}
	fmt.Fprint(out, demo)
	fmt.Fprintf(out, "\nTry: %s stats web1 --control-socket %s\n", bins.Fastpathd, run.FastpathdSock)
	if hold > 0 {
		fmt.Fprintf(out, "Tearing down in %s (or Ctrl-C).\n", hold)
	} else {
		fmt.Fprintln(out, "Press Ctrl-C to tear everything down.")
	}
	<-ctx.Done()
	fmt.Fprintln(out, "\ntearing down...")
	return nil
}

//go:embed policies/web.json
var webPolicy []byte

//go:embed rules/lab.rules
var labRules []byte

//go:embed rules/lab.yaml
var labConfig []byte

// protectGuest plugs a guest (web1, 198.51.100.10, serving HTTP on port 80
// and something on 22) and a peer into the vSwitch, protects web1 with
// policies/web.json through fastpathd's CLI (its web traffic goes through the
// appliance's IPS), and shows a request served, an attack dropped by the
// IPS, and a connection dropped by the firewall.
func protectGuest(l *lab.Lab, site *lab.Site, run *lab.HostRun, bins lab.Binaries) (string, error) {
	guest, err := l.Endpoint(site, "web1", "vnic-web1", 10, nil)
	if err != nil {
		return "", err
	}
	peer, err := l.Endpoint(site, "peer", "peer0", 20, nil)
	if err != nil {
		return "", err
	}
	for _, port := range []string{"80", "22"} {
		ln, err := guest.NS.Listen("tcp", "[::]:"+port)
		if err != nil {
			return "", err
		}
		go lab.AcceptLoop(ln, func(c net.Conn) {
			if line, err := bufio.NewReader(c).ReadString('\n'); err == nil {
				fmt.Fprintf(c, "HTTP/1.1 200 OK from web1:%s for %s", port, line)
			}
		})
	}
	pol := filepath.Join(run.Dir, "web.json")
	if err := os.WriteFile(pol, webPolicy, 0o600); err != nil {
		return "", err
	}
	var b strings.Builder
	cli := func(args ...string) error {
		args = append(args, "--control-socket", run.FastpathdSock)
		out, err := exec.Command(bins.Fastpathd, args...).CombinedOutput()
		fmt.Fprintf(&b, "\n$ fastpathd %s\n%s", strings.Join(args[:len(args)-2], " "), out)
		return err
	}
	if err := cli("activate", "web1", "--vnic", "vnic-web1", "--policy", pol); err != nil {
		return b.String(), err
	}
	for _, try := range []struct{ port, request string }{
		{"80", "GET /index.html HTTP/1.1"},
		{"80", "GET /download?file=../../etc/passwd HTTP/1.1"},
		{"22", "SSH-2.0-lab"},
	} {
		fmt.Fprintf(&b, "\npeer -> web1:%s %q: %s\n", try.port, try.request, ask(peer, try.port, try.request))
	}
	time.Sleep(1100 * time.Millisecond) // events are folded per second
	if err := cli("stats", "web1"); err != nil {
		return b.String(), err
	}
	if err := cli("inspection"); err != nil {
		return b.String(), err
	}
	err = cli("events", "--guest", "web1")
	return b.String(), err
}

// ask sends one request line from the peer and says what came of it.
func ask(peer *lab.Endpoint, port, request string) string {
	c, err := peer.NS.Dial(&net.Dialer{Timeout: time.Second}, "tcp", "198.51.100.10:"+port)
	if err != nil {
		return fmt.Sprintf("%v (dropped by the fast path)", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c, "%s\r\nHost: web1.lab\r\n\r\n", request)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Sprintf("no answer: %v (dropped by the appliance's IPS)", err)
	}
	return strings.TrimSpace(line)
}

func waitBound(ctx context.Context, sock string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	c := localapi.NewClient(sock)
	for {
		var st channel.BindingStatus
		err := c.Do(ctx, "GET", "/v1/status", nil, &st)
		if err == nil && st.State == channel.StateBound {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("slow path did not bind within %s (last: %v %s)", within, err, st.LastError)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// prefixWriter interleaves the daemons' logs line by line, each tagged.
type prefixWriter struct {
	mu  sync.Mutex
	out io.Writer
}

func (p *prefixWriter) named(name string) io.Writer {
	pr, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.mu.Lock()
			fmt.Fprintf(p.out, "[%s] %s\n", name, strings.TrimRight(sc.Text(), "\r"))
			p.mu.Unlock()
		}
	}()
	return lineWriter{pw}
}

type lineWriter struct{ w io.Writer }

func (l lineWriter) Write(b []byte) (int, error) {
	if _, err := l.w.Write(bytes.Clone(b)); err != nil {
		return 0, err
	}
	return len(b), nil
}
