package lab

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// LockDir holds the sessions' lock files. Unlike the temporary directory,
// only root can write there, and a lock file names what its run must clean.
const LockDir = "/run/palisade"

// Session is one run's hold on the machine (a lab, a benchmark): an
// exclusive lock that keeps a second run of the same name out, what a
// killed run left removed, and the run's own temporary directory and
// private bpffs, which the lock file records so that the next run (or `lab
// down`) can remove them if this one is killed.
type Session struct {
	Name  string
	Dir   string // private temporary directory (Name-*), mode 0700
	BPFFS string // private BPF filesystem (see MountBPFFS)

	lock    *os.File
	mounted bool
}

// StartSession takes the lock named name (which starts with "palisade-"),
// failing at once if a live run holds it; removes what a killed run of that
// name left (the namespaces starting with nsPrefix, its bpffs and
// directory), reporting each to log; and creates a fresh directory and
// bpffs.
func StartSession(name, nsPrefix string, log io.Writer) (s *Session, err error) {
	lock, err := lockSession(name)
	if err != nil {
		return nil, err
	}
	s = &Session{Name: name, lock: lock}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()
	if err := cleanStale(lock, name, nsPrefix, log); err != nil {
		return nil, err
	}
	if s.Dir, err = os.MkdirTemp("", name+"-"); err != nil {
		return nil, err
	}
	if s.BPFFS, err = os.MkdirTemp("", bpffsPattern); err != nil {
		return nil, err
	}
	// Recorded before the mount: a run killed in between leaves nothing
	// the record does not name.
	if err := s.record(); err != nil {
		return nil, err
	}
	if err := mountBPFFSOn(s.BPFFS); err != nil {
		return nil, err
	}
	s.mounted = true
	return s, nil
}

// Cleanup removes what a killed run of name left, as StartSession does,
// without starting one. It refuses while a live run holds the lock.
func Cleanup(name, nsPrefix string, log io.Writer) error {
	lock, err := lockSession(name)
	if err != nil {
		return err
	}
	defer lock.Close()
	return cleanStale(lock, name, nsPrefix, log)
}

// Close unmounts the bpffs, removes the directory and releases the lock.
// The record stays if anything could not be removed, for the next run.
func (s *Session) Close() error {
	if s.lock == nil {
		return nil
	}
	var errs []error
	switch {
	case s.mounted:
		errs = append(errs, unmountBPFFS(s.BPFFS))
	case s.BPFFS != "":
		errs = append(errs, os.Remove(s.BPFFS))
	}
	if s.Dir != "" {
		errs = append(errs, os.RemoveAll(s.Dir))
	}
	if errors.Join(errs...) == nil {
		errs = append(errs, s.lock.Truncate(0))
	}
	errs = append(errs, s.lock.Close())
	s.lock = nil
	return errors.Join(errs...)
}

func (s *Session) record() error {
	text := fmt.Sprintf("pid %d\ndir %s\nbpffs %s\n", os.Getpid(), s.Dir, s.BPFFS)
	if err := s.lock.Truncate(0); err != nil {
		return err
	}
	_, err := s.lock.WriteAt([]byte(text), 0)
	return err
}

// lockSession opens and locks LockDir/name.lock.
func lockSession(name string) (*os.File, error) {
	if !strings.HasPrefix(name, "palisade-") || strings.ContainsAny(name, "/ ") {
		return nil, fmt.Errorf("lab: invalid session name %q", name)
	}
	if err := os.MkdirAll(LockDir, 0o700); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(LockDir); err != nil {
		return nil, err
	} else if st, ok := fi.Sys().(*syscall.Stat_t); !fi.IsDir() || !ok || st.Uid != 0 || fi.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("lab: %s must be a directory only root can write", LockDir)
	}
	path := filepath.Join(LockDir, name+".lock")
	lock, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder := "another process"
		if pid, err := strconv.Atoi(readRecord(lock)["pid"]); err == nil {
			holder = fmt.Sprintf("pid %d", pid)
		}
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s is already running (%s holds %s); stop it first", name, holder, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return lock, nil
}

