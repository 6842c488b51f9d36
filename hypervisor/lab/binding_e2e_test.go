package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/hypervisor/lab/wait"
	"github.com/palisade/palisade/hypervisor/localapi"
)

// e2e starts fastpathd in a host namespace and slowpathd in its appliance,
// as real processes, and waits for the binding.
type e2e struct {
	lab *Lab
	run *HostRun
	app *Process
}

func startE2E(t *testing.T, appliances int, fastpathArgs ...string) *e2e {
	t.Helper()
	l := ForTest(t)
	site, err := l.Site("esx", appliances)
	if err != nil {
		t.Fatal(err)
	}
	run, err := l.StartFastpathd(site, bins, TempDirForTest(t), BPFFSForTest(t), nil, fastpathArgs...)
	if err != nil {
		t.Fatal(err)
	}
	waitOutput(t, run.Fastpathd, "fast path listening for slow path")
	return &e2e{lab: l, run: run}
}

func (e *e2e) startSlowpathd(t *testing.T, i int) *Process {
	t.Helper()
	p, err := e.lab.StartSlowpathd(e.run, i, bins.Slowpathd, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func status(t *testing.T, sock string) (channel.BindingStatus, error) {
	t.Helper()
	var st channel.BindingStatus
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := localapi.NewClient(sock).Do(ctx, "GET", "/v1/status", nil, &st)
	return st, err
}

// waitOutput waits until p printed substr.
func waitOutput(t *testing.T, p *Process, substr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait.Limit)
	defer cancel()
	if err := p.WaitOutput(ctx, substr); err != nil {
		t.Fatal(err)
	}
}

// waitBound waits until the daemon at sock is bound on a session other
// than notSession and returns its status and how long that took (for the
// log: how long is never asserted).
func waitBound(t *testing.T, sock string, notSession uint64) (channel.BindingStatus, time.Duration) {
	t.Helper()
	start := time.Now()
	var st channel.BindingStatus
	wait.ForErr(t, "bound", func() error {
		var err error
		if st, err = status(t, sock); err != nil {
			return err
		}
		if st.State != channel.StateBound || st.SessionID == notSession {
			return fmt.Errorf("%s, session %d, last error %q", st.State, st.SessionID, st.LastError)
		}
		return nil
	})
	return st, time.Since(start)
}

// waitUnbound waits until the daemon at sock is no longer bound.
func waitUnbound(t *testing.T, sock string) {
	t.Helper()
	wait.ForErr(t, "unbound", func() error {
		st, err := status(t, sock)
		if err == nil && st.State == channel.StateBound {
			err = fmt.Errorf("still bound (session %d)", st.SessionID)
		}
		return err
	})
}

func TestDaemonsBindAndReportStatus(t *testing.T) {
	e := startE2E(t, 1)
	e.startSlowpathd(t, 0)
	waitBound(t, e.run.FastpathdSock, 0)

	out, err := exec.Command(bins.Fastpathd, "status", "--require-bound", "--control-socket", e.run.FastpathdSock).CombinedOutput()
	if err != nil {
		t.Fatalf("fastpathd status: %v\n%s", err, out)
	}
	for _, want := range []string{"state", "bound", "169.254.1.1:2222 <-> 169.254.1.10:", "ESTABLISHED", "peer version", "0.1.0.0 (rev 1)", "daemon uptime"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("fastpathd status lacks %q:\n%s", want, out)
		}
	}
	out, err = exec.Command(bins.Slowpathd, "status", "--require-bound", "--control-socket", e.run.SlowpathdSock(0)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "169.254.1.10:") || !strings.Contains(string(out), "<-> 169.254.1.1:2222") {
		t.Fatalf("slowpathd status: %v\n%s", err, out)
	}
	for _, b := range []string{bins.Fastpathd, bins.Slowpathd} {
		out, err := exec.Command(b, "--version").Output()
		if err != nil || !strings.Contains(string(out), channel.Current().String()+" (protocol revision 1)") {
			t.Errorf("%s --version: %q %v", b, out, err)
		}
	}
}

