/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/* Per-guest counters and the events ring buffer: what fastpathd reads back
 * about every packet (counters, per CPU) and about the noteworthy ones
 * (events, rate-limited per guest and CPU). */
#ifndef PALISADE_LIB_EVENTS_H
#define PALISADE_LIB_EVENTS_H

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
	__u64 interval = NSEC_PER_SEC / rate;
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
 * take five arguments, so the details travel packed in one word. A global
 * function, like decide_by_rules: the verifier checks it once, on its own,
 * instead of once for every state that reaches one of its call sites. */
__noinline int emit(struct guest_cfg *cfg, struct pkt *p, int dir, __u64 what)
{
	if (!cfg || !p)
		return 0;
	__u32 slot = cfg->slot;
	struct guest_counters *gc = bpf_map_lookup_elem(&guest_stats, &slot);
	__u64 now = bpf_ktime_get_ns();
	if (!event_allowed(slot, now, gc))
		return 0;
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(gc, C_EVENTS_SUPPRESSED, 1);
		return 0;
	}
	e->ts_ns = now;
	e->slot = slot;
	e->rule_id = what >> 32;
	__builtin_memcpy(e->src, p->src, 16);
	__builtin_memcpy(e->dst, p->dst, 16);
	e->sport = p->sport;
	e->dport = is_icmp_proto(p->proto) ? p->icmp_type : p->dport;
	e->kind = what;
	e->reason = what >> 8;
	e->state = what >> 16;
	e->dir = dir;
	e->proto = p->proto;
	e->family = p->family;
	e->tcp_flags = p->tcp_flags;
	e->tap = cfg->mode == MODE_TAP;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

#endif
