// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* Palisade fast path: a stateful firewall on each protected guest's vNIC.
 *
 * One program per direction, attached with TCX to the host side of every
 * protected vNIC. Per packet: parse, find the guest's connection, and either
 * apply the connection's cached verdict or classify the new flow against the
 * guest's rules (per-field LPM lookups intersecting sparse rule bitmaps, so
 * the cost follows the most selective field rather than the rule count). */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "datapath.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* ---- maps ---------------------------------------------------------------- */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_GUESTS);
	/* Not preallocated: a replaced element is freed only after an RCU
	 * grace period, so a packet that holds the old configuration reads it
	 * whole while fastpathd swaps in a new one. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32); /* ifindex */
	__type(value, struct guest_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vnics SEC(".maps");

/* Each guest's table is an LRU hash sized by its policy (the template's
 * max_entries is only a placeholder). */
#define CONN_TABLE                                      \
	struct {                                        \
		__uint(type, BPF_MAP_TYPE_LRU_HASH);    \
		__uint(max_entries, 1);                 \
		__type(key, struct conn_key);           \
		__type(value, struct conn_val);         \
	}

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MAX_GUESTS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, CONN_TABLE);
} conn_tcp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MAX_GUESTS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, CONN_TABLE);
} conn_other SEC(".maps");

/* Live entries per guest table ([slot*2] TCP, [slot*2+1] other): raised here
 * on insert, recounted exactly by fastpathd's sweeper. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_GUESTS * 2);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conn_live SEC(".maps");

#define DIM_MAP(name, keytype)                         \
	struct {                                       \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);   \
		__uint(max_entries, 1 << 20);          \
		__uint(map_flags, BPF_F_NO_PREALLOC);  \
		__type(key, keytype);                  \
		__type(value, struct dim_val);         \
		__uint(pinning, LIBBPF_PIN_BY_NAME);   \
	} name SEC(".maps")

DIM_MAP(dim_src4, struct addr4_key);
DIM_MAP(dim_dst4, struct addr4_key);
DIM_MAP(dim_src6, struct addr6_key);
DIM_MAP(dim_dst6, struct addr6_key);
DIM_MAP(dim_sport, struct sport_key);
DIM_MAP(dim_dport, struct dport_key);

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << 20); /* resized by the loader */
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} words SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << 18); /* resized by the loader */
	__type(key, __u32);
	__type(value, struct rule_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1 << 18); /* same size as rules */
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rule_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_GUESTS);
	__type(key, __u32);
	__type(value, struct guest_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} guest_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct frag_key);
	__type(value, struct frag_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_GUESTS);
	__type(key, __u32);
	__type(value, struct event_budget);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} event_budgets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct settings);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} settings_map SEC(".maps");

/* Per guest slot: non-zero while fastpathd holds as much of the guest's
 * traffic as it may. The datapath then sheds the guest's inspected packets by
 * its fail policy itself, instead of copying each to user space first. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_GUESTS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} punt_congested SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384); /* decisions live until a packet applies them */
	__type(key, struct decision_key);
	__type(value, struct flow_decision);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flow_decisions SEC(".maps");


/* Updating a map-of-maps from user space waits for every running program
 * (synchronize_rcu): fastpathd does so before it reuses what an old policy
 * used. No program reads this map. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_ARRAY);
		__uint(max_entries, 1);
		__type(key, __u32);
		__type(value, __u32);
	});
} rcu_barrier SEC(".maps");

/* Clang describes a type in BTF only as far as it is used: the inner map's
 * key and value (reached through nested pointers), the event (a ring-buffer
 * record) and the enums (constants) would be forward declarations or absent.
 * The loader and bpf2go need them whole, so they are anchored here. */
struct btf_anchor {
	struct conn_key conn_key;
	struct conn_val conn_val;
	struct event event;
	struct punt_meta punt_meta;
	enum limits limits;
	enum tcx_verdict tcx_verdict;
	enum direction direction;
	enum guest_mode guest_mode;
	enum rule_action rule_action;
	enum invalid_policy invalid_policy;
	enum frag_policy frag_policy;
	enum guest_flags guest_flags;
	enum timeout_index timeout_index;
	enum tcp_state tcp_state;
	enum pseudo_state pseudo_state;
	enum flow_verdict flow_verdict;
	enum conn_flags conn_flags;
	enum initiator initiator;
	enum counter counter;
	enum drop_reason drop_reason;
	enum event_kind event_kind;
	enum punt_magic punt_magic;
	enum punt_flags punt_flags;
	enum punt_marks punt_marks;
	enum back_mark back_mark;
};
const volatile struct btf_anchor btf_anchor = {};

/* ---- packet parsing ------------------------------------------------------ */

enum l2_class {
	L2_IP = 0,
	L2_ARP = 1,
	L2_NON_IP = 2,
	L2_MALFORMED = 3,
};

#define FRAG_NONE 0
#define FRAG_FIRST 1
#define FRAG_LATER 2

#define TCPF_FIN 0x01
#define TCPF_SYN 0x02
#define TCPF_RST 0x04
#define TCPF_PSH 0x08
#define TCPF_ACK 0x10
#define TCPF_URG 0x20

#define IPPROTO_ICMPV6_ 58

struct pkt {
	__u32 src[4];
	__u32 dst[4];
	__u16 sport; /* host order */
	__u16 dport;
	__u32 l4off;
	__u32 frag_id;
	__u8 proto;
	__u8 family; /* 4 or 6 */
	__u8 tcp_flags;
	__u8 frag;
	__u8 icmp_type;
	__u8 icmp_code;
	__u16 icmp_id;
	__u32 ip_end;  /* offset just past the IP datagram */
	__u32 payload; /* TCP payload bytes */
	__u8 frag_proto; /* what follows the fragmentation: the same in every fragment */
	__u8 pad[3];
};

