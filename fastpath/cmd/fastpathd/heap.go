package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/palisade/palisade/fastpath/control"
	"github.com/palisade/palisade/fastpath/control/api"
	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/fastpath/heap"
	"github.com/palisade/palisade/fastpath/policy"
)

// openBudget measures the kernel's costs and the datapath's own memory and
// opens the budget the flags ask for.
func openBudget(o options, dp *datapath.Datapath) (*heap.Budget, heap.Costs, error) {
	max, err := api.ParseSize(o.heapMax)
	if err != nil {
		return nil, heap.Costs{}, fmt.Errorf("--heap-max: %w", err)
	}
	reserve, err := api.ParseSize(o.heapReserve)
	if err != nil {
		return nil, heap.Costs{}, fmt.Errorf("--heap-reserve: %w", err)
	}
	if o.puntQueue < 1 {
		return nil, heap.Costs{}, fmt.Errorf("--punt-queue %d: want at least 1", o.puntQueue)
	}
	b, costs, err := heap.ForDatapath(dp, max, reserve)
	costs.PuntQueue = o.puntQueue
	return b, costs, err
}

func heapCommand(o *options) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "heap",
		Short: "show the memory budget: max, reserved, free, kernel-measured, per guest, failures",
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := control.NewClient(o.controlSocket).Heap(cmd.Context())
			if err != nil {
				return err
			}
			return printJSONOr(cmd.OutOrStdout(), asJSON, r, func(w io.Writer) error { return printHeap(w, r) })
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(&cobra.Command{
		Use:   "set SIZE",
		Short: "change the budget at runtime (e.g. 512MiB); refused below what is reserved; kept across restarts while --heap-max is unchanged",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := control.NewClient(o.controlSocket).SetHeap(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "heap max %s, %s free\n", api.FormatSize(r.Max), api.FormatSize(r.Free))
			return nil
		},
	}, sizeCommand(o))
	return cmd
}

func printHeap(w io.Writer, r api.HeapReport) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "max\t%s\n", api.FormatSize(r.Max))
	fmt.Fprintf(tw, "reserved\t%s\n", api.FormatSize(r.Reserved))
	fmt.Fprintf(tw, "free\t%s\n", api.FormatSize(r.Free))
	fmt.Fprintf(tw, "  datapath base\t%s\n", api.FormatSize(r.Base))
	fmt.Fprintf(tw, "  migration reserve\t%s\n", api.FormatSize(r.Reserve))
	fmt.Fprintf(tw, "kernel-measured\t%s (kernel part of reserved: %s)\n", api.FormatSize(r.KernelMeasured), api.FormatSize(r.KernelReserved))
	fmt.Fprintf(tw, "failed reservations\t%d\n", r.Failures)
	if f := r.LastFailure; f != nil {
		fmt.Fprintf(tw, "last failure\t%s needed %s, %s free (%s)\n", f.Guest, api.FormatSize(f.Need), api.FormatSize(f.Free), f.At.Format(time.RFC3339))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Guests) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "GUEST\tTCP TABLE\tUDP TABLE\tRULES\tPUNT BUFFERS\tTOTAL\t")
	for _, g := range r.Guests {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", g.Guest, api.FormatSize(g.TCPTable), api.FormatSize(g.UDPTable),
			api.FormatSize(g.Rules), api.FormatSize(g.PuntBuffers), api.FormatSize(g.Total))
	}
	return tw.Flush()
}

