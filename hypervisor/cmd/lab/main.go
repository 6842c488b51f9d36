package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
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
	"github.com/palisade/palisade/hypervisor/daemon"
	"github.com/palisade/palisade/hypervisor/lab"
	"github.com/palisade/palisade/hypervisor/lab/wait"
	"github.com/palisade/palisade/hypervisor/localapi"
)

// labPrefix names every namespace the lab command creates; `lab down` (and
// the next `lab`) removes them, also after a crash.
const labPrefix = "pallab"

// sessionName is the lock (and temporary directory) of a lab whose
// namespaces start with prefix: one lab of a prefix runs at a time.
func sessionName(prefix string) string {
	if prefix == labPrefix {
		return "palisade-lab"
	}
	return "palisade-" + prefix
}

func main() {
	root := daemon.RootCommand("lab", "Palisade lab: a host, an appliance and their binding in network namespaces")
	var binDir, prefix string
	var hold time.Duration
	root.Flags().StringVar(&binDir, "bin-dir", "bin", "directory holding fastpathd and slowpathd")
	root.Flags().DurationVar(&hold, "for", 0, "tear down this long after the lab is up instead of waiting for Ctrl-C")
	root.PersistentFlags().StringVar(&prefix, "prefix", labPrefix, "name prefix of the lab's namespaces (tests use their own)")
	_ = root.PersistentFlags().MarkHidden("prefix")
	root.RunE = func(cmd *cobra.Command, _ []string) error { return up(cmd.OutOrStdout(), prefix, binDir, hold) }
	root.AddCommand(&cobra.Command{
		Use:   "down",
		Short: "remove what a killed lab left behind: namespaces, bpffs, files (refused while a lab runs)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return down(cmd.OutOrStdout(), prefix)
		},
	}, &cobra.Command{
		Use:   "sweep-tests",
		Short: "remove what killed test processes left behind (namespaces, bpffs, directories); live ones' stay",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lab.SweepTests(cmd.OutOrStdout())
		},
	})
	daemon.Main(root)
}

func down(out io.Writer, prefix string) error {
	if err := lab.Cleanup(sessionName(prefix), prefix+"-", out); err != nil {
		return err
	}
	fmt.Fprintln(out, "lab down: nothing of a lab is left")
	return nil
}

func up(out io.Writer, prefix, binDir string, hold time.Duration) (err error) {
	bins := lab.Binaries{Fastpathd: filepath.Join(binDir, "fastpathd"), Slowpathd: filepath.Join(binDir, "slowpathd")}
	for _, b := range []string{bins.Fastpathd, bins.Slowpathd} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%w (build them first: go tool task build)", err)
		}
	}
	// The session's lock keeps a second lab of this prefix out, and it
	// removes what a killed one left.
	sess, err := lab.StartSession(sessionName(prefix), prefix+"-", out)
	if err != nil {
		return err
	}
	ctx, stop := daemon.SignalContext()
	defer stop()

	l, err := lab.New(prefix)
	if err != nil {
		return errors.Join(err, sess.Close())
	}
	dir, bpffs := sess.Dir, sess.BPFFS
	defer func() {
		cerr := l.Close()
		// Unmounting the lab's own bpffs releases every program, link and
		// map its fastpathd pinned; the directory holds the host's secret.
		cerr = errors.Join(cerr, sess.Close())
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
	if err := waitBound(ctx, run.FastpathdSock, wait.Limit); err != nil {
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
	// --for counts from here, once the lab is up: however long the start
	// took on a loaded machine, the lab is shown for as long as asked.
	var held <-chan time.Time
	if hold > 0 {
		fmt.Fprintf(out, "Tearing down in %s (or Ctrl-C).\n", hold)
		t := time.NewTimer(hold)
		defer t.Stop()
		held = t.C
	} else {
		fmt.Fprintln(out, "Press Ctrl-C to tear everything down.")
	}
	select {
	case <-ctx.Done():
	case <-held:
	}
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
	if err := waitDemoEvents(bins.Fastpathd, run.FastpathdSock); err != nil {
		return b.String(), err
	}
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

// waitDemoEvents waits until web1's event history holds what the demo did:
// the firewall's deny of port 22 (the datapath's events are folded per
// second) and the IPS's block (its alert comes back over the binding).
func waitDemoEvents(fastpathd, sock string) error {
	return wait.Until(wait.Limit, func() error {
		out, err := exec.Command(fastpathd, "events", "--guest", "web1", "--json", "--control-socket", sock).Output()
		if err != nil {
			return fmt.Errorf("fastpathd events: %w", err)
		}
		var recs []struct {
			Kind    string `json:"kind"`
			Dport   uint16 `json:"dst_port"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal(out, &recs); err != nil {
			return fmt.Errorf("fastpathd events: %w", err)
		}
		var deny, block bool
		for _, r := range recs {
			deny = deny || (r.Kind == "deny" && r.Dport == 22)
			block = block || (r.Kind == "alert" && strings.HasPrefix(r.Message, "blocked: "))
		}
		if !deny || !block {
			return fmt.Errorf("events of web1: deny of port 22 %v, IPS block %v", deny, block)
		}
		return nil
	})
}

func waitBound(ctx context.Context, sock string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	c := localapi.NewClient(sock)
	err := wait.Poll(ctx, func(ctx context.Context) error {
		var st channel.BindingStatus
		if err := c.Do(ctx, "GET", "/v1/status", nil, &st); err != nil {
			return err
		}
		if st.State != channel.StateBound {
			return fmt.Errorf("%s: %s", st.State, st.LastError)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("slow path did not bind within %s: %w", within, err)
	}
	return nil
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
		// A line too long for the scanner ends it: the rest is dropped, but
		// the pipe is still read, or the daemon's writes would block.
		if err := sc.Err(); err != nil {
			p.mu.Lock()
			fmt.Fprintf(p.out, "[%s] (log stopped: %v)\n", name, err)
			p.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, pr)
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
