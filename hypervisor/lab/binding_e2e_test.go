package lab

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/palisade/palisade/fastpath/channel"
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := run.Fastpathd.WaitOutput(ctx, "fast path listening for slow path"); err != nil {
		t.Fatal(err)
	}
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

// waitBound polls fastpathd's status until a binding other than notSession
// is up and returns it with the time it took.
func waitBound(t *testing.T, sock string, notSession uint64, within time.Duration) (channel.BindingStatus, time.Duration) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if st, err := status(t, sock); err == nil && st.State == channel.StateBound && st.SessionID != notSession {
			return st, time.Since(start)
		}
		time.Sleep(2 * time.Millisecond)
	}
	st, err := status(t, sock)
	t.Fatalf("not bound within %s: %+v %v", within, st, err)
	return st, 0
}

func TestDaemonsBindAndReportStatus(t *testing.T) {
	e := startE2E(t, 1)
	e.startSlowpathd(t, 0)
	waitBound(t, e.run.FastpathdSock, 0, 5*time.Second)

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

func TestKilledSlowpathIsDetectedAndRestartRebindsWithinOneSecond(t *testing.T) {
	e := startE2E(t, 1)
	app := e.startSlowpathd(t, 0)
	first, _ := waitBound(t, e.run.FastpathdSock, 0, 5*time.Second)

	if err := app.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.run.Fastpathd.WaitOutput(ctx, "slow path binding lost"); err != nil {
		t.Fatal(err)
	}
	<-app.Done()

	worst := time.Duration(0)
	session := first.SessionID
	for i := 0; i < 3; i++ {
		restarted := e.startSlowpathd(t, 0)
		st, took := waitBound(t, e.run.FastpathdSock, session, 3*time.Second)
		t.Logf("restart %d: slowpathd bound %s after exec", i+1, took.Round(time.Millisecond))
		worst = max(worst, took)
		session = st.SessionID
		if err := restarted.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-restarted.Done()
	}
	if worst >= time.Second {
		t.Fatalf("a restarted slowpathd took %s to bind; must be under 1s", worst)
	}
}

func TestFrozenSlowpathIsDeclaredDeadThenRecovers(t *testing.T) {
	e := startE2E(t, 1)
	app := e.startSlowpathd(t, 0)
	first, _ := waitBound(t, e.run.FastpathdSock, 0, 5*time.Second)

	// SIGSTOP: the socket stays open but nothing answers, as with a hung VM.
	if err := app.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	for {
		st, err := status(t, e.run.FastpathdSock)
		if err == nil && st.State != channel.StateBound {
			break
		}
		if time.Since(frozen) > 4*time.Second {
			t.Fatalf("frozen slow path still bound after %s", time.Since(frozen))
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(frozen)
	t.Logf("frozen slowpathd declared dead after %s (bound: 3s)", took.Round(time.Millisecond))
	if took > 3500*time.Millisecond {
		t.Fatalf("dead-peer detection took %s", took)
	}
	if !strings.Contains(e.run.Fastpathd.Output(), "peer dead: nothing received for 3s") {
		t.Fatalf("fastpathd log lacks the reason:\n%s", e.run.Fastpathd.Output())
	}
	if err := app.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitBound(t, e.run.FastpathdSock, first.SessionID, 8*time.Second)
}

func TestFastpathRestartIsRebound(t *testing.T) {
	e := startE2E(t, 1)
	app := e.startSlowpathd(t, 0)
	waitBound(t, e.run.FastpathdSock, 0, 5*time.Second)
	if err := e.run.Fastpathd.Stop(); err != nil {
		t.Fatal(err) // Stop fails if SIGTERM did not end it cleanly
	}
	if _, err := os.Stat(e.run.FastpathdSock); !os.IsNotExist(err) {
		t.Fatalf("control socket left behind after SIGTERM: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := app.WaitOutput(ctx, "peer said goodbye: shutting down"); err != nil {
		t.Fatal(err)
	}
	if err := e.lab.RestartFastpathd(e.run, nil); err != nil {
		t.Fatal(err)
	}
	p := e.run.Fastpathd
	st, took := waitBound(t, e.run.FastpathdSock, 0, 8*time.Second)
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
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.WaitOutput(ctx, "fast path listening"); err != nil {
		t.Fatal(err)
	}
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
