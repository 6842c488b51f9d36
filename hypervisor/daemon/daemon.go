package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/hypervisor/localapi"
)

// LogFlags are the logging options every daemon takes.
type LogFlags struct {
	Level  string
	Format string
}

// Register adds --log-level and --log-format to fs.
func (l *LogFlags) Register(fs *pflag.FlagSet) {
	fs.StringVar(&l.Level, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&l.Format, "log-format", "text", "log format: text or json")
}

// BindingFlags are the binding options both daemons take.
type BindingFlags struct {
	SecretFile        string
	AllowNonLinkLocal bool
	Timing            channel.Timing
}

// Register adds the binding flags to fs; peer names the other side in help.
func (b *BindingFlags) Register(fs *pflag.FlagSet, peer string) {
	fs.StringVar(&b.SecretFile, "secret-file", "/etc/palisade/binding.secret", "per-host binding secret (mode 0600)")
	fs.BoolVar(&b.AllowNonLinkLocal, "allow-non-link-local", false, "allow a TCP binding address outside 169.254.0.0/16")
	fs.DurationVar(&b.Timing.Keepalive, "keepalive", channel.DefaultKeepalive, "keepalive interval")
	fs.DurationVar(&b.Timing.DeadAfter, "dead-after", channel.DefaultDeadAfter, "declare the "+peer+" dead after this much silence")
	fs.DurationVar(&b.Timing.HandshakeTimeout, "handshake-timeout", channel.DefaultHandshakeTimeout, "time allowed to connect and handshake")
}

// Endpoint parses a binding endpoint flag and enforces link-local TCP
// addresses unless --allow-non-link-local was given.
func (b *BindingFlags) Endpoint(flag, value string) (channel.Endpoint, error) {
	ep, err := channel.ParseEndpoint(value)
	if err != nil {
		return ep, fmt.Errorf("--%s: %w", flag, err)
	}
	if !b.AllowNonLinkLocal {
		if err := ep.CheckLinkLocal(); err != nil {
			return ep, err
		}
	}
	return ep, nil
}

// Logger builds the daemon's logger, tagged with its name and version.
func (l *LogFlags) Logger(binary string) (*logrus.Entry, error) {
	log := logrus.New()
	log.SetOutput(os.Stderr)
	lvl, err := logrus.ParseLevel(l.Level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	log.SetLevel(lvl)
	switch l.Format {
	case "text":
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "2006-01-02T15:04:05.000Z07:00"})
	case "json":
		log.SetFormatter(&logrus.JSONFormatter{})
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", l.Format)
	}
	return log.WithFields(logrus.Fields{"daemon": binary}), nil
}

// SignalContext is cancelled by SIGINT or SIGTERM: every daemon's clean
// shutdown starts here.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// RootCommand is a cobra root with the stamped --version.
func RootCommand(binary, short string) *cobra.Command {
	cmd := &cobra.Command{
		Use:           binary,
		Short:         short,
		Version:       channel.Current().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cmd.SetVersionTemplate(channel.VersionLine(binary) + "\n")
	return cmd
}

// Main runs cmd and exits non-zero with the error on failure.
func Main(cmd *cobra.Command) {
	if err := cmd.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", cmd.Name(), err)
		os.Exit(1)
	}
}

// StatusCommand is `<daemon> status`: it asks the running daemon on its control
// socket for the binding status and prints it.
func StatusCommand(socket *string) *cobra.Command {
	var asJSON, requireBound bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "show the slow-path binding: state, peer, versions, capabilities, uptime, reconnects",
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st channel.BindingStatus
			if err := localapi.NewClient(*socket).Do(cmd.Context(), http.MethodGet, "/v1/status", nil, &st); err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(st); err != nil {
					return err
				}
			} else {
				if err := st.Print(cmd.OutOrStdout(), time.Now()); err != nil {
					return err
				}
			}
			if requireBound && st.State != channel.StateBound {
				return fmt.Errorf("not bound (%s)", st.State)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVar(&requireBound, "require-bound", false, "exit non-zero unless bound")
	return cmd
}
