package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/palisade/palisade/fastpath/control"
	"github.com/palisade/palisade/fastpath/policy"
)

// addGuestCommands adds the operator's guest commands; each asks the running
// daemon over its control socket.
func addGuestCommands(root *cobra.Command, socket *string) {
	var asJSON bool
	client := func() *control.Client { return control.NewClient(*socket) }
	out := func(cmd *cobra.Command, v any, text func(w io.Writer) error) error {
		return printJSONOr(cmd.OutOrStdout(), asJSON, v, text)
	}
	readPolicy := func(path string) (*policy.Policy, error) {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		p, err := policy.Parse(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return p, nil
	}

	guestsCmd := &cobra.Command{
		Use:   "guests",
		Short: "list protected guests",
		RunE: func(cmd *cobra.Command, _ []string) error {
			gs, err := client().ListGuests(cmd.Context())
			if err != nil {
				return err
			}
			return out(cmd, gs, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "GUEST\tVNIC\tMODE\tRULES\tPOLICY\tPROTECTED SINCE")
				for _, g := range gs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", g.ID, g.VNIC, g.Mode, g.Rules, g.PolicyID, g.ActivatedAt.Format(time.RFC3339))
				}
				return tw.Flush()
			})
		},
	}
	stats := &cobra.Command{
		Use:   "stats GUEST",
		Short: "show a guest's counters, drops by reason, connections and rule hits",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := client().Stats(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return out(cmd, st, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintf(tw, "guest\t%s (vNIC %s, slot %d, %s mode, policy %d)\n", st.ID, st.VNIC, st.Slot, st.Mode, st.PolicyID)
				fmt.Fprintf(tw, "connections\ttcp %d of %d, udp/other %d of %d\n", st.TCPConnections, st.MaxTCP, st.UDPConnections, st.MaxUDP)
				for _, k := range sortedKeys(st.Counters) {
					fmt.Fprintf(tw, "%s\t%d\n", k, st.Counters[k])
				}
				for _, k := range sortedKeys(st.Drops) {
					if st.Drops[k] > 0 {
						fmt.Fprintf(tw, "drop: %s\t%d\n", k, st.Drops[k])
					}
				}
				for _, r := range st.RuleHits {
					fmt.Fprintf(tw, "rule %d (%s)\t%d hits\n", r.ID, r.Action, r.Hits)
				}
				return tw.Flush()
			})
		},
	}
	var vnic, file string
	activate := &cobra.Command{
		Use:   "activate GUEST --vnic IFNAME --policy FILE",
		Short: "protect a guest's vNIC with a policy",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := readPolicy(file)
			if err != nil {
				return err
			}
			st, err := client().Activate(cmd.Context(), args[0], vnic, p)
			if err != nil {
				return err
			}
			return out(cmd, st, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "%s protected on %s (%d rules, %s)\n", st.ID, st.VNIC, st.Rules, st.Mode)
				return err
			})
		},
	}
	activate.Flags().StringVar(&vnic, "vnic", "", "the guest's vNIC on this host")
	activate.Flags().StringVar(&file, "policy", "", "policy file (JSON)")
	// MarkFlagRequired fails only for a flag that is not defined; both are,
	// just above.
	_ = activate.MarkFlagRequired("vnic")
	_ = activate.MarkFlagRequired("policy")
	var polFile string
	setPolicy := &cobra.Command{
		Use:   "policy GUEST [--set FILE]",
		Short: "show a guest's policy, or replace it atomically",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if polFile == "" {
				p, err := client().Policy(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				return printJSONOr(cmd.OutOrStdout(), true, p, nil)
			}
			p, err := readPolicy(polFile)
			if err != nil {
				return err
			}
			st, err := client().UpdatePolicy(cmd.Context(), args[0], p)
			if err != nil {
				return err
			}
			return out(cmd, st, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "%s: policy %d (%d rules)\n", st.ID, st.PolicyID, st.Rules)
				return err
			})
		},
	}
	setPolicy.Flags().StringVar(&polFile, "set", "", "new policy file (JSON)")
	deactivate := &cobra.Command{
		Use:   "deactivate GUEST",
		Short: "stop protecting a guest",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := client().Deactivate(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s unprotected\n", args[0])
			return nil
		},
	}
	var limit int
	conns := &cobra.Command{
		Use:   "connections GUEST",
		Short: "list a guest's tracked connections",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cs, err := client().Connections(cmd.Context(), args[0], limit)
			if err != nil {
				return err
			}
			return out(cmd, cs, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "PROTO\tGUEST\tREMOTE\tSTATE\tOPENED BY\tRULE\tPACKETS OUT/IN")
				for _, c := range cs {
					by := "remote"
					if c.FromGuest {
						by = "guest"
					}
					fmt.Fprintf(tw, "%d\t%s:%d\t%s:%d\t%s\t%s\t%d\t%d/%d\n", c.Proto, c.GuestAddr, c.GuestPort, c.RemoteAddr, c.RemotePort, c.State, by, c.RuleID, c.Packets[0], c.Packets[1])
				}
				return tw.Flush()
			})
		},
	}
	conns.Flags().IntVar(&limit, "limit", 1000, "at most this many")
	var evGuest string
	var evLimit int
	eventsCmd := &cobra.Command{
		Use:   "events",
		Short: "show recent firewall events (denies, log-only hits, invalid packets, table full), folded",
		RunE: func(cmd *cobra.Command, _ []string) error {
			es, err := client().Events(cmd.Context(), evGuest, evLimit)
			if err != nil {
				return err
			}
			return out(cmd, es, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "LAST\tGUEST\tKIND\tREASON\tRULE\tPROTO\tSRC\tDST\tDPORT\tCOUNT\tMESSAGE")
				for _, e := range es {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\t%d\t%d\t%s\n", e.Last.Format(time.TimeOnly), e.Guest, e.Kind, e.Reason, e.RuleID, e.Proto, e.Src, e.Dst, e.Dport, e.Count, e.Message)
				}
				return tw.Flush()
			})
		},
	}
	eventsCmd.Flags().StringVar(&evGuest, "guest", "", "only this guest")
	eventsCmd.Flags().IntVar(&evLimit, "limit", 100, "at most this many")
	inspection := &cobra.Command{
		Use:   "inspection",
		Short: "show the inline inspection path: held, sent, verdicts, offloads, fail-open and fail-closed decisions",
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := client().Inspection(cmd.Context())
			if err != nil {
				return err
			}
			return out(cmd, st, func(w io.Writer) error {
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintf(tw, "slow path bound\t%v\n", st.Bound)
				fmt.Fprintf(tw, "held / sent\t%d / %d in %d batches\n", st.Held, st.Sent, st.Batches)
				fmt.Fprintf(tw, "pending\t%d packets, %d bytes\n", st.Pending, st.PendingBytes)
				fmt.Fprintf(tw, "verdicts\tallow %d, drop %d, reject %d (late %d)\n", st.Verdicts["allow"], st.Verdicts["drop"], st.Verdicts["reject"], st.Late)
				fmt.Fprintf(tw, "delivered\treinjected %d, dropped %d, rejected %d\n", st.Reinjected, st.DroppedByVerdict, st.Rejected)
				fmt.Fprintf(tw, "flows\toffloaded %d, blocked %d\n", st.Offloads, st.Blocks)
				fmt.Fprintf(tw, "tap\tcopies %d, verdicts %d, would drop %d\n", st.TapCopies, st.TapVerdicts, st.TapWouldDrop)
				fmt.Fprintf(tw, "problems\tmalformed held packets %d, write errors %d, flow decisions not told %d, events not understood %d\n",
					st.Malformed, st.WriteErrors, st.FlowDecisionErrors, st.MalformedEvents)
				for _, k := range sortedKeys(st.FailOpen) {
					fmt.Fprintf(tw, "fail-open: %s\t%d\n", k, st.FailOpen[k])
				}
				for _, k := range sortedKeys(st.FailClosed) {
					fmt.Fprintf(tw, "fail-closed: %s\t%d\n", k, st.FailClosed[k])
				}
				return tw.Flush()
			})
		},
	}
	for _, c := range []*cobra.Command{guestsCmd, stats, activate, setPolicy, deactivate, conns, eventsCmd, inspection} {
		c.Flags().BoolVar(&asJSON, "json", false, "print JSON")
		root.AddCommand(c)
	}
}

// printJSONOr prints v as JSON, or as text.
func printJSONOr(w io.Writer, asJSON bool, v any, text func(w io.Writer) error) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	return text(w)
}

func sortedKeys(m map[string]uint64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
