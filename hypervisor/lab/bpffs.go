package lab

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// MountBPFFS mounts a new, private BPF filesystem instance on a fresh
// temporary directory. Unmounting it releases every object pinned there, so
// nothing a lab or test pinned can outlive it. The mount is made in the
// current mount namespace; processes started later with `ip netns exec`
// (which copies the mount table) see it too.
func MountBPFFS() (dir string, unmount func() error, err error) {
	dir, err = os.MkdirTemp("", "palisade-bpffs-")
	if err != nil {
		return "", nil, err
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		os.Remove(dir)
		return "", nil, fmt.Errorf("mount bpffs on %s: %w", dir, err)
	}
	return dir, func() error {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount bpffs %s: %w", dir, err)
		}
		return os.Remove(dir)
	}, nil
}

// BPFFSForTest is MountBPFFS, unmounted when t ends.
func BPFFSForTest(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a BPF filesystem")
	}
	dir, unmount, err := MountBPFFS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unmount(); err != nil {
			t.Errorf("bpffs cleanup: %v", err)
		}
	})
	return dir
}
