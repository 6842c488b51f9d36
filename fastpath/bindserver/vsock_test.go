package bindserver_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/palisade/palisade/fastpath/bindserver"
	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/slowpath/bindclient"
)

// TestBindOverVsock binds over AF_VSOCK with the same frames and handshake as
// TCP. It needs the kernel's vsock loopback transport (CID 1); connecting to
// the real host (CID 2) from a test would leave this machine, so without
// loopback the test skips.
func TestBindOverVsock(t *testing.T) {
	port := 20000 + uint32(os.Getpid()%20000)
	ep, err := channel.ParseEndpoint(fmt.Sprintf("vsock://1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := ep.Listen()
	if err != nil {
		t.Skipf("kernel offers no vsock loopback transport (CONFIG_VSOCKETS_LOOPBACK / module vsock_loopback): %v", err)
	}
	srv, err := bindserver.New(bindserver.Config{
		Self:   channel.Identity{Version: channel.MustParseVersion("1.2.3.2"), Revision: 1, Capabilities: channel.CapIPS, ID: "esx-vsock"},
		Secret: secret, Endpoint: ep.String(), Log: (&logSink{}).logger(t, "fastpathd"),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = srv.Serve(ctx, ln) }()
	client, err := bindclient.New(bindclient.Config{
		Self:     channel.Identity{Version: channel.MustParseVersion("1.2.3.1"), Revision: 1, Capabilities: channel.CapIPS, ID: "dsva-vsock"},
		Endpoint: ep.String(),
		Dial:     func(ctx context.Context) (net.Conn, error) { return ep.Dial(ctx, netip.Addr{}) },
		Secret:   func() ([]byte, error) { return secret, nil },
		Log:      (&logSink{}).logger(t, "slowpathd"),
	})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = client.Run(ctx) }()
	st := waitState(t, "fast path over vsock", srv.Status, channel.StateBound)
	if st.PeerVersion != "1.2.3.1" || len(st.Negotiated) != 1 || st.Negotiated[0] != "ips" {
		t.Fatalf("vsock binding: %+v", st)
	}
}
