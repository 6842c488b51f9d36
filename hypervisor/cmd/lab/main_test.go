package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/palisade/palisade/hypervisor/lab"
	"github.com/palisade/palisade/hypervisor/lab/wait"
)

// TestLabUpAndDown runs the lab command as `go tool task lab` does, for two
// seconds, and checks it showed a binding and removed everything.
func TestLabUpAndDown(t *testing.T) {
	lab.NeedRoot(t, "to create network namespaces")
	root, err := lab.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := lab.BuildBinaries(ctx, root, dir, ""); err != nil {
		t.Fatal(err)
	}
	labBin := filepath.Join(dir, "lab")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", labBin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build lab: %v\n%s", err, out)
	}
	// A prefix of this test process's own (a developer's lab may be
	// running), which sweep-tests cleans if the test is killed; the lab
	// tears down if the test dies.
	prefix := lab.TestName() + "lab"
	t.Cleanup(func() { os.Remove(filepath.Join(lab.LockDir, sessionName(prefix)+".lock")) })
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, labBin, "--bin-dir", dir, "--for", "2s", "--prefix", prefix)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Run(); err != nil {
		t.Fatalf("lab: %v\n%s", err, out.String())
	}
	for _, want := range []string{"== lab up", "$ fastpathd status", "state              bound",
		"169.254.1.1:2222 <-> 169.254.1.10:", "web1 protected on vnic-web1",
		`"GET /index.html HTTP/1.1": HTTP/1.1 200 OK from web1:80`,
		`"GET /download?file=../../etc/passwd HTTP/1.1": no answer`, "(dropped by the appliance's IPS)",
		"dial tcp 198.51.100.10:22: i/o timeout (dropped by the fast path)", "drop: default_deny",
		"flows            offloaded 0, blocked 1", "$ fastpathd events --guest web1",
		"blocked: LAB path traversal to /etc/passwd", "lab down: every namespace"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("lab output lacks %q:\n%s", want, out.String())
		}
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			t.Errorf("namespace %s left behind", e.Name())
		}
	}
	if m, err := os.ReadFile("/proc/self/mounts"); err != nil || strings.Contains(string(m), sessionName(prefix)) {
		t.Errorf("a mount of the lab is left: %v\n%s", err, m)
	}
	if left, _ := filepath.Glob(filepath.Join(os.TempDir(), sessionName(prefix)+"-*")); len(left) > 0 {
		t.Errorf("files of the lab left: %v", left)
	}
}

// TestDownRefusesWhileALabRuns: `lab down` never removes a running lab's
// namespaces; once it is gone it removes what it left.
func TestDownRefusesWhileALabRuns(t *testing.T) {
	lab.NeedRoot(t, "to create network namespaces")
	prefix := lab.TestName() + "lab"
	t.Cleanup(func() { os.Remove(filepath.Join(lab.LockDir, sessionName(prefix)+".lock")) })
	sess, err := lab.StartSession(sessionName(prefix), prefix+"-", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	l, err := lab.New(prefix)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := l.Namespace("esx1")
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := down(&out, prefix); err == nil || !strings.Contains(err.Error(), "is already running (pid") {
		t.Errorf("down while the lab runs: %v", err)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", ns.Name)); err != nil {
		t.Fatalf("down removed a running lab's namespace: %v", err)
	}
	if err := sess.Close(); err != nil { // the lab is killed: its namespace stays
		t.Fatal(err)
	}
	if err := down(&out, prefix); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", ns.Name)); !os.IsNotExist(err) {
		t.Errorf("down left %s: %v\n%s", ns.Name, err, out.String())
	}
	l.Close()
}

// TestLogLineTooLongDoesNotBlock: a daemon line longer than the scanner's
// buffer ends the tagging, but writes never block.
func TestLogLineTooLongDoesNotBlock(t *testing.T) {
	var out bytes.Buffer
	w := (&prefixWriter{out: &out}).named("d")
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Write([]byte("first\n"))
		w.Write(bytes.Repeat([]byte("x"), 100<<10))
		for i := 0; i < 100; i++ {
			w.Write([]byte("more\n"))
		}
	}()
	wait.For(t, "writes after a long line", func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	})
}
