package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/palisade/palisade/slowpath/eve"
	"github.com/palisade/palisade/slowpath/inspect"
)

type inspectOptions struct {
	engines         engineFlags
	pcap            string
	eveOut          string
	mode            string
	verifyChecksums bool
}

// inspectCommand runs the engines over a capture file, as Suricata -r does.
func inspectCommand() *cobra.Command {
	var o inspectOptions
	cmd := &cobra.Command{
		Use:   "inspect --rules FILE... --pcap FILE",
		Short: "Inspect a pcap or pcapng capture offline and write EVE JSON alerts",
		Long: "inspect runs the IPS (Suricata rules) and web reputation engines over a capture, as the appliance\n" +
			"would inline, and writes one EVE JSON alert per line. Rule totals and a summary go to stderr.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runInspect(o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	o.engines.register(f)
	f.StringVar(&o.pcap, "pcap", "", "capture to read (pcap or pcapng; Ethernet or raw IP)")
	f.StringVar(&o.eveOut, "eve", "-", "file to append EVE JSON alerts to; - for stdout")
	f.StringVar(&o.mode, "mode", "ids", "ids: drop rules only alert; ips: drop/reject rules block their flows")
	f.BoolVar(&o.verifyChecksums, "verify-checksums", false, "skip packets with bad IP/TCP/UDP/ICMP checksums")
	_ = cmd.MarkFlagRequired("pcap")
	return cmd
}

func runInspect(o inspectOptions, stdout, stderr io.Writer) (err error) {
	mode, err := inspect.ParseMode(o.mode)
	if err != nil {
		return err
	}
	if len(o.engines.rules) == 0 && len(o.engines.feeds) == 0 {
		return inspect.ErrNoEngines
	}
	files, err := o.engines.load()
	if err != nil {
		return err
	}
	var out *eve.Writer
	if o.eveOut == "-" {
		out = eve.NewWriter(stdout)
	} else if out, err = eve.OpenFile(o.eveOut); err != nil {
		return err
	}
	// Alerts found before an error are written before it is reported.
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()

	if rs := files.rules; rs != nil {
		st := rs.Stats()
		fmt.Fprintf(stderr, "rules: %d loaded, %d refused\n", st.Loaded, st.Refused)
		for _, r := range rs.Refused() {
			fmt.Fprintf(stderr, "refused: %v\n", r)
		}
	}
	if files.feed != nil {
		fmt.Fprintf(stderr, "web reputation: %d entries\n", files.feed.Len())
	}
	stamp := inspect.NewStamp(out)
	chain := files.engines(stamp, engineOptions{verifyChecksums: o.verifyChecksums})
	sum, runErr := inspect.Run(o.pcap, chain, stamp, mode)
	fmt.Fprintf(stderr, "packets: %d read, %d inspected, %d offloaded; alerts: %d; drops: %d (%d in blocked flows)\n",
		sum.Packets, sum.Inspected, sum.Offloaded, sum.Alerts, sum.Dropped, sum.FlowDropped)
	if runErr != nil {
		if ferr := out.Flush(); ferr != nil {
			return errors.Join(runErr, ferr)
		}
		return runErr
	}
	return nil
}
