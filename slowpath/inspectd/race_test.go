//go:build race

package inspectd_test

// The race detector slows everything down several times.
const (
	raceDivisor  = 5
	latencySlack = 10
)
