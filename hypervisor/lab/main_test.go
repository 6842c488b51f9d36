package lab

import (
	"os"
	"testing"
)

// bins are the daemons built once for this package's end-to-end tests.
var bins Binaries

func TestMain(m *testing.M) {
	if os.Getenv("LAB_PANIC_NAMES") != "" {
		os.Exit(m.Run()) // the panicking child of TestCleanupOnPanic needs no daemons
	}
	os.Exit(RunWithBinaries(m, &bins))
}
