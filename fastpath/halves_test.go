package fastpath_test

import (
	"strings"
	"testing"

	"github.com/palisade/palisade/hypervisor/lab/importgraph"
)

const module = importgraph.Module

// The two halves meet at the wire contract: a product package of one half
// never links the other half's code, only fastpath/channel, which both
// speak. Benchmarks and test fixtures may wire the halves together (a
// punt bench runs a real inspection service); they are listed here by name.
var crossHalfAllowed = []string{
	module + "fastpath/bench",                // benches drive the slow path's inspection service
	module + "fastpath/cmd/punt-bench",       //
	module + "slowpath/inspectd/inspecttest", // a real fast-path binding server for the slow path's tests
}

func TestHalvesMeetOnlyAtTheChannel(t *testing.T) {
	graph := importgraph.List(t, module+"...")
	checked := 0
	for _, half := range []struct{ own, other string }{{"fastpath", "slowpath"}, {"slowpath", "fastpath"}} {
		for _, pkg := range graph.Packages(module + half.own) {
			if allowedAcross(pkg) {
				continue
			}
			checked++
			deps := graph.From(pkg)
			for _, dep := range deps.Packages() {
				if importgraph.Under(dep, module+half.other) && !importgraph.Under(dep, module+"fastpath/channel") {
					t.Errorf("%s links the other half: %s", pkg, deps.Chain(dep))
				}
			}
		}
	}
	if checked < 20 {
		t.Fatalf("checked %d packages: is the listing broken?", checked)
	}
}

func allowedAcross(pkg string) bool {
	for _, a := range crossHalfAllowed {
		if importgraph.Under(pkg, a) {
			return true
		}
	}
	return strings.HasSuffix(pkg, ".test")
}
