package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/hypervisor/daemon"
	"github.com/palisade/palisade/hypervisor/localapi"
	"github.com/palisade/palisade/slowpath/bindclient"
)

const defaultControlSocket = "/run/palisade/slowpathd.sock"

// Capabilities this build of the slow path offers a fast path.
const capabilities = channel.CapIPS | channel.CapWRS | channel.CapOffload | channel.CapEvents

type options struct {
	connect       string
	source        string
	applianceID   string
	controlSocket string
	backoffMax    time.Duration
	binding       daemon.BindingFlags
	log           daemon.LogFlags
	inspection    inspectionFlags
}

func main() {
	var o options
	root := daemon.RootCommand("slowpathd", "Palisade slow path: appliance daemon for deep inspection")
	host, _ := os.Hostname()
	f := root.Flags()
	f.StringVar(&o.connect, "connect", channel.DefaultBindAddress, "fast path to bind to: IP:PORT (link-local) or vsock://CID:PORT (host is CID 2)")
	f.StringVar(&o.source, "source", "", "connect from this local link-local address (default: chosen by the kernel)")
	f.StringVar(&o.applianceID, "appliance-id", host, "this appliance's name in the handshake and logs")
	o.binding.Register(f, "fast path")
	f.DurationVar(&o.backoffMax, "backoff-max", 5*time.Second, "longest wait between reconnection attempts")
	o.log.Register(f)
	o.inspection.register(f)
	root.PersistentFlags().StringVar(&o.controlSocket, "control-socket", defaultControlSocket, "local control socket")
	root.RunE = func(cmd *cobra.Command, _ []string) error { return run(o) }
	root.AddCommand(daemon.StatusCommand(&o.controlSocket))
	root.AddCommand(inspectCommand())
	root.AddCommand(inspectionCommand(&o.controlSocket))
	daemon.Main(root)
}

func run(o options) error {
	log, err := o.log.Logger("slowpathd")
	if err != nil {
		return err
	}
	ep, err := o.binding.Endpoint("connect", o.connect)
	if err != nil {
		return err
	}
	var source netip.Addr
	if o.source != "" {
		if source, err = netip.ParseAddr(o.source); err != nil {
			return fmt.Errorf("--source: %w", err)
		}
	}
	// Fail fast on a missing or unreadable secret; later attempts re-read it.
	if _, err := channel.ReadSecretFile(o.binding.SecretFile); err != nil {
		return err
	}
	insp, err := o.inspection.start(log)
	if err != nil {
		return err
	}
	client, err := bindclient.New(bindclient.Config{
		Self:     channel.Identity{Version: channel.Current(), Revision: channel.ProtocolRevision, Capabilities: capabilities, ID: o.applianceID},
		Endpoint: ep.String(),
		Dial:     func(ctx context.Context) (net.Conn, error) { return ep.Dial(ctx, source) },
		Secret:   func() ([]byte, error) { return channel.ReadSecretFile(o.binding.SecretFile) },
		Timing:   o.binding.Timing, BackoffMax: o.backoffMax,
		Log:     log,
		Handler: &fastPathEvents{log: log, punts: insp.svc},
	})
	if err != nil {
		_ = insp.svc.Close()
		return err
	}
	ctx, stop := daemon.SignalContext()
	defer stop()
	log.WithFields(logrus.Fields{"version": channel.Current().String(), "revision": channel.ProtocolRevision,
		"fast_path": ep.String(), "control_socket": o.controlSocket}).Info("slowpathd starting")

	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		localapi.WriteJSON(w, http.StatusOK, client.Status())
	})
	mux.HandleFunc("GET /v1/inspection", func(w http.ResponseWriter, _ *http.Request) {
		localapi.WriteJSON(w, http.StatusOK, insp.status())
	})
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return client.Run(gctx) })
	g.Go(func() error { return insp.svc.Run(gctx) })
	g.Go(func() error { return localapi.Serve(gctx, o.controlSocket, mux) })
	err = g.Wait()
	log.Info("slowpathd stopped")
	return err
}
