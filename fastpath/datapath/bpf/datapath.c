// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* Palisade fast path: a stateful firewall on each protected guest's vNIC.
 *
 * One program per direction, attached with TCX to the host side of every
 * protected vNIC. Per packet: parse, find the guest's connection, and either
 * apply the connection's cached verdict or classify the new flow against the
 * guest's rules (per-field LPM lookups intersecting sparse rule bitmaps, so
 * the cost follows the most selective field rather than the rule count).
 *
 * This file holds the entry points and process(), a packet's way through
 * them in named phases; each concern they use is a header of lib/, all
 * compiled as this one unit: proto (wire numbers), maps, parse, scratch
 * (per-CPU working memory), events (counters and the ring buffer),
 * classify, decision (rules, default and invalid-packet policy),
 * conntrack, fragments, punt (deep inspection). datapath.h is the contract
 * with the Go side, which bpf2go generates its types and constants from. */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "datapath.h"
#include "lib/proto.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/scratch.h"
#include "lib/events.h"
#include "lib/classify.h"
#include "lib/decision.h"
#include "lib/conntrack.h"
#include "lib/punt.h"
#include "lib/fragments.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

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

/* ---- a packet's way: process() and its phases ----------------------------
 *
 * l2_and_fragments -> established_flow -> admit_new_flow -> conclude: each
 * phase either decides the packet (PHASE_DECIDED: the next ones are skipped,
 * up to conclude) or hands it on. What they decide travels in a struct
 * decision; what they learn about the packet and its flow in a struct
 * judgement. (The two and the conn_key live apart on the stack: a struct
 * whose address reaches a helper or a call stays whole in memory, and
 * classification's frames leave the program little of its 512 bytes.) */

enum phase {
	PHASE_DECIDED = 0,
	PHASE_NEXT = 1,
};

struct judgement {
	struct __sk_buff *skb;
	struct guest_cfg *cfg;
	struct guest_counters *gc;
	struct scratch *sc;
	struct pkt *p; /* &sc->pkt: the parsed packet */
	__u64 now;
	int dir;
	int from_guest;
	/* The flow, once established_flow has looked it up. */
	struct conn_key *k;
	void *table;           /* the guest's table for the packet's protocol */
	struct conn_val *v;    /* the flow's entry: established, or a tuple reused */
	struct conn_val *held; /* the entry a held packet is counted on */
	__u64 flow_id;
	int tcp;
	int echo, echo_request; /* ICMP echo: tracked by its identifier */
};

/* l2_and_fragments: what is not IP, is malformed, is neighbour discovery
 * or is a fragment the fragment policy decides, is decided here. */
static __always_inline enum phase l2_and_fragments(struct judgement *j, struct decision *d)
{
	struct guest_cfg *cfg = j->cfg;
	switch (parse(j->skb, j->p)) {
	case L2_ARP:
		if (!(cfg->flags & CFG_PASS_ARP))
			drop_with(d, DR_ARP, EV_DROP);
		return PHASE_DECIDED;
	case L2_NON_IP:
		if (!(cfg->flags & CFG_PASS_NON_IP))
			drop_with(d, DR_NON_IP, EV_DROP);
		return PHASE_DECIDED;
	case L2_MALFORMED:
		/* Cut short, or more IPv6 extension headers than we follow: its
		 * ports (or protocol) are unknown, so if the invalid-packet
		 * policy lets it through, the policy's default decides. */
		if (!invalid(cfg, j->gc, j->p, j->dir, d, DR_MALFORMED, 0))
			decide_default(cfg, d);
		return PHASE_DECIDED;
	}
	if ((cfg->flags & CFG_PASS_ND) && is_nd(j->p))
		return PHASE_DECIDED;
	if (frag_check(cfg, j->gc, j->p, &j->sc->fk, d, j->now))
		return PHASE_DECIDED;
	return PHASE_NEXT;
}

/* flow_lookup finds the packet's flow in the guest's tables, forgetting one
 * idle beyond its timeout. ICMP other than echo has none: an error about a
 * tracked flow passes, the rest is judged by the rules without state. */
