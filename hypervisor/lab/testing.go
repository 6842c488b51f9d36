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

// TestPrefix starts the name of every namespace a test lab creates, so
// `go tool task lab:sweep` can remove what a killed test run left.
const TestPrefix = "palt"

// ForTest returns a lab that is removed when t ends, whether it passed,
// failed or panicked. Without root (no way to create namespaces) it skips.
func ForTest(t testing.TB) *Lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces; run the suite as root (go tool task test)")
	}
	l, err := New(fmt.Sprintf("%s%d-%d", TestPrefix, os.Getpid()%100000, testLabs.Add(1)))
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
// tests (which then skip).
func RunWithBinaries(m *testing.M, bins *Binaries) int {
	if os.Geteuid() != 0 {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "palisade-bins-")
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
