/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/* The decision a packet's phases build (struct decision), and what decides
 * it apart from connection state: the guest's rules, the policy's default,
 * and the invalid-packet policy. */
#ifndef PALISADE_LIB_DECISION_H
#define PALISADE_LIB_DECISION_H

/* decision.punt: how the packet goes to the slow path, if it does */
enum punt_kind {
	PUNT_NONE = 0,
	PUNT_HELD = 1, /* the packet itself: the slow path decides it */
	PUNT_COPY = 2, /* a copy (tap mode): the packet goes on */
};

struct decision {
	__u8 pass;
	__u8 reason;    /* enum drop_reason when !pass */
	__u8 event;     /* enum event_kind to report, 0 for none */
	__u8 state;     /* connection state for the event */
	__u8 action;    /* the deciding rule's action */
	__u8 punt;      /* enum punt_kind */
	__u8 pad[2];
	__u32 rule_id;  /* rule that decided */
	__s32 log_rule; /* rule id of a log-only match to report, -1 if none */
};

/* drop_with decides to drop, for reason, reporting it as event. */
static __always_inline void drop_with(struct decision *d, __u8 reason, __u8 event)
{
	d->pass = 0;
	d->reason = reason;
	d->event = event;
}

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

/* invalid applies the guest's invalid-packet policy: count, report unless
 * told to pass silently, and say whether to drop now. A packet that is not
 * dropped here is still judged by the rules (decide_by_rules), without
 * creating state; a malformed one by the policy's default (decide_default). */
static __always_inline int invalid(struct guest_cfg *cfg, struct guest_counters *gc, struct pkt *p, int dir,
				   struct decision *d, __u8 reason, __u8 state)
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

#endif