static __always_inline enum phase flow_lookup(struct judgement *j, struct decision *d)
{
	struct pkt *p = j->p;
	__u32 slot = j->cfg->slot;
	void *tcp_table = bpf_map_lookup_elem(&conn_tcp, &slot);
	void *other_table = bpf_map_lookup_elem(&conn_other, &slot);
	if (!tcp_table || !other_table) {
		/* Activation installs the tables before the vNIC entry, so this
		 * is a bug, not a state: fail closed and say so. */
		drop_with(d, DR_INVALID_STATE, EV_INVALID);
		return PHASE_DECIDED;
	}
	j->tcp = p->proto == IPPROTO_TCP;
	j->echo = is_icmp_echo(p, &j->echo_request);
	if (is_icmp_proto(p->proto) && !j->echo) {
		if (is_icmp_error(p) && related_lookup(j->skb, p, j->dir, tcp_table, other_table))
			count(j->gc, C_RELATED, 1);
		else
			decide_by_rules(j->cfg, p, j->dir, d);
		return PHASE_DECIDED;
	}
	conn_key_of(p, j->dir, j->k);
	if (j->echo) {
		j->k->guest_port = p->icmp_id;
		j->k->remote_port = 0;
	}
	j->table = j->tcp ? tcp_table : other_table;
	struct conn_val *v = bpf_map_lookup_elem(j->table, j->k);
	if (v && v->last_seen_ns + (__u64)timeout_for(j->cfg, v, p->proto) * NSEC_PER_SEC < j->now) {
		bpf_map_delete_elem(j->table, j->k); /* idle too long: forget it */
		v = NULL;
	}
	j->v = v;
	return PHASE_NEXT;
}

/* readmit judges an established flow again, once, as its initiator opened
 * it, after the guest's policy changed. PHASE_DECIDED: the new policy
 * denies or bypasses it, and its entry is gone. */
static __always_inline enum phase readmit(struct judgement *j, struct decision *d, struct conn_val *v, int from_init)
{
	struct guest_cfg *cfg = j->cfg;
	count(j->gc, C_RECLASSIFIED, 1);
	struct pkt *q = &j->sc->alt;
	*q = *j->p;
	int qdir = j->dir;
	if (!from_init)
		reverse(q, &qdir);
	decide_by_rules(cfg, q, qdir, d);
	if (!d->pass) {
		bpf_map_delete_elem(j->table, j->k);
		return PHASE_DECIDED;
	}
	if (d->action == ACT_BYPASS) {
		bpf_map_delete_elem(j->table, j->k);
		count(j->gc, C_BYPASSED, 1);
		return PHASE_DECIDED;
	}
	v->policy_id = cfg->policy_id;
	v->rule_id = d->rule_id;
	v->flags = (v->flags & ~CONN_FORCE_ALLOW) | (d->action == ACT_FORCE_ALLOW ? CONN_FORCE_ALLOW : 0);
	if (v->verdict == FV_PASS || v->verdict == FV_PUNT)
		v->verdict = (cfg->flags & CFG_INSPECT) ? FV_PUNT : FV_PASS;
	d->log_rule = -1; /* the flow's admission is not news */
	return PHASE_NEXT;
}

/* flow_hit gives a packet of an established flow the flow's verdict. */
static __always_inline void flow_hit(struct judgement *j, struct decision *d, struct conn_val *v)
{
	struct guest_cfg *cfg = j->cfg;
	v->last_seen_ns = j->now;
	__sync_fetch_and_add(&v->packets[j->dir & 1], 1);
	__sync_fetch_and_add(&v->bytes[j->dir & 1], j->skb->len);
	count(j->gc, C_ESTABLISHED_HITS, 1);
	if (v->verdict == FV_PUNT)
		apply_decision(cfg, v);
	if (v->verdict == FV_BLOCK) {
		d->pass = 0;
		d->reason = DR_FLOW_BLOCKED;
	} else if (v->verdict == FV_PUNT) {
		d->punt = cfg->mode == MODE_TAP ? PUNT_COPY : PUNT_HELD;
		j->held = v;
		j->flow_id = v->flow_id;
	} else if (v->verdict == FV_OFFLOAD) {
		count(j->gc, C_OFFLOADED_HITS, 1);
	}
}

/* established_flow decides a packet of a flow the guest's table holds, and
 * a TCP segment no stack sends. PHASE_NEXT: a new flow (none held, or a
 * fresh SYN reusing a closed one's tuple). */
