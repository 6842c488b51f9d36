/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/* Deep inspection's side of the datapath: sending a packet to the slow path
 * through the punt device (held, or copied in tap mode), taking up the slow
 * path's per-flow decisions, and packets that come back. */
#ifndef PALISADE_LIB_PUNT_H
#define PALISADE_LIB_PUNT_H

/* punt_ready says a slow path can be asked: fastpathd is alive (its
 * heartbeat is recent) and a slow path that inspects is bound. Without
 * the heartbeat, a crashed fastpathd would swallow every held packet. */
static __always_inline int punt_ready(__u64 now)
{
	__u32 zero = 0;
	struct settings *s = bpf_map_lookup_elem(&settings_map, &zero);
	return s && s->punt_ifindex && s->slowpath_bound && now < s->alive_until_ns;
}

/* A held packet's id: the CPU's number in the top byte, the CPU's sequence
 * number below, so that ids are unique without a shared counter. */
#define PACKET_ID_CPU_SHIFT 56

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
	m->packet_id = ((__u64)bpf_get_smp_processor_id() << PACKET_ID_CPU_SHIFT) |
		       (seq & ((1ULL << PACKET_ID_CPU_SHIFT) - 1));
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

#endif