/* Per-CPU scratch space for values too big for the 512-byte stack. */
struct scratch {
	struct conn_val nv;
	struct frag_key fk;
	struct pkt pkt; /* the packet being judged */
	struct pkt alt; /* the packet seen from the flow's other side */
	struct punt_meta meta; /* parked for the punt device's egress program */
	__u32 meta_tag;        /* the mark of the packet it belongs to */
	__u32 pad;
	__u64 punt_seq; /* this CPU's held-packet numbers */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_map SEC(".maps");

static __always_inline int parse_l4(struct __sk_buff *skb, struct pkt *p)
{
	if (p->frag == FRAG_LATER)
		return 0;
	switch (p->proto) {
	case IPPROTO_TCP: {
		struct tcphdr th;
		if (bpf_skb_load_bytes(skb, p->l4off, &th, sizeof(th)))
			return -1;
		p->sport = bpf_ntohs(th.source);
		p->dport = bpf_ntohs(th.dest);
		p->tcp_flags = ((__u8 *)&th)[13];
		__u32 hdr_end = p->l4off + th.doff * 4;
		p->payload = p->ip_end > hdr_end ? p->ip_end - hdr_end : 0;
		return 0;
	}
	case IPPROTO_UDP: {
		struct udphdr uh;
		if (bpf_skb_load_bytes(skb, p->l4off, &uh, sizeof(uh)))
			return -1;
		p->sport = bpf_ntohs(uh.source);
		p->dport = bpf_ntohs(uh.dest);
		return 0;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6_: {
		__u8 h[8];
		if (bpf_skb_load_bytes(skb, p->l4off, h, sizeof(h)))
			return -1;
		p->icmp_type = h[0];
		p->icmp_code = h[1];
		p->icmp_id = ((__u16)h[4] << 8) | h[5];
		return 0;
	}
	}
	return 0;
}

/* parse_ip fills p from an IP header at off; inner is set when parsing the
 * packet quoted inside an ICMP error (then fragments and truncation matter
 * less: only addresses, protocol and ports are needed). */
static __always_inline int parse_ipv4(struct __sk_buff *skb, __u32 off, struct pkt *p)
{
	struct iphdr ih;
	if (bpf_skb_load_bytes(skb, off, &ih, sizeof(ih)))
		return -1;
	if (ih.version != 4 || ih.ihl < 5)
		return -1;
	p->family = 4;
	p->src[0] = ih.saddr;
	p->dst[0] = ih.daddr;
	p->proto = ih.protocol;
	p->frag_proto = ih.protocol;
	p->l4off = off + ih.ihl * 4;
	p->ip_end = off + bpf_ntohs(ih.tot_len);
	__u16 fo = bpf_ntohs(ih.frag_off);
	if (fo & 0x1fff)
		p->frag = FRAG_LATER;
	else if (fo & 0x2000)
		p->frag = FRAG_FIRST;
	p->frag_id = bpf_ntohs(ih.id);
	return 0;
}

#define IPV6_EXT_MAX 6

static __always_inline int parse_ipv6(struct __sk_buff *skb, __u32 off, struct pkt *p)
{
	struct ipv6hdr ih;
	if (bpf_skb_load_bytes(skb, off, &ih, sizeof(ih)))
		return -1;
	if (ih.version != 6)
		return -1;
	p->family = 6;
	__builtin_memcpy(p->src, &ih.saddr, 16);
	__builtin_memcpy(p->dst, &ih.daddr, 16);
	__u8 next = ih.nexthdr;
	off += sizeof(ih);
	p->ip_end = off + bpf_ntohs(ih.payload_len);
	/* Skip extension headers: hop-by-hop, routing, destination options,
	 * fragment, AH. ESP, no-next-header and unknown ones end the walk and
	 * are the protocol the rules see. */
#pragma unroll
	for (int i = 0; i < IPV6_EXT_MAX; i++) {
		__u8 h[8];
		switch (next) {
		case 0:  /* hop-by-hop */
		case 43: /* routing */
		case 60: /* destination options */
			if (bpf_skb_load_bytes(skb, off, h, 2))
				return -1;
			next = h[0];
			off += (h[1] + 1) * 8;
			break;
		case 51: /* AH */
			if (bpf_skb_load_bytes(skb, off, h, 2))
				return -1;
			next = h[0];
			off += (h[1] + 2) * 4;
			break;
		case 44: { /* fragment */
			if (bpf_skb_load_bytes(skb, off, h, 8))
				return -1;
			next = h[0];
			__u16 fo = ((__u16)h[2] << 8) | h[3];
			if (fo & 0xfff8)
				p->frag = FRAG_LATER;
			else if (fo & 1)
				p->frag = FRAG_FIRST;
			p->frag_id = ((__u32)h[4] << 24) | ((__u32)h[5] << 16) | ((__u32)h[6] << 8) | h[7];
			p->frag_proto = next;
			off += 8;
			/* A later fragment's headers end here: what follows is
			 * the middle of the payload, not more headers. */
			if (p->frag == FRAG_LATER)
				goto done;
			break;
		}
		default:
			goto done;
		}
	}
	/* IPV6_EXT_MAX headers walked: what follows must be the transport
	 * (or ESP, or no next header). One more extension header is more than
	 * we follow: malformed, rather than guessing where the transport is. */
	switch (next) {
	case 0:
	case 43:
	case 44:
	case 51:
	case 60:
		return -1;
	}
done:
	p->proto = next;
	p->l4off = off;
	return 0;
}

static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	__u16 proto;
	if (bpf_skb_load_bytes(skb, 12, &proto, 2))
		return L2_MALFORMED;
	if (proto == bpf_htons(ETH_P_ARP))
		return L2_ARP;
	int err;
	if (proto == bpf_htons(ETH_P_IP))
		err = parse_ipv4(skb, ETH_HLEN, p);
	else if (proto == bpf_htons(ETH_P_IPV6))
		err = parse_ipv6(skb, ETH_HLEN, p);
	else
		return L2_NON_IP;
	if (err || parse_l4(skb, p))
		return L2_MALFORMED;
	return L2_IP;
}

/* ---- counters and events ------------------------------------------------- */

static __always_inline void count(struct guest_counters *gc, int c, __u64 n)
{
	if (gc && c >= 0 && c < C_COUNT)
		gc->c[c] += n; /* per-CPU: no atomics needed */
}

static __always_inline void count_drop(struct guest_counters *gc, int reason)
{
	if (gc && reason >= 0 && reason < DR_COUNT)
		gc->drops[reason]++;
}

/* Token bucket per guest and CPU, so a flood of denied packets costs the
 * ring buffer a bounded number of events; the rest are counted. */
static __always_inline int event_allowed(__u32 slot, __u64 now, struct guest_counters *gc)
{
	__u32 zero = 0;
	struct settings *s = bpf_map_lookup_elem(&settings_map, &zero);
	struct event_budget *b = bpf_map_lookup_elem(&event_budgets, &slot);
	if (!s || !b)
		return 0;
	__u64 rate = s->events_per_sec, burst = s->events_burst;
	if (rate == 0)
		return 1;
	__u64 elapsed = now - b->last_ns;
	/* Open refuses rates above 1e9/s; a zero interval would never refill. */
	__u64 interval = 1000000000ULL / rate;
	__u64 refill = elapsed / (interval ? interval : 1);
	if (refill) {
		b->tokens = b->tokens + refill > burst ? burst : b->tokens + refill;
		b->last_ns = now;
	}
	if (b->tokens == 0) {
		count(gc, C_EVENTS_SUPPRESSED, 1);
		return 0;
	}
	b->tokens--;
	return 1;
}

#define EV(kind, reason, state, rule) \
	((__u64)(kind) | (__u64)(reason) << 8 | (__u64)(state) << 16 | (__u64)(rule) << 32)

/* emit reports a packet through the ring buffer. what is EV(...): BPF calls
 * take five arguments, so the details travel packed in one word. */
static __noinline void emit(struct guest_cfg *cfg, struct pkt *p, int dir, __u64 what)
{
	if (!cfg || !p)
		return;
	__u32 slot = cfg->slot;
	struct guest_counters *gc = bpf_map_lookup_elem(&guest_stats, &slot);
	__u64 now = bpf_ktime_get_ns();
	if (!event_allowed(slot, now, gc))
		return;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(gc, C_EVENTS_SUPPRESSED, 1);
		return;
	}
	e->ts_ns = now;
	e->slot = slot;
	e->rule_id = what >> 32;
	__builtin_memcpy(e->src, p->src, 16);
	__builtin_memcpy(e->dst, p->dst, 16);
	e->sport = p->sport;
	e->dport = (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6_) ? p->icmp_type : p->dport;
	e->kind = what;
	e->reason = what >> 8;
	e->state = what >> 16;
	e->dir = dir;
	e->proto = p->proto;
	e->family = p->family;
	e->tcp_flags = p->tcp_flags;
	e->tap = cfg->mode == MODE_TAP;
	bpf_ringbuf_submit(e, 0);
}