static __always_inline enum phase established_flow(struct judgement *j, struct decision *d)
{
	if (flow_lookup(j, d) == PHASE_DECIDED)
		return PHASE_DECIDED;
	struct pkt *p = j->p;
	struct conn_val *v = j->v;
	if (j->tcp && tcp_flags_invalid(p->tcp_flags)) {
		if (v && (v->flags & CONN_FORCE_ALLOW))
			flow_hit(j, d, v);
		else if (!invalid(j->cfg, j->gc, p, j->dir, d, DR_INVALID_FLAGS, v ? v->state : TCP_NONE))
			decide_by_rules(j->cfg, p, j->dir, d);
		return PHASE_DECIDED;
	}
	if (!v)
		return PHASE_NEXT;
	int from_init = j->from_guest == (v->initiator == INIT_GUEST);
	if (v->policy_id != j->cfg->policy_id && readmit(j, d, v, from_init) == PHASE_DECIDED)
		return PHASE_DECIDED;
	if (j->tcp) {
		int t = tcp_track(v, p->tcp_flags, p->payload, from_init, j->from_guest);
		d->state = v->state;
		if (t == TRACK_NEW) {
			count(j->gc, C_PORT_REUSE, 1);
			return PHASE_NEXT; /* re-admitted by the rules, replacing the old entry */
		}
		if (t == TRACK_INVALID && !(v->flags & CONN_FORCE_ALLOW)) {
			/* Passed by the invalid-packet policy, it is still
			 * judged by the rules, as a packet of its own. */
			if (!invalid(j->cfg, j->gc, p, j->dir, d, DR_INVALID_STATE, v->state))
				decide_by_rules(j->cfg, p, j->dir, d);
			return PHASE_DECIDED;
		}
	} else if (v->state == PSEUDO_NEW && !from_init) {
		v->state = PSEUDO_REPLIED;
	}
	flow_hit(j, d, v);
	return PHASE_DECIDED;
}

/* tcp_opens decides whether a TCP segment opens a connection: a SYN, or a
 * mid-stream segment during the pickup window, allowed by the rules (in
 * either direction, for a pickup: who opened it is not known). It returns
 * the new entry's state, or TCP_NONE when the segment opens nothing. */
static __always_inline __u8 tcp_opens(struct judgement *j, struct decision *d, int *initiator_is_guest)
{
	struct guest_cfg *cfg = j->cfg;
	struct pkt *p = j->p;
	__u8 f = p->tcp_flags;
	int syn_only = (f & TCPF_SYN) && !(f & TCPF_ACK);
	int pickup = !syn_only && !(f & TCPF_RST) && j->now < cfg->pickup_until_ns;
	if (!syn_only && !pickup) {
		/* A segment of a connection we never saw open. */
		if (!invalid(cfg, j->gc, p, j->dir, d, DR_INVALID_STATE, TCP_NONE))
			decide_by_rules(cfg, p, j->dir, d);
		return TCP_NONE;
	}
	decide_by_rules(cfg, p, j->dir, d);
	if (pickup && !d->pass) {
		/* Mid-stream we do not know who opened the connection:
		 * adopt it if the rules allow it either way round. */
		struct decision d2 = {.pass = 1, .log_rule = -1};
		struct pkt *q = &j->sc->alt;
		*q = *p;
		int qdir = j->dir;
		reverse(q, &qdir);
		decide_by_rules(cfg, q, qdir, &d2);
		if (d2.pass) {
			*d = d2;
			*initiator_is_guest = !j->from_guest;
		}
	}
	if (!d->pass)
		return TCP_NONE;
	return syn_only ? TCP_SYN_SENT : TCP_ESTABLISHED;
}

/* admit_new_flow judges a new flow by the rules and records it if they
 * allow it: TCP as tcp_opens says, UDP, ICMP echo and other protocols as
 * pseudo-connections (an echo reply without its request starts none). */
static __always_inline void admit_new_flow(struct judgement *j, struct decision *d)
{
	struct guest_cfg *cfg = j->cfg;
	int initiator_is_guest = j->from_guest;
	__u8 state = PSEUDO_NEW;
	if (j->tcp) {
		state = tcp_opens(j, d, &initiator_is_guest);
		if (state == TCP_NONE)
			return;
	} else {
		decide_by_rules(cfg, j->p, j->dir, d);
		if (!d->pass || (j->echo && !j->echo_request))
			return;
	}
	if (d->action == ACT_BYPASS) {
		count(j->gc, C_BYPASSED, 1);
		return;
	}
	struct conn_val *nv = &j->sc->nv;
	new_conn(nv, cfg, d, state, initiator_is_guest, j->dir, j->skb->len, j->now);
	if (j->tcp && state == TCP_ESTABLISHED) {
		nv->flags |= CONN_PICKED_UP;
		count(j->gc, C_PICKUPS, 1);
	}
	inspect_new(cfg, nv, d, &j->flow_id);
	if (j->v)
		bpf_map_update_elem(j->table, j->k, nv, BPF_ANY); /* reused tuple: same entry */
	else if (conn_insert(j->table, j->k, nv, cfg, j->tcp, j->gc))
		emit(cfg, j->p, j->dir, EV(EV_TABLE_FULL, 0, state, d->rule_id));
	count(j->gc, C_NEW_CONNS, 1);
	/* The first packet of an inspected flow is held like any other:
	 * conclude counts it on its entry only if it really leaves for the
	 * slow path, so a shed or failed one is never waited for. */
	if (d->punt == PUNT_HELD)
		j->held = bpf_map_lookup_elem(j->table, j->k);
}

