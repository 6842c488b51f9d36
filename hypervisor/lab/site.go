package lab

import (
	"fmt"
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
