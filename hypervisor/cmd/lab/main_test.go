package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/palisade/palisade/hypervisor/lab"
)

// TestLabUpAndDown runs the lab command as `go tool task lab` does, for two
// seconds, and checks it showed a binding and removed everything.
func TestLabUpAndDown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
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
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, labBin, "--bin-dir", dir, "--for", "2s")
	cmd.Stdout, cmd.Stderr = &out, &out
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
		if strings.HasPrefix(e.Name(), labPrefix) {
			t.Errorf("namespace %s left behind", e.Name())
		}
	}
}
