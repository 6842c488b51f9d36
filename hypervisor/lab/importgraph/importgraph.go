package importgraph

import (
	"maps"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// Module is the import path prefix of this repository's packages.
const Module = "github.com/palisade/palisade/"

// Deps are a package's transitive imports outside the standard library.
type Deps struct {
	Root string
	via  map[string]string // package -> the package importing it on a shortest path from Root
}

// Graph is every non-standard package go list found, with its direct
// imports.
type Graph map[string][]string

// Of lists the transitive imports of pkg (an import path) outside the
// standard library; the test fails if the go tool cannot list them.
func Of(t testing.TB, pkg string) Deps {
	t.Helper()
	return List(t, pkg).From(pkg)
}

// From is what pkg imports, directly or not, with the shortest paths.
func (g Graph) From(pkg string) Deps {
	via := map[string]string{pkg: ""}
	for queue := []string{pkg}; len(queue) > 0; queue = queue[1:] {
		for _, imp := range g[queue[0]] {
			if _, seen := via[imp]; !seen && g[imp] != nil {
				via[imp] = queue[0]
				queue = append(queue, imp)
			}
		}
	}
	return Deps{Root: pkg, via: via}
}

// Packages are the packages of the graph that match prefix (Under), sorted.
func (g Graph) Packages(prefix string) []string {
	var out []string
	for p := range g {
		if Under(p, prefix) {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// List runs go list -deps over pattern (a package or "./..." from the
// working directory): each non-standard package with its direct imports.
func List(t testing.TB, pattern string) Graph {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool lists the imports: %v", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f",
		`{{if not .Standard}}{{.ImportPath}} {{join .Imports " "}}{{end}}`, pattern).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pattern, err)
	}
	graph := Graph{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			graph[f[0]] = f[1:]
		}
	}
	return graph
}

// Packages are the listed packages, Root included, sorted.
func (d Deps) Packages() []string { return slices.Sorted(maps.Keys(d.via)) }

// Has says whether pkg is among them.
func (d Deps) Has(pkg string) bool {
	_, ok := d.via[pkg]
	return ok
}

// Chain is the import path from Root to pkg: "a -> b -> pkg".
func (d Deps) Chain(pkg string) string {
	path := []string{pkg}
	for p := d.via[pkg]; p != ""; p = d.via[p] {
		path = append([]string{p}, path...)
	}
	return strings.Join(path, " -> ")
}

// Under says whether pkg is prefix or a package below it.
func Under(pkg, prefix string) bool { return pkg == prefix || strings.HasPrefix(pkg, prefix+"/") }
