package channel

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// DefaultPort is the binding port of the original design (seed 000).
const DefaultPort = 2222

// DefaultBindAddress is where fastpathd listens unless told otherwise.
const DefaultBindAddress = "169.254.1.1:2222"

// linkLocal is the only range the binding may use without an override: the
// channel must never be reachable from a routed network.
var linkLocal = netip.MustParsePrefix("169.254.0.0/16")

// Endpoint is where the channel listens or connects: TCP on an IP literal, or
// AF_VSOCK on a context id and port.
type Endpoint struct {
	Network string // "tcp" or "vsock"
	Addr    netip.AddrPort
	CID     uint32
	Port    uint32
	anyCID  bool
}

// ParseEndpoint accepts "169.254.1.1:2222", "tcp://169.254.1.1:2222",
// "vsock://2:2222" (dial the host) and "vsock://:2222" (listen on any CID).
func ParseEndpoint(s string) (Endpoint, error) {
	switch {
	case strings.HasPrefix(s, "vsock://"):
		rest := strings.TrimPrefix(s, "vsock://")
		cidStr, portStr, ok := strings.Cut(rest, ":")
		if !ok {
			return Endpoint{}, fmt.Errorf("endpoint %q: want vsock://CID:PORT", s)
		}
		port, err := strconv.ParseUint(portStr, 10, 32)
		if err != nil {
			return Endpoint{}, fmt.Errorf("endpoint %q: port: %w", s, err)
		}
		e := Endpoint{Network: "vsock", Port: uint32(port)}
		if cidStr == "" {
			e.anyCID = true
			return e, nil
		}
		cid, err := strconv.ParseUint(cidStr, 10, 32)
		if err != nil {
			return Endpoint{}, fmt.Errorf("endpoint %q: context id: %w", s, err)
		}
		e.CID = uint32(cid)
		return e, nil
	default:
		ap, err := netip.ParseAddrPort(strings.TrimPrefix(s, "tcp://"))
		if err != nil {
			return Endpoint{}, fmt.Errorf("endpoint %q: want IP:PORT (an address literal, never a name): %w", s, err)
		}
		return Endpoint{Network: "tcp", Addr: ap}, nil
	}
}

func (e Endpoint) String() string {
	if e.Network == "vsock" {
		if e.anyCID {
			return fmt.Sprintf("vsock://:%d", e.Port)
		}
		return fmt.Sprintf("vsock://%d:%d", e.CID, e.Port)
	}
	return e.Addr.String()
}

// NotLinkLocalError refuses a TCP bind address outside 169.254.0.0/16.
type NotLinkLocalError struct{ Addr netip.Addr }

func (e *NotLinkLocalError) Error() string {
	return fmt.Sprintf("bind address %s is not link-local (169.254.0.0/16); the binding channel must not be reachable from a routed network (override with --allow-non-link-local)", e.Addr)
}

// CheckLinkLocal fails for a TCP endpoint outside 169.254.0.0/16. AF_VSOCK
// never leaves the machine and always passes.
func (e Endpoint) CheckLinkLocal() error {
	if e.Network != "tcp" {
		return nil
	}
	if !linkLocal.Contains(e.Addr.Addr().Unmap()) {
		return &NotLinkLocalError{Addr: e.Addr.Addr()}
	}
	return nil
}

// Listen opens a listener on e.
func (e Endpoint) Listen() (net.Listener, error) {
	if e.Network == "vsock" {
		cid := e.CID
		if e.anyCID {
			cid = unix.VMADDR_CID_ANY
		}
		l, err := vsock.ListenContextID(cid, e.Port, nil)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", e, err)
		}
		return l, nil
	}
	l, err := net.Listen("tcp", e.Addr.String())
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", e, err)
	}
	return l, nil
}

// Dial connects to e, from source if it is valid (TCP only).
func (e Endpoint) Dial(ctx context.Context, source netip.Addr) (net.Conn, error) {
	if e.Network == "vsock" {
		c, err := vsock.DialContext(ctx, e.CID, e.Port, nil)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", e, err)
		}
		return c, nil
	}
	d := net.Dialer{}
	if source.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: source.AsSlice()}
	}
	c, err := d.DialContext(ctx, "tcp", e.Addr.String())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", e, err)
	}
	return c, nil
}