/* ---- classification ------------------------------------------------------ */

struct cls {
	struct dim_val *d[4];
	__u64 s[SUMMARY_WORDS]; /* candidate bitmap words not yet visited */
	__u64 cur;              /* rule bits of the word being visited */
	__u32 cur_base;         /* rule index of its bit 0 */
	__u32 rule_base;
	__u32 rule_count;
	__s32 match;     /* index of the first terminating rule, -1 if none */
	__s32 log_match; /* first log-only rule seen before it, -1 if none */
};

static __always_inline __u32 popcount64(__u64 x)
{
	x = x - ((x >> 1) & 0x5555555555555555ULL);
	x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
	return (x * 0x0101010101010101ULL) >> 56;
}

static __always_inline __u32 ctz64(__u64 x)
{
	return popcount64((x & -x) - 1);
}

/* rank is the position of bitmap word w (summary word q, bits below it)
 * among a bitmap's stored words. */
static __always_inline __u32 rank(__u64 *summary, __u32 q, __u64 below)
{
	__u32 r = popcount64(summary[q] & below);
#pragma unroll
	for (int j = 0; j < SUMMARY_WORDS; j++)
		if (j < q)
			r += popcount64(summary[j]);
	return r;
}

/* field_word is bitmap word w of the rules a field allows: its own bitmap's
 * word or'd with its "any" bitmap's. -1 if a word is missing (a bug). */
static __always_inline int field_word(struct dim_val *d, __u32 q, __u32 b, __u64 *out)
{
	__u64 bit = 1ULL << b, below = bit - 1, w = 0;
	if (d->summary[q] & bit) {
		__u32 idx = d->base + rank(d->summary, q, below);
		__u64 *p = bpf_map_lookup_elem(&words, &idx);
		if (!p)
			return -1;
		w |= *p;
	}
	if (d->any_summary[q] & bit) {
		__u32 idx = d->any_base + rank(d->any_summary, q, below);
		__u64 *p = bpf_map_lookup_elem(&words, &idx);
		if (!p)
			return -1;
		w |= *p;
	}
	*out = w;
	return 0;
}

/* scan_step is one step of the search, run by bpf_loop: either load the
 * next candidate bitmap word (lowest first: rule order is priority order,
 * intersecting the fields' words), or try one rule of the current word. Each
 * step is straight-line code, which keeps the verifier's work small. */
static long scan_step(__u64 i, void *ctx)
{
	struct cls *c = ctx;
	if (c->cur == 0) {
		__u32 q;
		for (q = 0; q < SUMMARY_WORDS; q++)
			if (c->s[q])
				break;
		if (q >= SUMMARY_WORDS)
			return 1; /* no candidates left */
		__u64 sbits = c->s[q];
		__u32 b = ctz64(sbits);
		c->s[q] = sbits & (sbits - 1);
		__u64 word = ~0ULL;
#pragma unroll
		for (int k = 0; k < 4; k++) {
			struct dim_val *d = c->d[k];
			__u64 w;
			if (!d || field_word(d, q, b, &w))
				return 1;
			word &= w;
		}
		c->cur = word;
		c->cur_base = (q * 64 + b) * 64;
		return 0;
	}
	__u64 cur = c->cur;
	__u32 r = c->cur_base + ctz64(cur);
	c->cur = cur & (cur - 1);
	if (r >= c->rule_count)
		return 1;
	__u32 slot = c->rule_base + r;
	struct rule_info *ri = bpf_map_lookup_elem(&rules, &slot);
	if (!ri)
		return 1;
	if (ri->action == ACT_LOG_ONLY) {
		if (c->log_match < 0)
			c->log_match = r;
		return 0;
	}
	c->match = r;
	return 1;
}

/* classify finds the first terminating rule (and the first log-only rule
 * before it) for a packet, or -1 for the policy's default. */
static __always_inline void classify(struct guest_cfg *cfg, struct pkt *p, int dir, struct cls *c)
{
	c->match = -1;
	c->log_match = -1;
	c->rule_base = cfg->rule_base;
	c->rule_count = cfg->rule_count;
	__u8 is_icmp = p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6_;

	if (p->family == 4) {
		struct addr4_key k = {.prefixlen = 64, .policy_id = cfg->policy_id, .addr = p->src[0]};
		c->d[0] = bpf_map_lookup_elem(&dim_src4, &k);
		k.addr = p->dst[0];
		c->d[1] = bpf_map_lookup_elem(&dim_dst4, &k);
	} else {
		struct addr6_key k = {.prefixlen = 160, .policy_id = cfg->policy_id};
		__builtin_memcpy(k.addr, p->src, 16);
		c->d[0] = bpf_map_lookup_elem(&dim_src6, &k);
		__builtin_memcpy(k.addr, p->dst, 16);
		c->d[1] = bpf_map_lookup_elem(&dim_dst6, &k);
	}
	struct sport_key sk = {.prefixlen = 64, .policy_id = cfg->policy_id, .proto = p->proto,
			       .port = bpf_htons(is_icmp || p->frag == FRAG_LATER ? 0 : p->sport)};
	c->d[2] = bpf_map_lookup_elem(&dim_sport, &sk);
	struct dport_key dk = {.prefixlen = 64, .policy_id = cfg->policy_id, .dir = dir, .proto = p->proto,
			       .port = bpf_htons(is_icmp ? p->icmp_type : p->dport)};
	c->d[3] = bpf_map_lookup_elem(&dim_dport, &dk);

	struct dim_val *d0 = c->d[0], *d1 = c->d[1], *d2 = c->d[2], *d3 = c->d[3];
	if (!d0 || !d1 || !d2 || !d3)
		return;
#pragma unroll
	for (int q = 0; q < SUMMARY_WORDS; q++)
		c->s[q] = (d0->summary[q] | d0->any_summary[q]) & (d1->summary[q] | d1->any_summary[q]) &
			  (d2->summary[q] | d2->any_summary[q]) & (d3->summary[q] | d3->any_summary[q]);
	/* Worst case: every candidate word visited and every bit in it a
	 * log-only rule. Typically a handful of steps. */
	bpf_loop(BITMAP_WORDS + MAX_RULES, scan_step, c, 0);
}

/* ---- connection tracking ------------------------------------------------- */

static __always_inline __u32 timeout_for(struct guest_cfg *cfg, struct conn_val *v, __u8 proto)
{
	__u32 i;
	if (proto == IPPROTO_TCP) {
		switch (v->state) {
		case TCP_SYN_SENT:
		case TCP_SYN_RECV:
			i = TO_TCP_SYN;
			break;
		case TCP_ESTABLISHED:
			i = TO_TCP_ESTABLISHED;
			break;
		case TCP_FIN_WAIT:
			i = TO_TCP_FIN_WAIT;
			break;
		case TCP_CLOSE_WAIT:
			i = TO_TCP_CLOSE_WAIT;
			break;
		case TCP_TIME_WAIT:
			i = TO_TCP_TIME_WAIT;
			break;
		default:
			i = TO_TCP_CLOSED;
		}
	} else if (proto == IPPROTO_UDP) {
		i = v->state == PSEUDO_REPLIED ? TO_UDP_REPLIED : TO_UDP;
	} else if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6_) {
		i = TO_ICMP;
	} else {
		i = TO_OTHER;
	}
	if (i >= TO_COUNT)
		return 0;
	return cfg->timeouts[i];
}

