// Package punt measures Palisade's inline inspection path end to end: the
// real fastpathd and slowpathd holding, punting and reinjecting a guest's
// packets, against a Linux NFQUEUE baseline (br_netfilter and an iptables
// NFQUEUE rule in the host namespace, answered by a Go verdict loop) on the
// same lab topology and traffic. It owns the topology (a lab Site with one
// appliance, a guest and a peer on the host's vSwitch), the three filter
// configurations (none, Palisade, NFQUEUE), the traffic (a UDP flood, a UDP
// ping-pong, a long TCP transfer), the CPU accounting and the report that
// `go run ./fastpath/cmd/punt-bench` prints.
//
// Everything runs inside lab namespaces; iptables and nft only ever run in
// the lab's host namespace through `ip netns exec`.
package punt
