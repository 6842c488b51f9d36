package lab

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// bins are the daemons built once for this package's end-to-end tests.
var bins Binaries

func TestMain(m *testing.M) {
	if os.Getenv("LAB_PANIC_NAMES") == "" && os.Geteuid() == 0 {
		dir, err := os.MkdirTemp("", "palisade-bins-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		root, err := ModuleRoot()
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			bins, err = BuildBinaries(ctx, root, dir, "")
			cancel()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "build daemons:", err)
			os.Exit(1)
		}
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}
