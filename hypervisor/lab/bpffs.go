package lab

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// bpffsPattern names the directories MountBPFFS and sessions mount on.
const bpffsPattern = "palisade-bpffs-*"

// MountBPFFS mounts a new, private BPF filesystem instance on a fresh
// temporary directory. Unmounting it releases every object pinned there, so
// nothing a lab or test pinned can outlive it. The mount is made in the
// current mount namespace, the one thing a lab adds outside its network
// namespaces; processes started later with `ip netns exec` (which copies
// the mount table) see it too.
func MountBPFFS() (dir string, unmount func() error, err error) {
	return mountBPFFS(bpffsPattern)
}

func mountBPFFS(pattern string) (dir string, unmount func() error, err error) {
	dir, err = os.MkdirTemp("", pattern)
	if err != nil {
		return "", nil, err
	}
	if err := mountBPFFSOn(dir); err != nil {
		os.Remove(dir)
		return "", nil, err
	}
	return dir, func() error { return unmountBPFFS(dir) }, nil
}

func mountBPFFSOn(dir string) error {
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs on %s: %w", dir, err)
	}
	return nil
}

// unmountBPFFS unmounts the bpffs on dir, never following a link, and
// removes the directory.
func unmountBPFFS(dir string) error {
	if err := unix.Unmount(dir, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
		return fmt.Errorf("unmount bpffs %s: %w", dir, err)
	}
	return os.Remove(dir)
}

// isBPFFS says whether a BPF filesystem is mounted on path.
func isBPFFS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

// BPFFSForTest is MountBPFFS, unmounted when t ends; its directory carries
// this process's pid, so sweep-tests unmounts it if the test is killed.
func BPFFSForTest(t testing.TB) string {
	t.Helper()
	NeedRoot(t, "to mount a BPF filesystem")
	dir, unmount, err := mountBPFFS(testTempPrefix() + "bpffs-*")
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
