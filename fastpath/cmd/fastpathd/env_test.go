package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/palisade/palisade/fastpath/control"
	"github.com/palisade/palisade/fastpath/policy"
	"github.com/palisade/palisade/hypervisor/lab"
	"github.com/palisade/palisade/hypervisor/lab/wait"
)

var bins lab.Binaries

// How long a connection or request is given: one that must succeed gets as
// long as only a broken path takes; one that must not gets a moment (a slow
// machine can only make that pass).
const (
	mustAnswer = wait.Limit
	noAnswer   = 700 * time.Millisecond
)

func TestMain(m *testing.M) { os.Exit(lab.RunWithBinaries(m, &bins)) }

// env is one lab host running the real fastpathd, a guest "web" (198.51.100.10)
// on vNIC vnic-web and an unprotected peer (198.51.100.20) on the same vSwitch.
type env struct {
	t      *testing.T
	lab    *lab.Lab
	site   *lab.Site
	run    *lab.HostRun
	web    *lab.Endpoint
	peer   *lab.Endpoint
	api    *control.Client
	output *syncBuf
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newEnv(t *testing.T, extra ...string) *env {
	t.Helper()
	return newEnvBefore(t, nil, extra...)
}

// newEnvBefore is newEnv with a hook that runs in the host namespace's
// setup before fastpathd is installed.
func newEnvBefore(t *testing.T, before func(host *lab.Namespace), extra ...string) *env {
	t.Helper()
	l := lab.ForTest(t)
	site, err := l.Site("esx", 1) // one appliance, for tests that start slowpathd
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, lab: l, site: site, output: &syncBuf{}}
	if e.web, err = l.Endpoint(site, "web", "vnic-web", 10, nil); err != nil {
		t.Fatal(err)
	}
	if e.peer, err = l.Endpoint(site, "peer", "peer0", 20, nil); err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(site.Host)
	}
	dir := lab.TempDirForTest(t) // short (socket paths) and swept if the run is killed
	if e.run, err = l.StartFastpathd(site, bins, dir, lab.BPFFSForTest(t), e.output, append([]string{"--sweep-every", "500ms"}, extra...)...); err != nil {
		t.Fatal(err)
	}
	e.api = control.NewClient(e.run.FastpathdSock)
	e.waitUp()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("fastpathd output:\n%s", e.output.String())
		}
	})
	return e
}

// startSlowpathd binds the site's appliance and waits until it is bound.
func (e *env) startSlowpathd(args ...string) *lab.Process {
	e.t.Helper()
	out := &syncBuf{}
	p, err := e.lab.StartSlowpathd(e.run, 0, bins.Slowpathd, out, args...)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait.Limit)
	defer cancel()
	if err := p.WaitOutput(ctx, "bound to fast path"); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// waitUp waits for fastpathd's control socket to answer.
func (e *env) waitUp() {
	e.t.Helper()
	wait.ForErr(e.t, "fastpathd up", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), wait.Limit)
		defer cancel()
		_, err := e.api.ListGuests(ctx)
		return err
	})
}

// cli runs the fastpathd binary's operator commands against this host.
func (e *env) cli(args ...string) (string, error) {
	args = append(args, "--control-socket", e.run.FastpathdSock)
	out, err := exec.Command(bins.Fastpathd, args...).CombinedOutput()
	return string(out), err
}

func (e *env) policyFile(p string) string {
	e.t.Helper()
	f, err := os.CreateTemp("", "policy-*.json")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { os.Remove(f.Name()) })
	if _, err := f.WriteString(p); err != nil {
		e.t.Fatal(err)
	}
	f.Close()
	return f.Name()
}

func (e *env) activate(p string) {
	e.t.Helper()
	if out, err := e.cli("activate", "web", "--vnic", "vnic-web", "--policy", e.policyFile(p)); err != nil {
		e.t.Fatalf("activate: %v\n%s", err, out)
	}
}

func mustPolicy(t *testing.T, js string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// echoServer echoes every line on TCP addr inside ns until the test ends.
func echoServer(t *testing.T, ns *lab.Namespace, addr string) {
	t.Helper()
	ln, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go lab.AcceptLoop(ln, func(c net.Conn) { _, _ = io.Copy(c, c) })
}

// dial connects from ns; a filtered (dropped) SYN shows as a timeout.
func dial(ns *lab.Namespace, addr string, timeout time.Duration) (net.Conn, error) {
	return ns.Dial(&net.Dialer{Timeout: timeout}, "tcp", addr)
}

// roundTrip writes a line and reads it back.
func roundTrip(c net.Conn, msg string) error { return roundTripWithin(c, msg, mustAnswer) }

// roundTripWithin is roundTrip giving up after limit.
func roundTripWithin(c net.Conn, msg string, limit time.Duration) error {
	if err := c.SetDeadline(time.Now().Add(limit)); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(c, msg); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(got) != msg {
		return fmt.Errorf("echo %q, sent %q", got, msg)
	}
	return nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (e *env) stats() map[string]any {
	e.t.Helper()
	out, err := e.cli("stats", "web", "--json")
	if err != nil {
		e.t.Fatalf("stats: %v\n%s", err, out)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		e.t.Fatal(err)
	}
	return m
}

func counter(m map[string]any, group, name string) uint64 {
	g, _ := m[group].(map[string]any)
	v, _ := g[name].(float64)
	return uint64(v)
}
