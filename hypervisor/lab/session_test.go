package lab

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sessionForTest is a session name of this test process, its lock file
// removed when t ends.
func sessionForTest(t *testing.T, what string) string {
	t.Helper()
	NeedRoot(t, "to mount a BPF filesystem")
	name := testTempPrefix() + what
	t.Cleanup(func() { os.Remove(filepath.Join(LockDir, name+".lock")) })
	return name
}

// TestSessionExcludesAndCleansUpAfterAKilledRun: a second session waits for
// none (it fails), and a session after a killed one unmounts its bpffs and
// removes its directory and namespaces.
func TestSessionExcludesAndCleansUpAfterAKilledRun(t *testing.T) {
	name := sessionForTest(t, "session")
	prefix := TestName() + "-sess-"
	first, err := StartSession(name, prefix, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := StartSession(name, prefix, io.Discard); err == nil {
		s.Close()
		t.Fatal("a second session started while the first holds the lock")
	} else if want := fmt.Sprintf("already running (pid %d holds", os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Fatalf("second session: %v, want %q", err, want)
	}
	if err := Cleanup(name, prefix, io.Discard); err == nil {
		t.Fatal("Cleanup ran while a session holds the lock")
	}
	l, err := New(strings.TrimSuffix(prefix, "-"))
	if err != nil {
		t.Fatal(err)
	}
	ns, err := l.Namespace("left")
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	first.lock.Close() // killed: the lock goes; the mount, the directory and the namespace stay
	var log bytes.Buffer
	second, err := StartSession(name, prefix, &log)
	if err != nil {
		unmountBPFFS(first.BPFFS)
		l.Close()
		t.Fatal(err)
	}
	if isBPFFS(first.BPFFS) {
		unmountBPFFS(first.BPFFS)
		t.Errorf("the killed session's bpffs %s is still mounted", first.BPFFS)
	}
	for _, p := range []string{first.BPFFS, first.Dir, filepath.Join(netnsDir, ns.Name)} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived the next session: %v", p, err)
		}
	}
	t.Log(log.String())
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	if isBPFFS(second.BPFFS) {
		t.Errorf("bpffs %s still mounted after Close", second.BPFFS)
	}
	if _, err := os.Stat(second.Dir); !os.IsNotExist(err) {
		t.Errorf("directory %s left after Close: %v", second.Dir, err)
	}
}

// TestStaleRecordOutsideThePatternIsRefused: a lock file that names
// anything but the session's own kind of temporary directory (the host's
// bpffs, a link to it, another directory, a path with dot-dots) is never
// unmounted or removed.
func TestStaleRecordOutsideThePatternIsRefused(t *testing.T) {
	name := sessionForTest(t, "refuse")
	tmp := filepath.Clean(os.TempDir())
	mkdir := func(pattern string) string {
		d, err := os.MkdirTemp("", pattern)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		return d
	}
	link := mkdir("palisade-bpffs-") + "-link"
	if err := os.Symlink("/sys/fs/bpf", link); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(link)
	other := TempDirForTest(t) // a directory of root's, but not the session's pattern
	bpffsDir, sessDir := mkdir("palisade-bpffs-"), mkdir(name+"-")
	cases := []struct{ bpffs, dir string }{
		{"/sys/fs/bpf", "/etc"},
		{link, other},
		{tmp + "/./" + filepath.Base(bpffsDir), tmp + "/../" + filepath.Base(tmp) + "/" + filepath.Base(sessDir)},
	}
	for _, c := range cases {
		lock, err := lockSession(name)
		if err != nil {
			t.Fatal(err)
		}
		s := &Session{lock: lock, Dir: c.dir, BPFFS: c.bpffs}
		if err := s.record(); err != nil {
			t.Fatal(err)
		}
		lock.Close()
		var log bytes.Buffer
		if err := Cleanup(name, TestName()+"-", &log); err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if n := strings.Count(log.String(), "refusing to remove"); n != 2 {
			t.Errorf("%+v: %d refused, want 2:\n%s", c, n, log.String())
		}
		t.Log(log.String())
		for _, p := range []string{c.bpffs, c.dir} {
			if _, err := os.Lstat(p); err != nil {
				t.Errorf("%s was removed: %v", p, err)
			}
		}
	}
}

// TestSweepTestsRemovesOnlyExitedProcesses: a dead test process's bpffs and
// directory are removed, a live one's stay.
func TestSweepTestsRemovesOnlyExitedProcesses(t *testing.T) {
	NeedRoot(t, "to mount a BPF filesystem")
	deadBPFFS, unmount, err := mountBPFFS(fmt.Sprintf("palisade-%s%d-bpffs-*", TestPrefix, deadPID(t)))
	if err != nil {
		t.Fatal(err)
	}
	deadDir, err := os.MkdirTemp("", fmt.Sprintf("palisade-%s%d-", TestPrefix, deadPID(t)))
	if err != nil {
		unmount()
		t.Fatal(err)
	}
	liveBPFFS, liveDir := BPFFSForTest(t), TempDirForTest(t)
	var log bytes.Buffer
	if err := SweepTests(&log); err != nil {
		unmount()
		t.Fatal(err)
	}
	t.Log(log.String())
	if isBPFFS(deadBPFFS) {
		unmount()
		t.Errorf("a dead process's bpffs %s is still mounted", deadBPFFS)
	}
	for _, p := range []string{deadBPFFS, deadDir} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived the sweep: %v", p, err)
		}
	}
	if !isBPFFS(liveBPFFS) {
		t.Errorf("a live process's bpffs %s was unmounted", liveBPFFS)
	}
	if _, err := os.Stat(liveDir); err != nil {
		t.Errorf("a live process's directory was removed: %v", err)
	}
}
