package channel

import (
	"errors"
	"testing"
)

func TestEndpoints(t *testing.T) {
	cases := []struct {
		in, out, network string
		linkLocal        bool
	}{
		{"169.254.1.1:2222", "169.254.1.1:2222", "tcp", true},
		{"tcp://169.254.7.9:2222", "169.254.7.9:2222", "tcp", true},
		{"192.0.2.1:2222", "192.0.2.1:2222", "tcp", false},
		{"[fe80::1]:2222", "[fe80::1]:2222", "tcp", false},
		{"vsock://2:2222", "vsock://2:2222", "vsock", true},
		{"vsock://:2222", "vsock://:2222", "vsock", true},
	}
	for _, c := range cases {
		ep, err := ParseEndpoint(c.in)
		if err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		if ep.String() != c.out || ep.Network != c.network {
			t.Errorf("%s: parsed as %s/%s", c.in, ep.Network, ep)
		}
		err = ep.CheckLinkLocal()
		var nl *NotLinkLocalError
		if c.linkLocal != (err == nil) || (err != nil && !errors.As(err, &nl)) {
			t.Errorf("%s: link-local check: %v", c.in, err)
		}
	}
	for _, bad := range []string{"fastpath.local:2222", "169.254.1.1", "vsock://2", "vsock://x:1", "vsock://2:99999999999"} {
		if _, err := ParseEndpoint(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
