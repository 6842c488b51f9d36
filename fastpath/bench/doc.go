// Package bench measures Palisade's datapath: its in-kernel cost per packet
// with BPF_PROG_TEST_RUN, and real traffic from an XDP generator through a
// forwarding namespace to a guest's XDP sink over veth, with Palisade,
// nftables and iptables filtering the same generated rules. It owns the
// traffic programs (bpf/), the rule generator and its nftables/iptables
// renderings, and the lab topology the traffic runs in.
package bench
