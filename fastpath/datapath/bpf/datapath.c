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

/* A first fragment's verdict is kept this long for its later fragments. */
#define FRAG_LIFETIME_NS (30 * NSEC_PER_SEC)

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
		if (!invalid(cfg, gc, p, dir, &d, DR_MALFORMED, 0))
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
	int is_icmp = is_icmp_proto(p->proto);
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
	if (v && v->last_seen_ns + (__u64)timeout_for(cfg, v, p->proto) * NSEC_PER_SEC < now) {
		bpf_map_delete_elem(table, &k); /* idle too long: forget it */
		v = NULL;
	}

	if (tcp && tcp_flags_invalid(p->tcp_flags)) {
		if (v && (v->flags & CONN_FORCE_ALLOW))
			goto established;
		if (!invalid(cfg, gc, p, dir, &d, DR_INVALID_FLAGS, v ? v->state : TCP_NONE))
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
				if (!invalid(cfg, gc, p, dir, &d, DR_INVALID_STATE, v->state))
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
			if (!invalid(cfg, gc, p, dir, &d, DR_INVALID_STATE, TCP_NONE))
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
		struct frag_val fv = {.expires_ns = now + FRAG_LIFETIME_NS, .pass = pass};
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
