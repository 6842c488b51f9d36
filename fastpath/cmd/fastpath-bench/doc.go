// Command fastpath-bench measures Palisade's datapath in one run and prints
// two tables: the in-kernel cost per packet (BPF_PROG_TEST_RUN) of an
// established flow and of classifying a new flow at 10 to 10,000 rules, and
// the packet rate real traffic reaches over veth between network namespaces
// with Palisade, nftables and iptables filtering the same rules, as ratios
// to unfiltered forwarding measured in the same run. It runs as root, inside
// namespaces it creates and removes (go tool task bench:fastpath).
package main