static __always_inline int tcp_flags_invalid(__u8 f)
{
	__u8 core = f & (TCPF_SYN | TCPF_ACK | TCPF_RST | TCPF_FIN);
	if (core == 0)
		return 1; /* null scan */
	if ((f & TCPF_SYN) && (f & (TCPF_FIN | TCPF_RST)))
		return 1;
	if ((f & TCPF_FIN) && (f & TCPF_RST))
		return 1;
	if ((f & TCPF_FIN) && !(f & TCPF_ACK))
		return 1; /* FIN without ACK: xmas/FIN scans */
	return 0;
}

#define TRACK_OK 0
#define TRACK_INVALID 1
#define TRACK_NEW 2 /* a fresh SYN on a closing/closed tuple: a new connection */

/* tcp_track advances the connection for one segment. from_init says the
 * segment comes from the side that opened the connection. */
static __always_inline int tcp_track(struct conn_val *v, __u8 f, __u32 payload, int from_init, int from_guest)
{
	__u8 syn = f & TCPF_SYN, ack = f & TCPF_ACK, fin = f & TCPF_FIN;
	if (f & TCPF_RST) {
		/* RST is accepted in every state, TIME_WAIT included (seed 003:
		 * RFC 1337 behaviour broke proxies that reuse ports). */
		v->state = TCP_CLOSED;
		return TRACK_OK;
	}
	switch (v->state) {
	case TCP_SYN_SENT:
		if (syn && !ack && from_init)
			return TRACK_OK; /* retransmitted SYN */
		if (syn && ack && !from_init) {
			v->state = TCP_SYN_RECV;
			return TRACK_OK;
		}
		return TRACK_INVALID;
	case TCP_SYN_RECV:
		if (syn)
			return (ack && !from_init) || (!ack && from_init) ? TRACK_OK : TRACK_INVALID;
		if (ack && from_init)
			v->state = TCP_ESTABLISHED;
		if (fin) {
			v->flags |= from_guest ? CONN_FIN_GUEST : CONN_FIN_REMOTE;
			v->state = TCP_FIN_WAIT;
		}
		return TRACK_OK;
	case TCP_ESTABLISHED:
		/* A SYN-ACK from the responder here is a retransmission: the
		 * initiator's ACK passed us but was lost on the way, and the
		 * responder still waits for it. Dropping it would hang every
		 * protocol whose server speaks first. */
		if (syn)
			return ack && !from_init ? TRACK_OK : TRACK_INVALID;
		if (fin) {
			v->flags |= from_guest ? CONN_FIN_GUEST : CONN_FIN_REMOTE;
			v->state = TCP_FIN_WAIT;
		}
		return TRACK_OK;
	case TCP_FIN_WAIT:
	case TCP_CLOSE_WAIT: {
		__u8 mine = from_guest ? CONN_FIN_GUEST : CONN_FIN_REMOTE;
		/* The same retransmitted SYN-ACK, after the initiator's FIN: the
		 * responder may still wait for the lost ACK, so it has not closed. */
		if (syn)
			return ack && !from_init && !(v->flags & mine) ? TRACK_OK : TRACK_INVALID;
		if (fin)
			v->flags |= mine;
		if ((v->flags & (CONN_FIN_GUEST | CONN_FIN_REMOTE)) == (CONN_FIN_GUEST | CONN_FIN_REMOTE))
			v->state = TCP_TIME_WAIT;
		else if (v->state == TCP_FIN_WAIT && !(v->flags & mine) && ack)
			v->state = TCP_CLOSE_WAIT; /* the other side acked the FIN and stays open */
		return TRACK_OK;
	}
	case TCP_TIME_WAIT:
		if (syn && !ack)
			return TRACK_NEW;
		if (syn || (payload && !fin))
			return TRACK_INVALID; /* data after both sides closed */
		return TRACK_OK; /* last ACK, retransmitted FIN */
	case TCP_CLOSED:
		if (syn && !ack)
			return TRACK_NEW;
		return TRACK_INVALID;
	}
	return TRACK_INVALID;
}

static __always_inline void conn_key_of(struct pkt *p, int dir, struct conn_key *k)
{
	if (dir == DIR_FROM_GUEST) {
		__builtin_memcpy(k->guest_addr, p->src, 16);
		__builtin_memcpy(k->remote_addr, p->dst, 16);
		k->guest_port = p->sport;
		k->remote_port = p->dport;
	} else {
		__builtin_memcpy(k->guest_addr, p->dst, 16);
		__builtin_memcpy(k->remote_addr, p->src, 16);
		k->guest_port = p->dport;
		k->remote_port = p->sport;
	}
	k->proto = p->proto;
	k->family = p->family;
}

static __always_inline int is_icmp_error(struct pkt *p)
{
	if (p->proto == IPPROTO_ICMP)
		return p->icmp_type == 3 || p->icmp_type == 11 || p->icmp_type == 12;
	if (p->proto == IPPROTO_ICMPV6_)
		return p->icmp_type >= 1 && p->icmp_type <= 4;
	return 0;
}

static __always_inline int is_icmp_echo(struct pkt *p, int *request)
{
	if (p->proto == IPPROTO_ICMP && (p->icmp_type == 8 || p->icmp_type == 0)) {
		*request = p->icmp_type == 8;
		return 1;
	}
	if (p->proto == IPPROTO_ICMPV6_ && (p->icmp_type == 128 || p->icmp_type == 129)) {
		*request = p->icmp_type == 128;
		return 1;
	}
	return 0;
}

static __always_inline int is_nd(struct pkt *p)
{
	/* Router/neighbour solicitation and advertisement, redirect, and MLD:
	 * IPv6 does not work without them. */
	if (p->proto != IPPROTO_ICMPV6_)
		return 0;
	__u8 t = p->icmp_type;
	return (t >= 130 && t <= 137) || t == 143;
}

/* related_lookup finds the connection an ICMP error quotes. */
static __noinline int related_lookup(struct __sk_buff *skb, struct pkt *p, int dir, void *tcp, void *other)
{
	struct pkt in = {};
	__u32 off = p->l4off + 8;
	int err = p->family == 4 ? parse_ipv4(skb, off, &in) : parse_ipv6(skb, off, &in);
	if (err)
		return 0;
	if (in.proto == IPPROTO_TCP || in.proto == IPPROTO_UDP) {
		__u16 ports[2];
		if (bpf_skb_load_bytes(skb, in.l4off, ports, 4))
			return 0;
		in.sport = bpf_ntohs(ports[0]);
		in.dport = bpf_ntohs(ports[1]);
	} else if (in.proto == IPPROTO_ICMP || in.proto == IPPROTO_ICMPV6_) {
		__u8 h[8];
		if (bpf_skb_load_bytes(skb, in.l4off, h, 8))
			return 0;
		in.sport = in.dport = ((__u16)h[4] << 8) | h[5];
	}
	/* The quoted packet travelled the other way: an error going to the
	 * guest quotes a packet the guest sent. */
	struct conn_key k = {};
	conn_key_of(&in, dir == DIR_TO_GUEST ? DIR_FROM_GUEST : DIR_TO_GUEST, &k);
	if (in.proto == IPPROTO_ICMP || in.proto == IPPROTO_ICMPV6_)
		k.remote_port = 0;
	void *table = in.proto == IPPROTO_TCP ? tcp : other;
	return bpf_map_lookup_elem(table, &k) != NULL;
}

