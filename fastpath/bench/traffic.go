package bench

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/palisade/palisade/fastpath/datapath"
)

// TrafficTarget is what the last rule of the traffic runs matches: UDP from
// the generator's network to the guest's port.
var TrafficTarget = Target{Proto: "udp", Src: GenNet, Port: GuestPort}

// TrafficPlan says what RunTraffic measures.
type TrafficPlan struct {
	Counts []int   // rule counts
	Shapes []Shape // traffic shapes
	// Filters are measured in this order; the first is the baseline the
	// others' ratios refer to.
	Filters []Filter
	Cycles  int           // each cycle measures every filter once
	Dur     time.Duration // one measurement
	Warmup  time.Duration // traffic sent after installing, before measuring
	Seed    uint64
	// Progress, if set, hears of every measurement.
	Progress func(n int, f Filter, s Shape, r Result)
}

// Cell is one filter at one rule count and shape.
type Cell struct {
	Runs []Result // one per cycle
	// Counters is what Palisade's datapath counted over the measured runs
	// (not the warm-up), for Palisade only.
	Counters map[string]uint64
}

// Median is the median delivered rate.
func (c *Cell) Median() float64 {
	v := make([]float64, len(c.Runs))
	for i, r := range c.Runs {
		v[i] = r.PPS()
	}
	return Median(v)
}

// CellKey names a cell.
type CellKey struct {
	Rules  int
	Shape  string
	Filter string
}

// TrafficResults are RunTraffic's measurements.
type TrafficResults struct {
	Cells     map[CellKey]*Cell
	Conntrack int // most conntrack entries seen in the host namespace; -1: conntrack not loaded
}

// Ratio is the median over cycles of a's rate divided by b's, measured in
// the same cycle (so slow drifts of the machine cancel out).
func (r *TrafficResults) Ratio(rules int, shape, a, b string) float64 {
	ca, cb := r.Cells[CellKey{rules, shape, a}], r.Cells[CellKey{rules, shape, b}]
	if ca == nil || cb == nil {
		return 0
	}
	var v []float64
	for i := range ca.Runs {
		if i < len(cb.Runs) && cb.Runs[i].PPS() > 0 {
			v = append(v, ca.Runs[i].PPS()/cb.Runs[i].PPS())
		}
	}
	return Median(v)
}

// counting is a filter whose datapath counters can be read while installed.
type counting interface {
	Counters() (datapath.Counters, error)
}

// RunTraffic measures every filter at every rule count and shape. For each
// rule count it runs Cycles cycles; a cycle installs each filter in turn
// (n-1 rules that do not match the traffic, then one that allows it),
// measures each shape after a warm-up, and removes the filter again.
func RunTraffic(ctx context.Context, t *Topology, p TrafficPlan) (*TrafficResults, error) {
	res := &TrafficResults{Cells: map[CellKey]*Cell{}, Conntrack: -1}
	for _, n := range p.Counts {
		rules := Rules(n, TrafficTarget, true, p.Seed)
		for c := 0; c < p.Cycles; c++ {
			for _, f := range p.Filters {
				if err := measureFilter(ctx, t, p, n, rules, f, res); err != nil {
					return res, err
				}
			}
			ct, err := ConntrackCount(t.Host)
			if err != nil {
				return res, err
			}
			res.Conntrack = max(res.Conntrack, ct)
		}
	}
	return res, nil
}

func measureFilter(ctx context.Context, t *Topology, p TrafficPlan, n int, rules []Rule, f Filter, res *TrafficResults) (err error) {
	if err := f.Install(rules); err != nil {
		return fmt.Errorf("%s with %d rules: %w", f.Name(), n, err)
	}
	defer func() {
		if rerr := f.Remove(); rerr != nil && err == nil {
			err = fmt.Errorf("%s: remove: %w", f.Name(), rerr)
		}
	}()
	cf, counts := f.(counting)
	for _, s := range p.Shapes {
		if _, err := t.Send(ctx, s, Deliver, p.Warmup); err != nil {
			return err
		}
		var before datapath.Counters
		if counts {
			if before, err = cf.Counters(); err != nil {
				return err
			}
		}
		r, err := t.Send(ctx, s, Deliver, p.Dur)
		if err != nil {
			return err
		}
		key := CellKey{n, s.Name, f.Name()}
		cell := res.Cells[key]
		if cell == nil {
			cell = &Cell{}
			res.Cells[key] = cell
		}
		cell.Runs = append(cell.Runs, r)
		if counts {
			after, err := cf.Counters()
			if err != nil {
				return err
			}
			if cell.Counters == nil {
				cell.Counters = map[string]uint64{}
			}
			for k, v := range after.Values {
				cell.Counters[k] += v - before.Values[k]
			}
		}
		if p.Progress != nil {
			p.Progress(n, f, s, r)
		}
	}
	return nil
}

// Median of v (the mean of the middle two for an even count).
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
