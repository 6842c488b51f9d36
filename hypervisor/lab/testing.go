package lab

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

var testLabs atomic.Uint32

// TestPrefix starts the name of every namespace a test creates, followed by
// the test process's pid, so that `go run ./hypervisor/cmd/lab sweep-tests`
// (run after `go tool task test`) removes what a killed test process left,
// and only that.
const TestPrefix = "palt"

// TestName is a fresh namespace prefix for a test lab of this process:
// TestPrefix, the full pid and a counter (palt1234567-1).
func TestName() string {
	return fmt.Sprintf("%s%d-%d", TestPrefix, os.Getpid(), testLabs.Add(1))
}

// testTempPrefix starts the temporary directories of this test process
// (palisade-palt1234567-), which sweep-tests removes once it has exited.
func testTempPrefix() string {
	return fmt.Sprintf("palisade-%s%d-", TestPrefix, os.Getpid())
}

// TempDirForTest is a temporary directory removed when t ends, with a path
// short enough for unix socket names (t.TempDir embeds the test's name),
// that sweep-tests removes if the test process is killed.
func TempDirForTest(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", testTempPrefix())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// InCI says the suite runs in CI (CI=true), where every test must run.
func InCI() bool { return os.Getenv("CI") == "true" }

// NeedRoot skips t when the process is not root, with why (what needs it),
// except in CI: there a test that cannot run fails, so the suite never
// passes with a part of it unrun.
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if InCI() {
		t.Fatalf("needs root (%s), and CI=true: run the suite as root (go tool task test)", why)
	}
	t.Skipf("needs root (%s); run the suite as root (go tool task test)", why)
}

// ForTest returns a lab that is removed when t ends, whether it passed,
// failed or panicked. Without root (no way to create namespaces) it skips.
func ForTest(t testing.TB) *Lab {
	t.Helper()
	NeedRoot(t, "to create network namespaces")
	l, err := New(TestName())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab cleanup: %v", err)
		}
	})
	return l
}

// RunWithBinaries is the TestMain of packages whose tests run the daemons:
// as root it builds them once into a temporary directory (bins then names
// them), runs the tests, and removes them. Without root it only runs the
// tests (which then skip, or fail in CI).
func RunWithBinaries(m *testing.M, bins *Binaries) int {
	if os.Geteuid() != 0 {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", testTempPrefix()+"bins-")
	if err == nil {
		defer os.RemoveAll(dir)
		var root string
		if root, err = ModuleRoot(); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			*bins, err = BuildBinaries(ctx, root, dir, "")
			cancel()
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "build daemons:", err)
		return 1
	}
	return m.Run()
}

// AcceptLoop hands every connection ln accepts to handle, in its own
// goroutine, and closes it afterwards; it returns when ln is closed.
func AcceptLoop(ln net.Listener, handle func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			handle(c)
		}()
	}
}
