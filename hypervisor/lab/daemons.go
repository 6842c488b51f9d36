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
	Dir           string // secrets and control sockets
	SecretFile    string
	Fastpathd     *Process
	FastpathdSock string
}

// StartFastpathd writes a fresh per-host secret into dir and starts fastpathd
// in the site's host namespace on the default link-local bind address.
func (l *Lab) StartFastpathd(site *Site, bins Binaries, dir string, log io.Writer, extra ...string) (*HostRun, error) {
	r := &HostRun{Site: site, Dir: dir, SecretFile: filepath.Join(dir, site.Host.Name+".secret"),
		FastpathdSock: filepath.Join(dir, site.Host.Name+"-fastpathd.sock")}
	if err := channel.WriteNewSecretFile(r.SecretFile); err != nil {
		return nil, err
	}
	args := append([]string{"--listen", channel.DefaultBindAddress, "--secret-file", r.SecretFile,
		"--control-socket", r.FastpathdSock, "--host-id", site.Host.Name}, extra...)
	p, err := l.Start(site.Host, "fastpathd@"+site.Host.Name, log, bins.Fastpathd, args...)
	if err != nil {
		return nil, err
	}
	r.Fastpathd = p
	return r, nil
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