/* ---- the verdict --------------------------------------------------------- */

struct decision {
	__u8 pass;
	__u8 reason;    /* enum drop_reason when !pass */
	__u8 event;     /* enum event_kind to report, 0 for none */
	__u8 state;     /* connection state for the event */
	__u8 action;    /* the deciding rule's action */
	__u8 punt;      /* PUNT_HELD or PUNT_COPY: send it to the slow path */
	__u8 pad[2];
	__u32 rule_id;  /* rule that decided */
	__s32 log_rule; /* rule id of a log-only match to report, -1 if none */
};

/* decide_by_rules classifies a packet and records the rule's verdict in d.
 * A global function: the verifier checks it once, on its own, instead of at
 * each of its call sites (with its bpf_loop callback every time), and its
 * search state lives in its own stack frame. */
__noinline int decide_by_rules(struct guest_cfg *cfg, struct pkt *p, int dir, struct decision *d)
{
	if (!cfg || !p || !d)
		return 0;
	struct cls c = {};
	classify(cfg, p, dir, &c);
	__u8 action;
	if (c.match < 0) {
		action = cfg->default_action;
		d->rule_id = cfg->default_rule_id;
	} else {
		__u32 slot = cfg->rule_base + c.match;
		struct rule_info *ri = bpf_map_lookup_elem(&rules, &slot);
		if (!ri) {
			action = ACT_DENY;
			d->rule_id = 0;
		} else {
			action = ri->action;
			d->rule_id = ri->id;
		}
		__u64 *hits = bpf_map_lookup_elem(&rule_hits, &slot);
		if (hits)
			*hits += 1;
	}
	if (c.log_match >= 0) {
		__u32 slot = cfg->rule_base + c.log_match;
		__u64 *hits = bpf_map_lookup_elem(&rule_hits, &slot);
		if (hits)
			*hits += 1;
		struct rule_info *ri = bpf_map_lookup_elem(&rules, &slot);
		d->log_rule = ri ? (__s32)ri->id : 0;
	}
	d->action = action;
	if (action == ACT_DENY) {
		d->pass = 0;
		d->reason = c.match < 0 ? DR_DEFAULT_DENY : DR_RULE_DENY;
		d->event = EV_DENY;
	} else {
		d->pass = 1;
	}
	return 0;
}

static __always_inline int conn_insert(void *table, struct conn_key *k, struct conn_val *v, struct guest_cfg *cfg,
				       int tcp, struct guest_counters *gc)
{
	__u32 idx = cfg->slot * 2 + (tcp ? 0 : 1);
	__u64 *live = bpf_map_lookup_elem(&conn_live, &idx);
	int full = 0;
	if (live) {
		__u64 cap = tcp ? cfg->max_tcp : cfg->max_other;
		/* The guest is at its max_* (as far as this count knows: it
		 * only grows between sweeps). The insert still succeeds: the
		 * table has 128 entries of slack per possible CPU; the LRU evicts
		 * the guest's least recently used entries only when it finds
		 * no free one. */
		if (*live >= cap)
			full = 1;
		else
			__sync_fetch_and_add(live, 1);
	}
	if (full)
		count(gc, C_TABLE_FULL, 1);
	bpf_map_update_elem(table, k, v, BPF_ANY);
	return full;
}

#define PUNT_HELD 1
#define PUNT_COPY 2

/* punt_ready says a slow path can be asked: fastpathd is alive (its
 * heartbeat is recent) and a slow path that inspects is bound. Without
 * the heartbeat, a crashed fastpathd would swallow every held packet. */
static __always_inline int punt_ready(__u64 now)
{
	__u32 zero = 0;
	struct settings *s = bpf_map_lookup_elem(&settings_map, &zero);
	return s && s->punt_ifindex && s->slowpath_bound && now < s->alive_until_ns;
}

/* punt sends the packet to the punt device: the packet itself (held) or a
 * clone (META_TAP in flags: the original continues unchanged). Its metadata
 * waits in this CPU's scratch for punt_out, tagged with the packet's mark.
 * The caller has put the flow id in sc->meta. Out of line, on a call chain
 * apart from classification's, so the two never share the 512-byte stack. */
static __noinline long punt(struct __sk_buff *skb, struct scratch *sc, struct guest_cfg *cfg, __u32 dir_flags,
			    struct conn_key *k)
{
	__u32 zero = 0;
	struct settings *s = bpf_map_lookup_elem(&settings_map, &zero);
	if (!s || !sc || !cfg || !k)
		return -1;
	__u8 flags = dir_flags >> 8;
	struct punt_meta *m = &sc->meta;
	m->magic = PUNT_MAGIC;
	m->slot = cfg->slot;
	m->ifindex = skb->ifindex;
	m->dir = dir_flags & 0xff;
	m->flags = flags;
	m->pad = 0;
	__u64 seq = sc->punt_seq++;
	m->packet_id = ((__u64)bpf_get_smp_processor_id() << 56) | (seq & 0x00ffffffffffffffULL);
	__builtin_memcpy(&m->key, k, sizeof(*k));
	sc->meta_tag = MARK_PUNT_TAG | (seq & MARK_PUNT_SEQ);
	if (flags & META_TAP) {
		__u32 mark = skb->mark;
		skb->mark = sc->meta_tag;
		long r = bpf_clone_redirect(skb, s->punt_ifindex, 0);
		skb->mark = mark;
		return r;
	}
	skb->mark = sc->meta_tag;
	return bpf_redirect(s->punt_ifindex, 0);
}

/* apply_decision takes up a per-flow decision of the slow path. */
static __always_inline void apply_decision(struct guest_cfg *cfg, struct conn_val *v)
{
	struct decision_key dk = {.slot = cfg->slot, .flow_id = v->flow_id};
	struct flow_decision *fd = bpf_map_lookup_elem(&flow_decisions, &dk);
	if (!fd)
		return;
	if (fd->verdict == FV_BLOCK) {
		v->verdict = FV_BLOCK;
	} else if (fd->verdict == FV_OFFLOAD) {
		/* Held packets still on their way would be overtaken by the
		 * next one passing in the kernel: wait until none is. */
		if (cfg->mode != MODE_TAP && v->punted != v->returned + fd->dropped)
			return;
		v->verdict = FV_OFFLOAD;
	} else {
		return;
	}
	bpf_map_delete_elem(&flow_decisions, &dk);
}

/* inspect_new sends the first packet of an inspected flow to the slow path.
 * Its entry starts with nothing held: the packet is counted as held (punted)
 * only once it really is, after the insert, like any other. */
