// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* Traffic for the fast-path benchmark, all XDP:
 *
 * - gen runs with BPF_PROG_TEST_RUN in live-frames mode in the generator's
 *   namespace: it writes a whole Ethernet/IPv4/UDP header from a template
 *   into each frame (pages come back from the stack modified: TTL, MACs),
 *   sets the UDP source port from a per-CPU counter, and sends the frame out
 *   of its veth with XDP_TX (or drops it, to time the generator alone);
 * - relay sits on the receiving end of that veth in the host namespace (veth
 *   needs NAPI there for XDP frames), counts, and passes the frame to the
 *   stack (or drops it, to time generator plus veth hand-off);
 * - sink sits on the guest's interface, counts the benchmark's UDP frames
 *   and drops everything. */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define HDR_LEN (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr))
#define SPORT_OFF (sizeof(struct ethhdr) + sizeof(struct iphdr))

enum bench_counter {
	CNT_GENERATED = 0,
	CNT_RELAYED = 1,
	CNT_DELIVERED = 2,
	CNT_MAX = 4,
};

struct bench_cfg {
	__u8 hdr[48];        /* Ethernet + IPv4 + UDP header template, HDR_LEN bytes used */
	__u32 flows;         /* distinct source ports to cycle through; <= 1: one fixed flow */
	__u32 gen_action;    /* XDP_TX, or XDP_DROP to time the generator alone */
	__u32 relay_action;  /* XDP_PASS, or XDP_DROP to time generator + veth hand-off */
	__u16 sink_port;     /* UDP destination port the sink counts (network order) */
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bench_cfg);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Anchored so bpf2go emits the enum. */
const volatile enum bench_counter bench_counter_anchor = CNT_GENERATED;

static __always_inline void bump(__u32 c)
{
	__u64 *n = bpf_map_lookup_elem(&counters, &c);
	if (n)
		*n += 1; /* per-CPU */
}

SEC("xdp")
int gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0, gc = CNT_GENERATED;
	struct bench_cfg *cfg = bpf_map_lookup_elem(&config, &zero);
	__u64 *n = bpf_map_lookup_elem(&counters, &gc);
	if (!cfg || !n || data + HDR_LEN > end)
		return XDP_ABORTED;
	__builtin_memcpy(data, cfg->hdr, HDR_LEN);
	if (cfg->flows > 1) {
		struct udphdr *uh = data + SPORT_OFF;
		__u16 base = bpf_ntohs(uh->source);
		uh->source = bpf_htons((__u16)(base + (__u32)(*n % cfg->flows)));
	}
	*n += 1;
	return cfg->gen_action;
}

SEC("xdp")
int relay(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct bench_cfg *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return XDP_PASS;
	bump(CNT_RELAYED);
	return cfg->relay_action;
}

SEC("xdp")
int sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct bench_cfg *cfg = bpf_map_lookup_elem(&config, &zero);
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *uh = data + SPORT_OFF;
	if (!cfg || data + HDR_LEN > end)
		return XDP_DROP;
	if (eth->h_proto == bpf_htons(ETH_P_IP) && ip->ihl == 5 && ip->protocol == IPPROTO_UDP &&
	    uh->dest == cfg->sink_port)
		bump(CNT_DELIVERED);
	return XDP_DROP;
}
