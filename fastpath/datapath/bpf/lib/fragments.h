/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/* IP fragments: the guest's fragment policy, and later fragments following
 * their first fragment's final verdict (they carry no ports to classify by),
 * kept per (guest, source, destination, IP id, protocol). */
#ifndef PALISADE_LIB_FRAGMENTS_H
#define PALISADE_LIB_FRAGMENTS_H

/* A first fragment's verdict is kept this long for its later fragments. */
#define FRAG_LIFETIME_NS (30 * NSEC_PER_SEC)

/* frag_check applies the fragment policy to a fragment: it fills fk, the
 * fragment's key, and decides a later fragment by its first one's verdict.
 * It returns 1 when d is final (every fragment dropped, or a later one), 0
 * when the packet is judged on (a first fragment, or not a fragment). */
static __always_inline int frag_check(struct guest_cfg *cfg, struct guest_counters *gc, struct pkt *p,
				      struct frag_key *fk, struct decision *d, __u64 now)
{
	if (p->frag == FRAG_NONE)
		return 0;
	count(gc, C_FRAGMENTS, 1);
	if (cfg->frag_policy == FRAG_DROP) {
		drop_with(d, DR_FRAGMENT, EV_DROP);
		return 1;
	}
	fk->slot = cfg->slot;
	fk->id = p->frag_id;
	__builtin_memcpy(fk->src, p->src, 16);
	__builtin_memcpy(fk->dst, p->dst, 16);
	fk->proto = p->frag_proto;
	fk->family = p->family;
	if (p->frag != FRAG_LATER)
		return 0;
	/* Later fragments carry no ports: they follow the first fragment's
	 * verdict, or are dropped if it was never seen. */
	struct frag_val *fv = bpf_map_lookup_elem(&frags, fk);
	if (!fv || fv->expires_ns < now)
		drop_with(d, DR_FRAGMENT, EV_DROP);
	else if (!fv->pass)
		drop_with(d, DR_FRAGMENT, 0); /* its first fragment was reported */
	return 1;
}

/* frag_record keeps a first fragment's verdict for its later fragments, once
 * it is final: what the inspection and fail policies made of it. Later
 * fragments of a held one never reach the slow path (they carry no ports to
 * find the flow by), so they cannot be inspected: the guest's
 * inspection-failure policy decides them. Not for a first fragment passed
 * before its key was known (neighbour discovery, malformed, fragments:
 * drop). */
static __always_inline void frag_record(struct guest_cfg *cfg, struct pkt *p, struct frag_key *fk, __u8 pass,
					int held, __u64 now)
{
	if (p->frag != FRAG_FIRST || !fk->family)
		return;
	struct frag_val fv = {.expires_ns = now + FRAG_LIFETIME_NS,
			      .pass = held ? !(cfg->flags & CFG_FAIL_CLOSED) : pass};
	bpf_map_update_elem(&frags, fk, &fv, BPF_ANY);
}

#endif
