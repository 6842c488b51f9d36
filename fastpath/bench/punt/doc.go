// Package punt measures Palisade's inline inspection path end to end (the
// real fastpathd and slowpathd holding, punting and reinjecting a guest's
// packets) against an NFQUEUE baseline and no filter, on one lab topology:
// UDP throughput, round-trip latency and the offload of a long TCP flow.
// iptables and nft only ever run inside the lab's host namespace.
package punt