// A killed slowpathd is detected at once, and a restarted one binds on its
// first attempt: no failed attempt, no backoff (which is what makes a
// restart rebind within a second; the log shows how long it took).
func TestKilledSlowpathIsDetectedAndRestartRebindsAtOnce(t *testing.T) {
	e := startE2E(t, 1)
	app := e.startSlowpathd(t, 0)
	first, _ := waitBound(t, e.run.FastpathdSock, 0)

	if err := app.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, e.run.Fastpathd, "slow path binding lost")
	<-app.Done()

	session := first.SessionID
	for i := 0; i < 3; i++ {
		waitUnbound(t, e.run.FastpathdSock)
		restarted := e.startSlowpathd(t, 0)
		st, took := waitBound(t, e.run.FastpathdSock, session)
		t.Logf("restart %d: slowpathd bound %s after exec", i+1, took.Round(time.Millisecond))
		session = st.SessionID
		own, _ := waitBound(t, e.run.SlowpathdSock(0), 0)
		if own.Bindings != 1 || own.LastError != "" {
			t.Fatalf("restart %d: slowpathd bound after %d bindings, last error %q: not on its first attempt", i+1, own.Bindings, own.LastError)
		}
		if err := restarted.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-restarted.Done()
	}
}

// A frozen slowpathd is declared dead by fastpathd's dead-peer timer (the
// reason names it), and recovers once it runs again.
func TestFrozenSlowpathIsDeclaredDeadThenRecovers(t *testing.T) {
	e := startE2E(t, 1)
	app := e.startSlowpathd(t, 0)
	first, _ := waitBound(t, e.run.FastpathdSock, 0)

	// SIGSTOP: the socket stays open but nothing answers, as with a hung VM.
	if err := app.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	waitUnbound(t, e.run.FastpathdSock)
	t.Logf("frozen slowpathd declared dead after %s (dead-after: 3s)", time.Since(frozen).Round(time.Millisecond))
	if !strings.Contains(e.run.Fastpathd.Output(), "peer dead: nothing received for 3s") {
		t.Fatalf("fastpathd log lacks the reason:\n%s", e.run.Fastpathd.Output())
	}
	if err := app.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitBound(t, e.run.FastpathdSock, first.SessionID)
}

func TestFastpathRestartIsRebound(t *testing.T) {
	e := startE2E(t, 1)
	app := e.startSlowpathd(t, 0)
	waitBound(t, e.run.FastpathdSock, 0)
	if err := e.run.Fastpathd.Stop(); err != nil {
		t.Fatal(err) // Stop fails if SIGTERM did not end it cleanly
	}
	if _, err := os.Stat(e.run.FastpathdSock); !os.IsNotExist(err) {
		t.Fatalf("control socket left behind after SIGTERM: %v", err)
	}
	waitOutput(t, app, "peer said goodbye: shutting down")
	if err := e.lab.RestartFastpathd(e.run, nil); err != nil {
		t.Fatal(err)
	}
	p := e.run.Fastpathd
	st, took := waitBound(t, e.run.FastpathdSock, 0)
	t.Logf("slowpathd rebound to a restarted fastpathd after %s", took.Round(time.Millisecond))
	if st.PeerAddr == "" {
		t.Fatal("no peer")
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
}

func TestDaemonRefusesRoutableBindAddress(t *testing.T) {
	e := startE2E(t, 0)
	p, err := e.lab.Start(e.run.Site.Host, "fastpathd-routable", nil, bins.Fastpathd, e.run.FastpathdArgs("--listen", "198.51.100.1:2222",
		"--control-socket", e.run.Dir+"/x.sock", "--host-id", "routable")...)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.ExitErr(); err == nil {
		t.Fatal("fastpathd accepted a routable bind address")
	}
	if !strings.Contains(p.Output(), "198.51.100.1 is not link-local") || !strings.Contains(p.Output(), "--allow-non-link-local") {
		t.Fatalf("unclear refusal:\n%s", p.Output())
	}
	// With the override it serves (on the namespace's loopback here).
	p, err = e.lab.Start(e.run.Site.Host, "fastpathd-override", nil, bins.Fastpathd, e.run.FastpathdArgs("--listen", "127.0.0.1:2222",
		"--allow-non-link-local", "--control-socket", e.run.Dir+"/y.sock", "--host-id", "override")...)
	if err != nil {
		t.Fatal(err)
	}
	waitOutput(t, p, "fast path listening")
}

func TestDaemonRefusesWeakSecretFile(t *testing.T) {
	e := startE2E(t, 0)
	if err := os.Chmod(e.run.SecretFile, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bins.Slowpathd, "--secret-file", e.run.SecretFile, "--control-socket", e.run.Dir+"/s.sock").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "group and others must have no access") {
		t.Fatalf("slowpathd with a world-readable secret: %v\n%s", err, out)
	}
}
