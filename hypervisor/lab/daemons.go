package lab

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/palisade/palisade/fastpath/channel"
)

// Binaries are the Palisade programs a lab runs.
type Binaries struct {
	Fastpathd string
	Slowpathd string
}

// BuildBinaries compiles the daemons from the module at root into dir, with
// extra -ldflags (e.g. a version stamp) if given.
func BuildBinaries(ctx context.Context, root, dir, ldflags string) (Binaries, error) {
	b := Binaries{Fastpathd: filepath.Join(dir, "fastpathd"), Slowpathd: filepath.Join(dir, "slowpathd")}
	for out, pkg := range map[string]string{b.Fastpathd: "./fastpath/cmd/fastpathd", b.Slowpathd: "./slowpath/cmd/slowpathd"} {
		args := []string{"build", "-o", out}
		if ldflags != "" {
			args = append(args, "-ldflags", ldflags)
		}
		cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return Binaries{}, fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
		}
	}
	return b, nil
}

// ModuleRoot finds the directory holding go.mod, from the working directory up.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the Palisade module")
	}
	return filepath.Dir(mod), nil
}

// HostRun is one site's daemons and their files.
type HostRun struct {
	Site          *Site
	Bins          Binaries
	Dir           string // secrets, control sockets, guest state
	BPFFS         string // the bpffs the datapath pins into
	SecretFile    string
	Fastpathd     *Process
	FastpathdSock string
}

// FastpathdArgs are the arguments fastpathd runs with on this host: a
// restarted fastpathd must use the same ones to find its pinned state.
func (r *HostRun) FastpathdArgs(extra ...string) []string {
	return append(append([]string{"--listen", channel.DefaultBindAddress, "--secret-file", r.SecretFile}, r.StoreArgs()...), extra...)
}

// StoreArgs locate this host's fastpathd and its state, for its operator
// commands (status, guests, uninstall…).
func (r *HostRun) StoreArgs() []string {
	return []string{"--control-socket", r.FastpathdSock, "--host-id", r.Site.Host.Name, "--bpffs", r.BPFFS, "--state-dir", r.Dir}
}

// StartFastpathd writes a fresh per-host secret into dir and starts fastpathd
// in the site's host namespace on the default link-local bind address,
// pinning its datapath into bpffs (which must be a BPF filesystem visible to
// the namespace's processes: see MountBPFFS).
func (l *Lab) StartFastpathd(site *Site, bins Binaries, dir, bpffs string, log io.Writer, extra ...string) (*HostRun, error) {
	r := &HostRun{Site: site, Bins: bins, Dir: dir, BPFFS: bpffs, SecretFile: filepath.Join(dir, site.Host.Name+".secret"),
		FastpathdSock: filepath.Join(dir, site.Host.Name+"-fastpathd.sock")}
	if err := channel.WriteNewSecretFile(r.SecretFile); err != nil {
		return nil, err
	}
	if err := l.RestartFastpathd(r, log, extra...); err != nil {
		return nil, err
	}
	return r, nil
}

// RestartFastpathd starts fastpathd (again) for a host with its usual
// arguments; the previous process must have exited.
func (l *Lab) RestartFastpathd(r *HostRun, log io.Writer, extra ...string) error {
	p, err := l.Start(r.Site.Host, "fastpathd@"+r.Site.Host.Name, log, r.Bins.Fastpathd, r.FastpathdArgs(extra...)...)
	if err != nil {
		return err
	}
	r.Fastpathd = p
	return nil
}

// SlowpathdSock is the control socket of the slowpathd in appliance i.
func (r *HostRun) SlowpathdSock(i int) string {
	return filepath.Join(r.Dir, r.Site.Appliances[i].Name+"-slowpathd.sock")
}

// StartSlowpathd starts slowpathd in appliance i, bound for the host's fast
// path with the host's secret.
func (l *Lab) StartSlowpathd(r *HostRun, i int, bin string, log io.Writer, extra ...string) (*Process, error) {
	app := r.Site.Appliances[i]
	args := append([]string{"--connect", channel.DefaultBindAddress, "--secret-file", r.SecretFile,
		"--control-socket", r.SlowpathdSock(i), "--appliance-id", app.Name}, extra...)
	return l.Start(app, "slowpathd@"+app.Name, log, bin, args...)
}
