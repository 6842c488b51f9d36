package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jonboulle/clockwork"
)

// waitDelay is how long a process's exit waits for its output to be
// copied: a stuck tee, or a child holding the output open, must not keep
// Stop and Close waiting forever.
const waitDelay = 2 * time.Second

// Process is a program running inside a lab namespace, with its combined
// output captured for assertions.
type Process struct {
	Name  string
	clock clockwork.Clock
	cmd   *exec.Cmd
	out   *lockedBuffer
	done  chan struct{}
	err   error
}

type lockedBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	tee     io.Writer
	written chan struct{} // closed (and replaced) by every write: WaitOutput's wake-up
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tee != nil {
		_, _ = b.tee.Write(p)
	}
	n, err := b.buf.Write(p)
	close(b.written)
	b.written = make(chan struct{})
	return n, err
}

// contains says whether the output holds substr, and returns the channel
// the next write closes.
func (b *lockedBuffer) contains(substr string) (bool, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Contains(b.buf.String(), substr), b.written
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Start runs bin with args inside ns (see Namespace.Command). Output is
// captured and also copied to tee if it is not nil; a tee that stops
// reading delays the process's exit by at most waitDelay. The lab stops the
// process on Close; it is also killed if the process that started it dies.
func (l *Lab) Start(ns *Namespace, name string, tee io.Writer, bin string, args ...string) (*Process, error) {
	cmd := ns.Command(bin, args...)
	out := &lockedBuffer{tee: tee, written: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = waitDelay
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("lab: start %s in %s: %w", name, ns.Name, err)
	}
	p := &Process{Name: name, clock: l.clock, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		_ = p.Kill()
		return nil, errors.New("lab: closed")
	}
	l.procs = append(l.procs, p)
	return p, nil
}

// PID is the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Output is everything the process wrote so far.
func (p *Process) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// ExitErr is the exit status once Done is closed.
func (p *Process) ExitErr() error {
	<-p.done
	return p.err
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill sends SIGKILL and waits for the exit.
func (p *Process) Kill() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT) // a stopped process cannot die until continued
	_ = p.cmd.Process.Kill()
	<-p.done
	return nil
}

// stopGrace is how long Stop waits for a process to exit on SIGTERM.
const stopGrace = 5 * time.Second

// Stop asks the process to terminate (SIGTERM) and kills it if it has not
// exited within stopGrace. A process that needed killing is reported as an
// error: every Palisade daemon must shut down cleanly on SIGTERM.
func (p *Process) Stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	grace := p.clock.NewTimer(stopGrace)
	defer grace.Stop()
	select {
	case <-p.done:
		return nil
	case <-grace.Chan():
		_ = p.Kill()
		return fmt.Errorf("lab: %s (pid %d) ignored SIGTERM for %s and was killed", p.Name, p.PID(), stopGrace)
	}
}

// WaitOutput waits until the output contains substr, the process exits, or
// ctx ends.
func (p *Process) WaitOutput(ctx context.Context, substr string) error {
	for {
		found, written := p.out.contains(substr)
		if found {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %q not in output after waiting: %w\n--- output ---\n%s", p.Name, substr, ctx.Err(), p.Output())
		case <-p.done:
			if strings.Contains(p.Output(), substr) {
				return nil
			}
			return fmt.Errorf("%s exited (%v) before printing %q\n--- output ---\n%s", p.Name, p.err, substr, p.Output())
		case <-written:
		}
	}
}
