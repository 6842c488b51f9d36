package lab

import (
	"fmt"
	"os"
	"sync/atomic"
	"testing"
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
