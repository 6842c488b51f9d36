// Command fastpathd is Palisade's host daemon: it listens for the appliance's
// slow path on the link-local bind address and serves the local control API.
package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/palisade/palisade/fastpath/bindserver"
	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/fastpath/daemon"
	"github.com/palisade/palisade/fastpath/localapi"
)

const defaultControlSocket = "/run/palisade/fastpathd.sock"

// Capabilities this build of the fast path offers a slow path.
const capabilities = channel.CapEvents

type options struct {
	listen           string
	hostID           string
	controlSocket    string
	unboundWarnEvery time.Duration
	binding          daemon.BindingFlags
	log              daemon.LogFlags
}

func main() {
	var o options
	root := daemon.RootCommand("fastpathd", "Palisade fast path: host daemon for the eBPF datapath and the slow-path binding")
	host, _ := os.Hostname()
	f := root.Flags()
	f.StringVar(&o.listen, "listen", channel.DefaultBindAddress, "bind address: IP:PORT (link-local) or vsock://:PORT")
	f.StringVar(&o.hostID, "host-id", host, "this host's name in the handshake and logs")
	o.binding.Register(f, "slow path")
	f.DurationVar(&o.unboundWarnEvery, "unbound-warn-every", 10*time.Second, "how often to warn while no slow path is bound")
	o.log.Register(f)
	root.PersistentFlags().StringVar(&o.controlSocket, "control-socket", defaultControlSocket, "local control socket")
	root.RunE = func(cmd *cobra.Command, _ []string) error { return run(o) }
	root.AddCommand(daemon.StatusCommand(&o.controlSocket))
	daemon.Main(root)
}

func run(o options) error {
	log, err := o.log.Logger("fastpathd")
	if err != nil {
		return err
	}
	ep, err := o.binding.Endpoint("listen", o.listen)
	if err != nil {
		return err
	}
	secret, err := channel.ReadSecretFile(o.binding.SecretFile)
	if err != nil {
		return err
	}
	srv, err := bindserver.New(bindserver.Config{
		Self:     channel.Identity{Version: channel.Current(), Revision: channel.ProtocolRevision, Capabilities: capabilities, ID: o.hostID},
		Secret:   secret,
		Endpoint: ep.String(), Timing: o.binding.Timing, UnboundWarnEvery: o.unboundWarnEvery,
		Log: log,
	})
	if err != nil {
		return err
	}
	ln, err := ep.Listen()
	if err != nil {
		return fmt.Errorf("%w (is the link-local bind address configured on this host? see docs/troubleshooting.md)", err)
	}
	ctx, stop := daemon.SignalContext()
	defer stop()
	log.WithFields(logrus.Fields{"version": channel.Current().String(), "revision": channel.ProtocolRevision,
		"control_socket": o.controlSocket}).Info("fastpathd starting")

	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		localapi.WriteJSON(w, http.StatusOK, srv.Status())
	})
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return srv.Serve(gctx, ln) })
	g.Go(func() error { return localapi.Serve(gctx, o.controlSocket, mux) })
	err = g.Wait()
	log.WithField("reason", context.Cause(ctx)).Info("fastpathd stopped")
	return err
}
