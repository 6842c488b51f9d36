// Command ips-bench measures the IPS engine's scan throughput on one core
// over a generated HTTP corpus at 100, 1,000 and 10,000 content rules,
// against a naive per-rule bytes.Index scan and one Go regexp alternation
// of all patterns, and prints the table. Everything it reports is measured
// in the same run: go run ./slowpath/ips/cmd/ips-bench
package main