static __always_inline void inspect_new(struct guest_cfg *cfg, struct conn_val *nv, struct decision *d, __u64 *flow_id)
{
	*flow_id = nv->flow_id;
	if (nv->verdict != FV_PUNT)
		return;
	d->punt = cfg->mode == MODE_TAP ? PUNT_COPY : PUNT_HELD;
}

/* came_back handles a packet fastpathd sends back through the vNIC: a held
 * packet the slow path allowed (counted as returned to its flow, for the
 * offload hand-over) or one fastpathd made. Either continues untouched. */
static __noinline int came_back(struct __sk_buff *skb, struct guest_cfg *cfg, struct guest_counters *gc, int dir)
{
	if (!cfg)
		return TCX_NEXT;
	int reinjected = skb->mark == MARK_REINJECTED;
	skb->mark = 0;
	if (!reinjected)
		return TCX_NEXT;
	count(gc, C_REINJECTED, 1);
	struct pkt p = {};
	if (parse(skb, &p) != L2_IP || p.frag == FRAG_LATER)
		return TCX_NEXT;
	struct conn_key k = {};
	conn_key_of(&p, dir, &k);
	int echo_request;
	if (is_icmp_echo(&p, &echo_request)) {
		k.guest_port = p.icmp_id;
		k.remote_port = 0;
	}
	__u32 slot = cfg->slot;
	void *table = bpf_map_lookup_elem(p.proto == IPPROTO_TCP ? (void *)&conn_tcp : (void *)&conn_other, &slot);
	if (!table)
		return TCX_NEXT;
	struct conn_val *v = bpf_map_lookup_elem(table, &k);
	if (v)
		__sync_fetch_and_add(&v->returned, 1);
	return TCX_NEXT;
}

/* drop_with decides to drop, for reason, reporting it as event. */
static __always_inline void drop_with(struct decision *d, __u8 reason, __u8 event)
{
	d->pass = 0;
	d->reason = reason;
	d->event = event;
}

/* reverse turns p into the packet the other side would send on the same
 * flow: what the flow's initiator sent, when p is a reply. */
static __always_inline void reverse(struct pkt *p, int *dir)
{
	__u32 t[4];
	__builtin_memcpy(t, p->src, 16);
	__builtin_memcpy(p->src, p->dst, 16);
	__builtin_memcpy(p->dst, t, 16);
	__u16 port = p->sport;
	p->sport = p->dport;
	p->dport = port;
	if (p->icmp_type == 0 && p->proto == IPPROTO_ICMP)
		p->icmp_type = 8; /* echo reply -> echo request */
	else if (p->icmp_type == 129 && p->proto == IPPROTO_ICMPV6_)
		p->icmp_type = 128;
	*dir = *dir == DIR_FROM_GUEST ? DIR_TO_GUEST : DIR_FROM_GUEST;
}

/* invalid applies the guest's invalid-packet policy: count, report unless
 * told to pass silently, and say whether to drop now. A packet that is not
 * dropped here is still judged by the rules (decide_by_rules), without
 * creating state; a malformed one by the policy's default (decide_default). */
static __always_inline int invalid(struct guest_cfg *cfg, struct guest_counters *gc, struct pkt *p, int dir,
				   struct decision *d, __u8 reason, __u8 state, __u64 now)
{
	count(gc, C_INVALID, 1);
	d->state = state;
	if (cfg->invalid_policy != INVALID_PASS)
		emit(cfg, p, dir, EV(EV_INVALID, reason, state, 0));
	if (cfg->invalid_policy == INVALID_DROP) {
		d->pass = 0;
		d->reason = reason;
		return 1;
	}
	return 0;
}

/* decide_default gives a packet the policy's default action: for malformed
 * packets passed by the invalid-packet policy, whose ports (or protocol) are
 * not known, so no rule can be trusted to match them. */
static __always_inline void decide_default(struct guest_cfg *cfg, struct decision *d)
{
	d->action = cfg->default_action;
	d->rule_id = cfg->default_rule_id;
	if (cfg->default_action == ACT_DENY)
		drop_with(d, DR_DEFAULT_DENY, EV_DENY);
}

static __always_inline void new_conn(struct conn_val *nv, struct guest_cfg *cfg, struct decision *d, __u8 state,
				     int initiator_is_guest, int dir, __u32 len, __u64 now)
{
	__builtin_memset(nv, 0, sizeof(*nv));
	nv->created_ns = now;
	nv->last_seen_ns = now;
	nv->rule_id = d->rule_id;
	nv->policy_id = cfg->policy_id;
	nv->state = state;
	nv->initiator = initiator_is_guest ? INIT_GUEST : INIT_REMOTE;
	nv->verdict = (cfg->flags & CFG_INSPECT) ? FV_PUNT : FV_PASS;
	nv->flags = d->action == ACT_FORCE_ALLOW ? CONN_FORCE_ALLOW : 0;
	nv->flow_id = (now << 16) ^ ((__u64)bpf_get_prandom_u32() << 1) ^ cfg->slot;
	nv->packets[dir & 1] = 1;
	nv->bytes[dir & 1] = len;
}

