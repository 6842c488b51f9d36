package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Hook is where a program runs on a vNIC.
type Hook string

const (
	Ingress Hook = "ingress" // packets from the guest
	Egress  Hook = "egress"  // packets to the guest
)

// PinnedLink is one attachment recorded in the pin directory.
type PinnedLink struct {
	Ifindex int
	Hook    Hook
	Path    string
}

func (d *Datapath) linkPath(ifindex int, h Hook) string {
	return filepath.Join(d.cfg.PinDir, "links", fmt.Sprintf("%d-%s", ifindex, h))
}

// Attach puts the datapath on a vNIC (both directions) with TCX links pinned
// under the pin directory, so they outlive this process. The caller must be
// in the vNIC's network namespace (ifindex is resolved there). Attaching an
// already attached vNIC replaces its programs atomically.
func (d *Datapath) Attach(ifindex int) error {
	for _, h := range []struct {
		hook Hook
		prog *ebpf.Program
		at   ebpf.AttachType
	}{{Ingress, d.objs.FromGuest, ebpf.AttachTCXIngress}, {Egress, d.objs.ToGuest, ebpf.AttachTCXEgress}} {
		path := d.linkPath(ifindex, h.hook)
		if l, err := link.LoadPinnedLink(path, nil); err == nil {
			err = l.Update(h.prog)
			l.Close()
			if err != nil {
				return fmt.Errorf("attach %s on ifindex %d: update pinned link: %w", h.hook, ifindex, err)
			}
			continue
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: h.prog, Attach: h.at})
		if err != nil {
			return fmt.Errorf("attach %s on ifindex %d: %w", h.hook, ifindex, err)
		}
		err = l.Pin(path)
		l.Close()
		if err != nil {
			return fmt.Errorf("attach %s on ifindex %d: pin: %w", h.hook, ifindex, err)
		}
	}
	return nil
}

// Detach removes the datapath from a vNIC.
func (d *Datapath) Detach(ifindex int) error {
	var errs []error
	for _, h := range []Hook{Ingress, Egress} {
		if err := d.unpinLink(PinnedLink{Ifindex: ifindex, Hook: h, Path: d.linkPath(ifindex, h)}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (d *Datapath) unpinLink(pl PinnedLink) error {
	l, err := link.LoadPinnedLink(pl.Path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		// A link whose interface is gone cannot always be loaded; its pin
		// is still removed.
		if rerr := os.Remove(pl.Path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return fmt.Errorf("detach %s on ifindex %d: %w", pl.Hook, pl.Ifindex, errors.Join(err, rerr))
		}
		return nil
	}
	defer l.Close()
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("detach %s on ifindex %d: unpin: %w", pl.Hook, pl.Ifindex, err)
	}
	// Detach explicitly: other holders of the link (none, normally) must
	// not keep the program on the interface.
	if err := l.Detach(); err != nil && !errors.Is(err, ebpf.ErrNotSupported) && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("detach %s on ifindex %d: %w", pl.Hook, pl.Ifindex, err)
	}
	return nil
}

// PinnedLinks lists the attachments recorded in the pin directory.
func (d *Datapath) PinnedLinks() ([]PinnedLink, error) {
	dir := filepath.Join(d.cfg.PinDir, "links")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []PinnedLink
	for _, e := range entries {
		idx, hook, ok := strings.Cut(e.Name(), "-")
		n, err := strconv.Atoi(idx)
		if !ok || err != nil || (Hook(hook) != Ingress && Hook(hook) != Egress) {
			continue
		}
		out = append(out, PinnedLink{Ifindex: n, Hook: Hook(hook), Path: filepath.Join(dir, e.Name())})
	}
	return out, nil
}

// Reattach points every pinned link at this process's programs: after an
// upgrade, the new code takes over without a moment unfiltered.
func (d *Datapath) Reattach() error {
	links, err := d.PinnedLinks()
	if err != nil {
		return err
	}
	var errs []error
	for _, pl := range links {
		l, err := link.LoadPinnedLink(pl.Path, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("reattach %s: %w", pl.Path, err))
			continue
		}
		prog := d.objs.FromGuest
		if pl.Hook == Egress {
			prog = d.objs.ToGuest
		}
		if err := l.Update(prog); err != nil {
			errs = append(errs, fmt.Errorf("reattach %s: %w", pl.Path, err))
		}
		l.Close()
	}
	return errors.Join(errs...)
}
