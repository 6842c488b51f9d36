package control_test

import (
	"testing"

	"github.com/palisade/palisade/hypervisor/lab/importgraph"
)

const module = importgraph.Module

// TestClientLinksNeitherDatapathNorNetlink keeps the client light: the agent
// and the console link it, and must not link cilium/ebpf, netlink or the
// daemon's internals through it.
func TestClientLinksNeitherDatapathNorNetlink(t *testing.T) {
	deps := importgraph.Of(t, module+"fastpath/control")
	for _, want := range []string{"fastpath/control/api", "hypervisor/localapi"} {
		if !deps.Has(module + want) {
			t.Fatalf("the import list lacks %s, which the client uses: is the listing broken? %v", want, deps.Packages())
		}
	}
	forbidden := []string{"github.com/cilium/ebpf", "github.com/vishvananda/netlink", "github.com/mdlayher/netlink"}
	for _, p := range []string{"datapath", "guests", "punt", "heap", "events", "bindserver", "control/server"} {
		forbidden = append(forbidden, module+"fastpath/"+p)
	}
	for _, pkg := range deps.Packages() {
		for _, f := range forbidden {
			if importgraph.Under(pkg, f) {
				t.Errorf("the client links %s: %s", f, deps.Chain(pkg))
			}
		}
	}
}

// TestAPIImportsOnlyThePolicyFormat keeps the contract free of
// dependencies: the standard library and the policy format only.
func TestAPIImportsOnlyThePolicyFormat(t *testing.T) {
	deps := importgraph.Of(t, module+"fastpath/control/api")
	for _, pkg := range deps.Packages() {
		switch pkg {
		case module + "fastpath/control/api", module + "fastpath/policy":
		default:
			t.Errorf("the API contract imports %s: %s", pkg, deps.Chain(pkg))
		}
	}
}