// sizeCommand is `fastpathd heap size`: the budget N guests need, computed
// from the same kernel-measured costs the accounting uses, beside the
// original product's formula.
func sizeCommand(o *options) *cobra.Command {
	var guests, rules int
	var maxTCP, maxUDP uint32
	var features string
	cmd := &cobra.Command{
		Use:   "size --guests N --max-tcp T --max-udp U [--features fw,ips,wrs] [--rules R]",
		Short: "compute the heap a host needs (measures this kernel's costs; run as root)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			feat := map[string]bool{}
			for _, f := range strings.Split(features, ",") {
				switch f = strings.TrimSpace(f); f {
				case "":
				case "fw", "ips", "wrs":
					feat[f] = true
				default:
					return fmt.Errorf("--features: unknown feature %q (fw, ips, wrs)", f)
				}
			}
			if guests < 1 || maxTCP < 1 || maxUDP < 1 {
				return fmt.Errorf("--guests, --max-tcp and --max-udp must be positive")
			}
			costs, err := heap.Measure()
			if err != nil {
				return err
			}
			base, err := datapath.MeasureBase(o.store.config())
			if err != nil {
				return err
			}
			reserve, err := api.ParseSize(o.heapReserve)
			if err != nil {
				return err
			}
			p := typicalPolicy(rules, maxTCP, maxUDP, feat["ips"] || feat["wrs"])
			c, err := policy.Compile(p)
			if err != nil {
				return err
			}
			g := costs.ForPolicy("typical", p, c)
			total := base + reserve + uint64(guests)*g.Total
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintf(w, "per connection\t%.0f B at %d TCP, %.0f B at %d UDP (entry %d B + buckets %d B each, power-of-two sized)\n",
				costs.PerConnection(maxTCP), maxTCP, costs.PerConnection(maxUDP), maxUDP, costs.EntryBytes, costs.BucketBytes)
			fmt.Fprintf(w, "per guest\t%s = tables %s + %s, rules %s (%d rules, %d trie entries), punt buffers %s\n",
				api.FormatSize(g.Total), api.FormatSize(g.TCPTable), api.FormatSize(g.UDPTable), api.FormatSize(g.Rules),
				rules, g.TrieEntries, api.FormatSize(g.PuntBuffers))
			fmt.Fprintf(w, "datapath base\t%s\n", api.FormatSize(base))
			fmt.Fprintf(w, "migration reserve\t%s\n", api.FormatSize(reserve))
			fmt.Fprintf(w, "Palisade needs\t%s for %d guests\n", api.FormatSize(total), guests)
			fit := uint64(0)
			if fixed := base + reserve; fixed < uint64(heap.DefaultMax) {
				fit = min((uint64(heap.DefaultMax)-fixed)/g.Total, uint64(datapath.MaxGuests))
			}
			fmt.Fprintf(w, "  in 256 MiB\t%d such guests fit\n", fit)
			orig := originalFormula(guests, maxTCP, maxUDP, feat["fw"] || feat["ips"] || feat["wrs"])
			fmt.Fprintf(w, "original formula\t%.1f MB  (%s)\n", float64(orig)/1e6, originalText(feat["fw"] || feat["ips"] || feat["wrs"]))
			if perGuest := originalFormula(1, maxTCP, maxUDP, feat["fw"] || feat["ips"] || feat["wrs"]) - 10e6; perGuest > 0 {
				fmt.Fprintf(w, "  in 256 MB\t%d guests fit\n", (256e6-10e6)/perGuest)
			}
			return w.Flush()
		},
	}
	cmd.Flags().IntVar(&guests, "guests", 0, "number of protected guests")
	cmd.Flags().Uint32Var(&maxTCP, "max-tcp", 0, "max TCP connections per guest")
	cmd.Flags().Uint32Var(&maxUDP, "max-udp", 0, "max UDP connections per guest")
	cmd.Flags().StringVar(&features, "features", "fw", "features per guest: fw, ips, wrs")
	cmd.Flags().IntVar(&rules, "rules", 50, "firewall rules per guest (a typical mix is assumed)")
	return cmd
}

// originalFormula is the vendor's sizing rule (seed 000), in bytes:
// VMs x 3 MB + 10 MB, plus VMs x 512 B x (TCP + UDP connections) with
// firewall, IPS or web reputation.
func originalFormula(vms int, tcp, udp uint32, features bool) uint64 {
	n := uint64(vms)*3e6 + 10e6
	if features {
		n += uint64(vms) * 512 * (uint64(tcp) + uint64(udp))
	}
	return n
}

func originalText(features bool) string {
	if features {
		return "VMs x 3 MB + VMs x 512 B x (max TCP + max UDP) + 10 MB"
	}
	return "VMs x 3 MB + 10 MB"
}

// typicalPolicy is the rule mix sizing assumes: per rule one source CIDR and
// one or two destination ports, as a web-tier policy looks.
func typicalPolicy(rules int, maxTCP, maxUDP uint32, inspect bool) *policy.Policy {
	p := &policy.Policy{MaxTCP: maxTCP, MaxUDP: maxUDP}
	for i := 0; i < rules; i++ {
		r := policy.Rule{ID: uint32(i + 1), Action: policy.Allow, Direction: policy.Inbound, Protocol: "tcp",
			Source:           []string{fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)},
			DestinationPorts: []string{fmt.Sprint(1000 + i)}}
		if i%3 == 0 {
			r.DestinationPorts = append(r.DestinationPorts, fmt.Sprintf("%d-%d", 20000+i*10, 20000+i*10+9))
		}
		p.Rules = append(p.Rules, r)
	}
	if inspect {
		p.Inspection = []string{"ips"}
	}
	if err := p.Normalize(); err != nil {
		panic(err) // the generated rules are valid by construction
	}
	return p
}
