// Package importgraph lets tests hold the layout to its rules: it lists a
// package's transitive imports (through `go list -deps`) with the path by
// which each is reached, so a test that forbids an import can say where it
// comes from.
package importgraph