/* to_slow_path sends a packet the phases marked for inspection to the slow
 * path, unless none can be asked or the guest is congested: then the
 * guest's inspection-failure policy decides. It returns 1 if the packet is
 * held (redirected to the punt device). */
static __always_inline int to_slow_path(struct judgement *j, struct decision *d)
{
	struct guest_cfg *cfg = j->cfg;
	__u32 slot = cfg->slot;
	__u32 *congested = bpf_map_lookup_elem(&punt_congested, &slot);
	if (!d->pass || !d->punt)
		return 0;
	if (!punt_ready(j->now)) {
		/* No slow path to ask: the guest's policy decides. */
		if (cfg->flags & CFG_FAIL_CLOSED) {
			d->pass = 0;
			d->reason = DR_ENGINE_OFFLINE;
		} else {
			count(j->gc, C_ENGINE_OFFLINE, 1);
		}
		return 0;
	}
	if (congested && *congested && d->punt == PUNT_HELD) {
		if (cfg->flags & CFG_FAIL_CLOSED) {
			d->pass = 0;
			d->reason = DR_PUNT_SHED;
		} else {
			count(j->gc, C_PUNT_SHED, 1);
		}
		return 0;
	}
	if (d->punt == PUNT_COPY) {
		j->sc->meta.flow_id = j->flow_id;
		if (punt(j->skb, j->sc, cfg, j->dir | META_TAP << 8, j->k) == 0)
			count(j->gc, C_TAP_COPIES, 1);
		return 0;
	}
	struct conn_val *held = j->held;
	if (held)
		__sync_fetch_and_add(&held->punted, 1);
	j->sc->meta.flow_id = j->flow_id;
	if (punt(j->skb, j->sc, cfg, j->dir, j->k) == TCX_REDIRECT) {
		count(j->gc, C_PUNTED, 1);
		return 1; /* held: the slow path decides */
	}
	if (held)
		__sync_fetch_and_add(&held->punted, -1); /* clang 14 has no atomic sub for BPF */
	if (cfg->flags & CFG_FAIL_CLOSED) {
		d->pass = 0;
		d->reason = DR_PUNT_FAILED;
	}
	return 0;
}

/* conclude reports the packet, sends it to the slow path if it is to be
 * inspected, records a first fragment's verdict, and counts and returns the
 * verdict (tap mode never drops). */
static __always_inline int conclude(struct judgement *j, struct decision *d)
{
	struct guest_cfg *cfg = j->cfg;
	struct guest_counters *gc = j->gc;
	if (d->log_rule >= 0)
		emit(cfg, j->p, j->dir, EV(EV_LOG, 0, d->state, d->log_rule));
	if (d->event)
		emit(cfg, j->p, j->dir, EV(d->event, d->reason, d->state, d->rule_id));
	int held = to_slow_path(j, d);
	frag_record(cfg, j->p, &j->sc->fk, d->pass, held, j->now);
	if (held)
		return TCX_REDIRECT;
	if (d->pass) {
		count(gc, C_PASSED, 1);
		return TCX_NEXT;
	}
	count_drop(gc, d->reason);
	if (cfg->mode == MODE_TAP) {
		/* Tap mode: everything above was evaluated and reported;
		 * nothing is ever dropped. */
		count(gc, C_TAP_WOULD_DROP, 1);
		return TCX_NEXT;
	}
	count(gc, C_DROPPED, 1);
	return TCX_DROP;
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
	__u32 zero = 0;
	struct scratch *sc = bpf_map_lookup_elem(&scratch_map, &zero);
	if (!sc)
		return TCX_NEXT; /* cannot happen: a one-entry per-CPU array */
	struct decision d = {.pass = 1, .log_rule = -1};
	struct conn_key k = {};
	struct judgement j = {.skb = skb, .cfg = cfg, .gc = gc, .sc = sc, .p = &sc->pkt, .k = &k,
			      .now = bpf_ktime_get_ns(), .dir = dir, .from_guest = dir == DIR_FROM_GUEST};
	__builtin_memset(&sc->pkt, 0, sizeof(sc->pkt));
	__builtin_memset(&sc->fk, 0, sizeof(sc->fk));
	count(gc, j.from_guest ? C_PKTS_FROM_GUEST : C_PKTS_TO_GUEST, 1);
	count(gc, j.from_guest ? C_BYTES_FROM_GUEST : C_BYTES_TO_GUEST, skb->len);

	if (l2_and_fragments(&j, &d) == PHASE_NEXT && established_flow(&j, &d) == PHASE_NEXT)
		admit_new_flow(&j, &d);
	return conclude(&j, &d);
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
