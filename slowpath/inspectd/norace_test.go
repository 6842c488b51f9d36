//go:build !race

package inspectd_test

const (
	raceDivisor  = 1
	latencySlack = 3
)
