/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/* Classification: the first rule of a guest's policy that matches a packet.
 * Each field (source, destination, source port, protocol and destination
 * port or ICMP type) is one LPM lookup giving the rules that allow its
 * value, as a sparse bitmap; the candidate rules are the intersection,
 * visited in order, a word at a time, by a bpf_loop. The cost follows the
 * most selective field rather than the rule count. */
#ifndef PALISADE_LIB_CLASSIFY_H
#define PALISADE_LIB_CLASSIFY_H

/* The fields a rule names, one classification trie (dim_* map) each. */
enum cls_field {
	F_SRC = 0,
	F_DST,
	F_SPORT,
	F_DPORT, /* with the protocol and direction; the ICMP type for ICMP */
	CLS_FIELDS,
};

/* An LPM key's full prefix: every bit after prefixlen (policy id, field). */
#define LPM_FULL(key) (8 * (sizeof(key) - sizeof((key).prefixlen)))

struct cls {
	struct dim_val *d[CLS_FIELDS];
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
		for (int k = 0; k < CLS_FIELDS; k++) {
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
	__u8 is_icmp = is_icmp_proto(p->proto);

	if (p->family == 4) {
		struct addr4_key k = {.prefixlen = LPM_FULL(k), .policy_id = cfg->policy_id, .addr = p->src[0]};
		c->d[F_SRC] = bpf_map_lookup_elem(&dim_src4, &k);
		k.addr = p->dst[0];
		c->d[F_DST] = bpf_map_lookup_elem(&dim_dst4, &k);
	} else {
		struct addr6_key k = {.prefixlen = LPM_FULL(k), .policy_id = cfg->policy_id};
		__builtin_memcpy(k.addr, p->src, 16);
		c->d[F_SRC] = bpf_map_lookup_elem(&dim_src6, &k);
		__builtin_memcpy(k.addr, p->dst, 16);
		c->d[F_DST] = bpf_map_lookup_elem(&dim_dst6, &k);
	}
	struct sport_key sk = {.prefixlen = LPM_FULL(sk), .policy_id = cfg->policy_id, .proto = p->proto,
			       .port = bpf_htons(is_icmp || p->frag == FRAG_LATER ? 0 : p->sport)};
	c->d[F_SPORT] = bpf_map_lookup_elem(&dim_sport, &sk);
	struct dport_key dk = {.prefixlen = LPM_FULL(dk), .policy_id = cfg->policy_id, .dir = dir, .proto = p->proto,
			       .port = bpf_htons(is_icmp ? p->icmp_type : p->dport)};
	c->d[F_DPORT] = bpf_map_lookup_elem(&dim_dport, &dk);

	struct dim_val *d0 = c->d[F_SRC], *d1 = c->d[F_DST], *d2 = c->d[F_SPORT], *d3 = c->d[F_DPORT];
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

#endif
