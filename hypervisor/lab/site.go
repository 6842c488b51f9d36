package lab

import (
	"fmt"
	"net"
	"net/netip"
)

// The link-local plan of a lab site, after the original design (seed 000):
// the host's vmkernel interface holds 169.254.1.1 and appliances take
// 169.254.1.10 upwards, all on one isolated vSwitch.
var VmkernelAddr = netip.MustParsePrefix("169.254.1.1/16")

// ApplianceAddr is the link-local address of appliance i (0-based).
func ApplianceAddr(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{169, 254, 1, byte(10 + i)}), 16)
}

// Site is one simulated hypervisor host: a host namespace whose vSwitch
// bridge "vsw0" carries the vmkernel address, and appliance namespaces each
// plugged into it with eth0.
type Site struct {
	Host       *Namespace
	Appliances []*Namespace
}

// Switch is the name of the host's vSwitch bridge.
const Switch = "vsw0"

// Site builds a host named name with n appliances. Nothing in it routes
// anywhere but the link-local subnet.
func (l *Lab) Site(name string, n int) (*Site, error) {
	host, err := l.Namespace(name)
	if err != nil {
		return nil, err
	}
	if err := host.Bridge(Switch, VmkernelAddr); err != nil {
		return nil, err
	}
	s := &Site{Host: host}
	for i := 0; i < n; i++ {
		app, err := l.Namespace(fmt.Sprintf("%s-appl%d", name, i))
		if err != nil {
			return nil, err
		}
		if _, _, err := l.Link(
			End{NS: host, Name: fmt.Sprintf("appl%d", i), Master: Switch},
			End{NS: app, Name: "eth0", Addrs: []netip.Prefix{ApplianceAddr(i)}},
		); err != nil {
			return nil, err
		}
		s.Appliances = append(s.Appliances, app)
	}
	return s, nil
}

// Endpoint is a machine plugged into a site's vSwitch: a protected guest or
// an unprotected peer. Its NIC is eth0 inside its namespace; HostIf is the
// host side of that link (for a guest, its vNIC).
type Endpoint struct {
	NS     *Namespace
	HostIf string
	Addr4  netip.Addr
	Addr6  netip.Addr
	MAC    net.HardwareAddr
}

// GuestAddr4 and GuestAddr6 give endpoint n of a site its TEST-NET-2 and
// documentation-prefix addresses (RFC 5737, RFC 3849): never routable.
func GuestAddr4(n int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(n)}), 24)
}

func GuestAddr6(n int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(n)}), 64)
}

// Endpoint plugs a new namespace into the site's vSwitch with addresses
// number n of the guest ranges. hostIf names the host side (at most 15
// bytes); mac, if set, is eth0's address (the lab matches simulated VMs'
// MACs this way).
func (l *Lab) Endpoint(s *Site, name, hostIf string, n int, mac net.HardwareAddr) (*Endpoint, error) {
	ns, err := l.Namespace(name)
	if err != nil {
		return nil, err
	}
	_, guestEnd, err := l.Link(
		End{NS: s.Host, Name: hostIf, Master: Switch},
		End{NS: ns, Name: "eth0", MAC: mac, Addrs: []netip.Prefix{GuestAddr4(n), GuestAddr6(n)}},
	)
	if err != nil {
		return nil, err
	}
	return &Endpoint{NS: ns, HostIf: hostIf, Addr4: GuestAddr4(n).Addr(), Addr6: GuestAddr6(n).Addr(), MAC: guestEnd.MAC}, nil
}
