/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/* Connection tracking: each guest's connection tables, keyed by the guest's
 * side of the flow (one lookup serves both directions), with TCP's states
 * followed segment by segment and pseudo-connections for UDP, ICMP echo and
 * other protocols. */
#ifndef PALISADE_LIB_CONNTRACK_H
#define PALISADE_LIB_CONNTRACK_H

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
	} else if (is_icmp_proto(proto)) {
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

/* what tcp_track makes of a segment */
enum track {
	TRACK_OK = 0,
	TRACK_INVALID = 1,
	TRACK_NEW = 2, /* a fresh SYN on a closing/closed tuple: a new connection */
};

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

/* related_lookup finds the connection an ICMP error quotes. */
static __noinline int related_lookup(struct __sk_buff *skb, struct pkt *p, int dir, void *tcp, void *other)
{
	struct pkt in = {};
	__u32 off = p->l4off + ICMP_HDR_LEN;
	int err = p->family == 4 ? parse_ipv4(skb, off, &in) : parse_ipv6(skb, off, &in);
	if (err)
		return 0;
	if (in.proto == IPPROTO_TCP || in.proto == IPPROTO_UDP) {
		__u16 ports[2];
		if (bpf_skb_load_bytes(skb, in.l4off, ports, 4))
			return 0;
		in.sport = bpf_ntohs(ports[0]);
		in.dport = bpf_ntohs(ports[1]);
	} else if (is_icmp_proto(in.proto)) {
		__u8 h[ICMP_HDR_LEN];
		if (bpf_skb_load_bytes(skb, in.l4off, h, sizeof(h)))
			return 0;
		in.sport = in.dport = ((__u16)h[ICMP_ECHO_ID_OFF] << 8) | h[ICMP_ECHO_ID_OFF + 1];
	}
	/* The quoted packet travelled the other way: an error going to the
	 * guest quotes a packet the guest sent. */
	struct conn_key k = {};
	conn_key_of(&in, dir == DIR_TO_GUEST ? DIR_FROM_GUEST : DIR_TO_GUEST, &k);
	if (is_icmp_proto(in.proto))
		k.remote_port = 0;
	void *table = in.proto == IPPROTO_TCP ? tcp : other;
	return bpf_map_lookup_elem(table, &k) != NULL;
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

#endif
