// Command punt-bench measures Palisade's inline inspection path in one run
// and prints three tables: the UDP packet rate delivered to a guest whose
// traffic is held for the slow path (the real fastpathd and slowpathd)
// against an NFQUEUE baseline and no filter; the round-trip latency each
// adds; and the share of a long TCP flow's packets that still leave the
// kernel once slowpathd offloads it. It runs as root, inside namespaces it
// creates and removes (go tool task bench:punt). The measurements are in
// fastpath/bench/punt.
package main