static __always_inline int process(struct __sk_buff *skb, int dir)
{
	__u32 ifindex = skb->ifindex;
	struct guest_cfg *cfg = bpf_map_lookup_elem(&vnics, &ifindex);
	if (!cfg)
		return TCX_NEXT; /* not (or no longer) protected */
	__u32 slot = cfg->slot;
	struct guest_counters *gc = bpf_map_lookup_elem(&guest_stats, &slot);
	if (skb->mark == MARK_REINJECTED || skb->mark == MARK_INJECTED)
		return came_back(skb, cfg, gc, dir);
	__u64 now = bpf_ktime_get_ns();
	struct decision d = {.pass = 1, .log_rule = -1};
	struct conn_key k = {};
	struct conn_val *held = NULL; /* the established flow a held packet belongs to */
	__u64 flow_id = 0;
	__u32 zero = 0;
	struct scratch *sc = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!sc)
		return TCX_NEXT; /* cannot happen: a one-entry per-CPU array */
	/* The parsed packet lives in per-CPU scratch, not on the stack: with
	 * classification's frames on top, the stack would pass 512 bytes. */
	struct pkt *p = &sc->pkt;
	__builtin_memset(p, 0, sizeof(*p));
	struct frag_key *fk = &sc->fk;
	__builtin_memset(fk, 0, sizeof(*fk));
	int from_guest = dir == DIR_FROM_GUEST;

	count(gc, from_guest ? C_PKTS_FROM_GUEST : C_PKTS_TO_GUEST, 1);
	count(gc, from_guest ? C_BYTES_FROM_GUEST : C_BYTES_TO_GUEST, skb->len);

	switch (parse(skb, p)) {
	case L2_ARP:
		if (!(cfg->flags & CFG_PASS_ARP))
			drop_with(&d, DR_ARP, EV_DROP);
		goto out;
	case L2_NON_IP:
		if (!(cfg->flags & CFG_PASS_NON_IP))
			drop_with(&d, DR_NON_IP, EV_DROP);
		goto out;
	case L2_MALFORMED:
		/* Cut short, or more IPv6 extension headers than we follow: its
		 * ports (or protocol) are unknown, so if the invalid-packet
		 * policy lets it through, the policy's default decides. */
		if (!invalid(cfg, gc, p, dir, &d, DR_MALFORMED, 0, now))
			decide_default(cfg, &d);
		goto out;
	}

	if ((cfg->flags & CFG_PASS_ND) && is_nd(p))
		goto out;

	if (p->frag != FRAG_NONE) {
		count(gc, C_FRAGMENTS, 1);
		if (cfg->frag_policy == FRAG_DROP) {
			drop_with(&d, DR_FRAGMENT, EV_DROP);
			goto out;
		}
		fk->slot = slot;
		fk->id = p->frag_id;
		__builtin_memcpy(fk->src, p->src, 16);
		__builtin_memcpy(fk->dst, p->dst, 16);
		fk->proto = p->frag_proto;
		fk->family = p->family;
		if (p->frag == FRAG_LATER) {
			/* Later fragments carry no ports: they follow the first
			 * fragment's verdict, or are dropped if it was never seen. */
			struct frag_val *fv = bpf_map_lookup_elem(&frags, fk);
			if (!fv || fv->expires_ns < now)
				drop_with(&d, DR_FRAGMENT, EV_DROP);
			else if (!fv->pass)
				drop_with(&d, DR_FRAGMENT, 0); /* its first fragment was reported */
			goto out;
		}
	}

	void *tcp_table = bpf_map_lookup_elem(&conn_tcp, &slot);
	void *other_table = bpf_map_lookup_elem(&conn_other, &slot);
	if (!tcp_table || !other_table) {
		/* Activation installs the tables before the vNIC entry, so this
		 * is a bug, not a state: fail closed and say so. */
		drop_with(&d, DR_INVALID_STATE, EV_INVALID);
		goto out;
	}

	int tcp = p->proto == IPPROTO_TCP;
	int is_icmp = p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6_;
	int echo_request = 0;
	int echo = is_icmp_echo(p, &echo_request);
	if (is_icmp && !echo) {
		/* ICMP other than echo: errors about a tracked flow pass; the
		 * rest is judged by the rules without state. */
		if (is_icmp_error(p) && related_lookup(skb, p, dir, tcp_table, other_table)) {
			count(gc, C_RELATED, 1);
			goto out;
		}
		decide_by_rules(cfg, p, dir, &d);
		goto out;
	}

	conn_key_of(p, dir, &k);
	if (echo) {
		k.guest_port = p->icmp_id;
		k.remote_port = 0;
	}
	void *table = tcp ? tcp_table : other_table;
	struct conn_val *v = bpf_map_lookup_elem(table, &k);
	if (v && v->last_seen_ns + (__u64)timeout_for(cfg, v, p->proto) * 1000000000ULL < now) {
		bpf_map_delete_elem(table, &k); /* idle too long: forget it */
		v = NULL;
	}

	if (tcp && tcp_flags_invalid(p->tcp_flags)) {
		if (v && (v->flags & CONN_FORCE_ALLOW))
			goto established;
		if (!invalid(cfg, gc, p, dir, &d, DR_INVALID_FLAGS, v ? v->state : TCP_NONE, now))
			decide_by_rules(cfg, p, dir, &d);
		goto out;
	}

	if (v) {
		int from_init = from_guest == (v->initiator == INIT_GUEST);
		if (v->policy_id != cfg->policy_id) {
			/* The policy changed since this flow was admitted: judge
			 * it again, once, as its initiator opened it. */
			count(gc, C_RECLASSIFIED, 1);
			struct pkt *q = &sc->alt;
			*q = *p;
			int qdir = dir;
			if (!from_init)
				reverse(q, &qdir);
			decide_by_rules(cfg, q, qdir, &d);
			if (!d.pass) {
				bpf_map_delete_elem(table, &k);
				goto out;
			}
			if (d.action == ACT_BYPASS) {
				bpf_map_delete_elem(table, &k);
				count(gc, C_BYPASSED, 1);
				goto out;
			}
			v->policy_id = cfg->policy_id;
			v->rule_id = d.rule_id;
			v->flags = (v->flags & ~CONN_FORCE_ALLOW) | (d.action == ACT_FORCE_ALLOW ? CONN_FORCE_ALLOW : 0);
			if (v->verdict == FV_PASS || v->verdict == FV_PUNT)
				v->verdict = (cfg->flags & CFG_INSPECT) ? FV_PUNT : FV_PASS;
			d.log_rule = -1; /* the flow's admission is not news */
		}
		if (tcp) {
			int t = tcp_track(v, p->tcp_flags, p->payload, from_init, from_guest);
			d.state = v->state;
			if (t == TRACK_NEW) {
				count(gc, C_PORT_REUSE, 1);
				goto new_flow; /* re-admitted by the rules, replacing the old entry */
			}
			if (t == TRACK_INVALID && !(v->flags & CONN_FORCE_ALLOW)) {
				/* Passed by the invalid-packet policy, it is still
				 * judged by the rules, as a packet of its own. */
				if (!invalid(cfg, gc, p, dir, &d, DR_INVALID_STATE, v->state, now))
					decide_by_rules(cfg, p, dir, &d);
				goto out;
			}
		} else if (v->state == PSEUDO_NEW && !from_init) {
			v->state = PSEUDO_REPLIED;
		}
	established:
		if (v) {
			v->last_seen_ns = now;
			__sync_fetch_and_add(&v->packets[dir & 1], 1);
			__sync_fetch_and_add(&v->bytes[dir & 1], skb->len);
			count(gc, C_ESTABLISHED_HITS, 1);
			if (v->verdict == FV_PUNT)
				apply_decision(cfg, v);
			if (v->verdict == FV_BLOCK) {
				d.pass = 0;
				d.reason = DR_FLOW_BLOCKED;
			} else if (v->verdict == FV_PUNT) {
				d.punt = cfg->mode == MODE_TAP ? PUNT_COPY : PUNT_HELD;
				held = v;
				flow_id = v->flow_id;
			} else if (v->verdict == FV_OFFLOAD) {
				count(gc, C_OFFLOADED_HITS, 1);
			}
		}
		goto out;
	}

