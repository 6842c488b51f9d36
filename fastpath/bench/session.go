package bench

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/palisade/palisade/hypervisor/lab"
)

// Session is one benchmark run's hold on the machine: a lock that keeps a
// second run of the same benchmark out (runs would disturb each other, and
// each sweeps the other's namespaces), what a killed run left removed, and a
// private bpffs, whose path the lock file records so that the next run can
// unmount it if this one is killed.
type Session struct {
	BPFFS   string
	lock    *os.File
	unmount func() error
}

// StartSession takes the lock named name (in the temporary directory),
// deletes the namespaces whose names start with nsPrefix and the bpffs a
// killed run left, reporting them to log, and mounts a fresh bpffs.
func StartSession(name, nsPrefix string, log io.Writer) (s *Session, err error) {
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), name+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("another %s is running (benchmarks would disturb each other)", name)
	}
	defer func() {
		if err != nil {
			lock.Close()
		}
	}()
	if removed, err := lab.Sweep(nsPrefix); err != nil {
		return nil, fmt.Errorf("removing a killed run's namespaces: %w", err)
	} else if len(removed) > 0 {
		fmt.Fprintf(log, "removed namespaces a killed run left: %v\n", removed)
	}
	if err := unmountStale(lock, log); err != nil {
		return nil, err
	}
	dir, unmount, err := lab.MountBPFFS()
	if err != nil {
		return nil, err
	}
	if _, err := lock.WriteAt([]byte(dir), 0); err != nil {
		return nil, errors.Join(err, unmount())
	}
	return &Session{BPFFS: dir, lock: lock, unmount: unmount}, nil
}

// unmountStale unmounts the bpffs a killed run left, as the lock file names
// it (with the lock held, no run is using it).
func unmountStale(lock *os.File, log io.Writer) error {
	b, err := io.ReadAll(io.NewSectionReader(lock, 0, 4096))
	if err != nil {
		return err
	}
	dir := strings.TrimSpace(string(b))
	var st unix.Statfs_t
	if dir == "" || unix.Statfs(dir, &st) != nil || st.Type != unix.BPF_FS_MAGIC {
		return lock.Truncate(0)
	}
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount the bpffs a killed run left at %s: %w", dir, err)
	}
	fmt.Fprintf(log, "unmounted the bpffs a killed run left at %s\n", dir)
	if err := os.Remove(dir); err != nil {
		return err
	}
	return lock.Truncate(0)
}

// Close unmounts the bpffs and releases the lock.
func (s *Session) Close() error {
	err := s.unmount()
	if err == nil {
		err = s.lock.Truncate(0)
	}
	return errors.Join(err, s.lock.Close())
}
