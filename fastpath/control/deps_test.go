package control_test

import (
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// imports lists pkg's transitive imports outside the standard library, each
// with the package that imports it on a shortest path from pkg.
func imports(t *testing.T, pkg string) map[string]string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool lists the imports: %v", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", `{{if not .Standard}}{{.ImportPath}} {{join .Imports " "}}{{end}}`, pkg).Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pkg, err)
	}
	graph := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 {
			graph[f[0]] = f[1:]
		}
	}
	via := map[string]string{pkg: ""}
	for queue := []string{pkg}; len(queue) > 0; queue = queue[1:] {
		for _, imp := range graph[queue[0]] {
			if _, seen := via[imp]; !seen && graph[imp] != nil {
				via[imp] = queue[0]
				queue = append(queue, imp)
			}
		}
	}
	return via
}

// chain renders the import path from the root to pkg.
func chain(via map[string]string, pkg string) string {
	path := []string{pkg}
	for p := via[pkg]; p != ""; p = via[p] {
		path = append([]string{p}, path...)
	}
	return strings.Join(path, " -> ")
}

const module = "github.com/palisade/palisade/"

// TestClientLinksNeitherDatapathNorNetlink keeps the client light: the agent
// and the console link it, and must not link cilium/ebpf, netlink or the
// daemon's internals through it.
func TestClientLinksNeitherDatapathNorNetlink(t *testing.T) {
	via := imports(t, module+"fastpath/control")
	for _, want := range []string{"fastpath/control/api", "hypervisor/localapi"} {
		if _, ok := via[module+want]; !ok {
			t.Fatalf("the import list lacks %s, which the client uses: is the listing broken? %v", want, via)
		}
	}
	forbidden := []string{"github.com/cilium/ebpf", "github.com/vishvananda/netlink", "github.com/mdlayher/netlink"}
	for _, p := range []string{"datapath", "guests", "punt", "heap", "events", "bindserver", "control/server"} {
		forbidden = append(forbidden, module+"fastpath/"+p)
	}
	for _, pkg := range slices.Sorted(maps.Keys(via)) {
		for _, f := range forbidden {
			if pkg == f || strings.HasPrefix(pkg, f+"/") {
				t.Errorf("the client links %s: %s", f, chain(via, pkg))
			}
		}
	}
}

// TestAPIImportsOnlyThePolicyFormat keeps the contract free of
// dependencies: the standard library and the policy format only.
func TestAPIImportsOnlyThePolicyFormat(t *testing.T) {
	via := imports(t, module+"fastpath/control/api")
	for _, pkg := range slices.Sorted(maps.Keys(via)) {
		switch pkg {
		case module + "fastpath/control/api", module + "fastpath/policy":
		default:
			t.Errorf("the API contract imports %s: %s", pkg, chain(via, pkg))
		}
	}
}