new_flow:;
	struct conn_val *nv = &sc->nv;
	int initiator_is_guest = from_guest;
	__u8 state = PSEUDO_NEW;
	if (tcp) {
		__u8 f = p->tcp_flags;
		int syn_only = (f & TCPF_SYN) && !(f & TCPF_ACK);
		int pickup = !syn_only && !(f & TCPF_RST) && now < cfg->pickup_until_ns;
		if (!syn_only && !pickup) {
			/* A segment of a connection we never saw open. */
			if (!invalid(cfg, gc, p, dir, &d, DR_INVALID_STATE, TCP_NONE, now))
				decide_by_rules(cfg, p, dir, &d);
			goto out;
		}
		decide_by_rules(cfg, p, dir, &d);
		if (pickup && !d.pass) {
			/* Mid-stream we do not know who opened the connection:
			 * adopt it if the rules allow it either way round. */
			struct decision d2 = {.pass = 1, .log_rule = -1};
			struct pkt *q = &sc->alt;
			*q = *p;
			int qdir = dir;
			reverse(q, &qdir);
			decide_by_rules(cfg, q, qdir, &d2);
			if (d2.pass) {
				d = d2;
				initiator_is_guest = !from_guest;
			}
		}
		if (!d.pass)
			goto out;
		if (d.action == ACT_BYPASS) {
			count(gc, C_BYPASSED, 1);
			goto out;
		}
		state = syn_only ? TCP_SYN_SENT : TCP_ESTABLISHED;
		new_conn(nv, cfg, &d, state, initiator_is_guest, dir, skb->len, now);
		if (pickup) {
			nv->flags |= CONN_PICKED_UP;
			count(gc, C_PICKUPS, 1);
		}
		inspect_new(cfg, nv, &d, &flow_id);
		if (v) {
			bpf_map_update_elem(table, &k, nv, BPF_ANY); /* reused tuple: same entry */
			count(gc, C_NEW_CONNS, 1);
			goto inserted;
		}
	} else {
		/* UDP, ICMP echo and other protocols: pseudo-connections. An
		 * echo reply without its request does not start one. */
		decide_by_rules(cfg, p, dir, &d);
		if (!d.pass || (echo && !echo_request))
			goto out;
		if (d.action == ACT_BYPASS) {
			count(gc, C_BYPASSED, 1);
			goto out;
		}
		new_conn(nv, cfg, &d, PSEUDO_NEW, from_guest, dir, skb->len, now);
		inspect_new(cfg, nv, &d, &flow_id);
	}
	if (conn_insert(table, &k, nv, cfg, tcp, gc))
		emit(cfg, p, dir, EV(EV_TABLE_FULL, 0, state, d.rule_id));
	count(gc, C_NEW_CONNS, 1);
inserted:
	/* The first packet of an inspected flow is held like any other: the
	 * code below counts it on its entry only if it really leaves for the
	 * slow path, so a shed or failed one is never waited for. */
	if (d.punt == PUNT_HELD)
		held = bpf_map_lookup_elem(table, &k);

out:
	if (d.log_rule >= 0)
		emit(cfg, p, dir, EV(EV_LOG, 0, d.state, d.log_rule));
	if (d.event)
		emit(cfg, p, dir, EV(d.event, d.reason, d.state, d.rule_id));
	__u32 *congested = bpf_map_lookup_elem(&punt_congested, &slot);
	int redirected = 0;
	if (d.pass && d.punt) {
		if (!punt_ready(now)) {
			/* No slow path to ask: the guest's policy decides. */
			if (cfg->flags & CFG_FAIL_CLOSED) {
				d.pass = 0;
				d.reason = DR_ENGINE_OFFLINE;
			} else {
				count(gc, C_ENGINE_OFFLINE, 1);
			}
		} else if (congested && *congested && d.punt == PUNT_HELD) {
			if (cfg->flags & CFG_FAIL_CLOSED) {
				d.pass = 0;
				d.reason = DR_PUNT_SHED;
			} else {
				count(gc, C_PUNT_SHED, 1);
			}
		} else if (d.punt == PUNT_COPY) {
			sc->meta.flow_id = flow_id;
			if (punt(skb, sc, cfg, dir | META_TAP << 8, &k) == 0)
				count(gc, C_TAP_COPIES, 1);
		} else {
			if (held)
				__sync_fetch_and_add(&held->punted, 1);
			sc->meta.flow_id = flow_id;
			long r = punt(skb, sc, cfg, dir, &k);
			if (r == TCX_REDIRECT) {
				count(gc, C_PUNTED, 1);
				redirected = 1; /* held: the slow path decides */
			} else {
				if (held)
					__sync_fetch_and_add(&held->punted, -1); /* clang 14 has no atomic sub for BPF */
				if (cfg->flags & CFG_FAIL_CLOSED) {
					d.pass = 0;
					d.reason = DR_PUNT_FAILED;
				}
			}
		}
	}
	/* A first fragment's verdict, for its later fragments, once it is
	 * final: what the inspection and fail policies made of it. Later
	 * fragments of a held one never reach the slow path (they carry no
	 * ports to find the flow by), so they cannot be inspected: the
	 * guest's inspection-failure policy decides them. Not for a first
	 * fragment passed before its key was known (neighbour discovery,
	 * malformed, fragments: drop). */
	if (p->frag == FRAG_FIRST && fk->family) {
		__u8 pass = redirected ? !(cfg->flags & CFG_FAIL_CLOSED) : d.pass;
		struct frag_val fv = {.expires_ns = now + 30ULL * 1000000000ULL, .pass = pass};
		bpf_map_update_elem(&frags, fk, &fv, BPF_ANY);
	}
	if (redirected)
		return TCX_REDIRECT;
	if (d.pass) {
		count(gc, C_PASSED, 1);
		return TCX_NEXT;
	}
	count_drop(gc, d.reason);
	if (cfg->mode == MODE_TAP) {
		/* Tap mode: everything above was evaluated and reported;
		 * nothing is ever dropped. */
		count(gc, C_TAP_WOULD_DROP, 1);
		return TCX_NEXT;
	}
	count(gc, C_DROPPED, 1);
	return TCX_DROP;
}

/* punt_out runs as held packets (and tap copies) leave through the punt
 * device: it prepends the metadata their vNIC's program parked. It runs on
 * the same CPU, inside that program's redirect, so the slot is still this
 * packet's; the tag makes sure. */
SEC("tcx/egress")
int punt_out(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct scratch *sc = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!sc || skb->mark != sc->meta_tag || (skb->mark & MARK_PUNT_TAG_MASK) != MARK_PUNT_TAG)
		return TCX_DROP;
	skb->mark = 0;
	if (bpf_skb_change_head(skb, sizeof(struct punt_meta), 0))
		return TCX_DROP;
	if (bpf_skb_store_bytes(skb, 0, &sc->meta, sizeof(struct punt_meta), 0))
		return TCX_DROP;
	return TCX_NEXT;
}

/* reinject runs on the punt device's inbound side, where fastpathd writes
 * packets back, exactly as they were taken, with a mark naming the vNIC and
 * direction: it sends each where it was taken from — into the vNIC's
 * ingress if it came from the guest, out of its egress if it was going to
 * the guest — marked so the vNIC's program does not judge it twice. */
SEC("tcx/ingress")
int reinject(struct __sk_buff *skb)
{
	__u32 back = skb->mark;
	__u32 ifindex = back & BACK_IFINDEX;
	if (!ifindex)
		return TCX_DROP;
	skb->mark = (back & BACK_INJECT) ? MARK_INJECTED : MARK_REINJECTED;
	return bpf_redirect(ifindex, (back & BACK_TO_GUEST) ? 0 : BPF_F_INGRESS);
}

/* punt_sink ends held packets' journey in the kernel once fastpathd's packet
 * socket has its copy: nothing else on the host may see them. */
SEC("tcx/ingress")
int punt_sink(struct __sk_buff *skb)
{
	return TCX_DROP;
}

SEC("tcx/ingress")
int from_guest(struct __sk_buff *skb)
{
	return process(skb, DIR_FROM_GUEST);
}

SEC("tcx/egress")
int to_guest(struct __sk_buff *skb)
{
	return process(skb, DIR_TO_GUEST);
}