// readRecord reads a lock file's "key value" lines.
func readRecord(lock *os.File) map[string]string {
	rec := map[string]string{}
	sc := bufio.NewScanner(io.NewSectionReader(lock, 0, 64<<10))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok {
			rec[k] = strings.TrimSpace(v)
		}
	}
	return rec
}

// cleanStale removes, with the lock held, what the run the lock file
// records left: namespaces starting with nsPrefix, its bpffs and directory.
func cleanStale(lock *os.File, name, nsPrefix string, log io.Writer) error {
	removed, err := sweep(nsPrefix)
	if len(removed) > 0 {
		fmt.Fprintf(log, "removed namespaces a killed run left: %s\n", strings.Join(removed, " "))
	}
	if err != nil {
		return fmt.Errorf("removing a killed run's namespaces: %w", err)
	}
	rec := readRecord(lock)
	var errs []error
	if p := rec["bpffs"]; p != "" {
		errs = append(errs, removeTemp(p, bpffsPattern, log))
	}
	if p := rec["dir"]; p != "" {
		errs = append(errs, removeTemp(p, name+"-*", log))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return lock.Truncate(0)
}

// removeTemp unmounts the bpffs on path if there is one and removes path,
// but only if path is a directory of root's directly in the temporary
// directory, named after pattern, and no link: a path read from a file is
// never trusted further than that. A refused path is reported to log and
// left alone.
func removeTemp(path, pattern string, log io.Writer) error {
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := checkTemp(path, pattern); err != nil {
		fmt.Fprintf(log, "refusing to remove %q: %v\n", path, err)
		return nil
	}
	if isBPFFS(path) {
		if err := unix.Unmount(path, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
			return fmt.Errorf("unmount the bpffs a killed run left at %s: %w", path, err)
		}
		fmt.Fprintf(log, "unmounted the bpffs a killed run left at %s\n", path)
	}
	if err := os.RemoveAll(path); err != nil {
		return err
	}
	fmt.Fprintf(log, "removed %s, left by a killed run\n", path)
	return nil
}

// checkTemp is removeTemp's test of path.
func checkTemp(path, pattern string) error {
	tmp := filepath.Clean(os.TempDir())
	if !filepath.IsAbs(path) || filepath.Clean(path) != path || filepath.Dir(path) != tmp {
		return fmt.Errorf("not directly in %s", tmp)
	}
	if ok, err := filepath.Match(pattern, filepath.Base(path)); err != nil || !ok {
		return fmt.Errorf("not named %s", pattern)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !fi.IsDir() || !ok || st.Uid != 0 {
		return errors.New("not a directory of root's")
	}
	return nil
}

// SweepTests removes what killed test runs left: the namespaces (TestPrefix)
// and the temporary directories, bpffs mounts and lock files whose owning
// pid has exited. What belongs to a live test process is left alone, so
// concurrent runs never remove each other's.
func SweepTests(log io.Writer) error {
	removed, err := SweepDead(TestPrefix)
	fmt.Fprintf(log, "removed %d namespaces of exited test processes\n", len(removed))
	errs := []error{err}
	tempPrefix := "palisade-" + TestPrefix
	entries, _ := os.ReadDir(os.TempDir())
	for _, e := range entries {
		if pid, ok := OwnerPID(e.Name(), tempPrefix); ok && !alive(pid) {
			errs = append(errs, removeTemp(filepath.Join(filepath.Clean(os.TempDir()), e.Name()), tempPrefix+"*", log))
		}
	}
	locks, _ := os.ReadDir(LockDir)
	for _, e := range locks {
		name := strings.TrimSuffix(e.Name(), ".lock")
		if pid, ok := OwnerPID(name, tempPrefix); ok && !alive(pid) {
			if lock, err := lockSession(name); err == nil {
				errs = append(errs, os.Remove(filepath.Join(LockDir, e.Name())))
				lock.Close()
			}
		}
	}
	return errors.Join(errs...)
}
