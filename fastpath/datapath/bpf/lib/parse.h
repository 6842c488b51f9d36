/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/* Packet parsing: Ethernet, IPv4, IPv6 and its extension headers, then TCP,
 * UDP, ICMP and ICMPv6, into a struct pkt; and what kind of ICMP a packet
 * is. Reads go through bpf_skb_load_bytes, so a GSO packet's linear part
 * never limits them. */
#ifndef PALISADE_LIB_PARSE_H
#define PALISADE_LIB_PARSE_H

enum l2_class {
	L2_IP = 0,
	L2_ARP = 1,
	L2_NON_IP = 2,
	L2_MALFORMED = 3,
};

/* pkt.frag */
enum frag_kind {
	FRAG_NONE = 0,
	FRAG_FIRST = 1, /* offset 0, more fragments follow */
	FRAG_LATER = 2, /* no transport header: the payload's middle or end */
};

/* IPv6 extension headers followed before the transport; one more is
 * malformed. */
#define IPV6_EXT_MAX 6

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
	__u8 frag; /* enum frag_kind */
	__u8 icmp_type;
	__u8 icmp_code;
	__u16 icmp_id;
	__u32 ip_end;  /* offset just past the IP datagram */
	__u32 payload; /* TCP payload bytes */
	__u8 frag_proto; /* what follows the fragmentation: the same in every fragment */
	__u8 pad[3];
};

static __always_inline int is_icmp_proto(__u8 proto)
{
	return proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6;
}

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
		p->tcp_flags = ((__u8 *)&th)[TCP_FLAGS_OFF];
		__u32 hdr_end = p->l4off + th.doff * TCP_DOFF_UNIT;
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
	case IPPROTO_ICMPV6: {
		__u8 h[ICMP_HDR_LEN];
		if (bpf_skb_load_bytes(skb, p->l4off, h, sizeof(h)))
			return -1;
		p->icmp_type = h[0];
		p->icmp_code = h[1];
		p->icmp_id = ((__u16)h[ICMP_ECHO_ID_OFF] << 8) | h[ICMP_ECHO_ID_OFF + 1];
		return 0;
	}
	}
	return 0;
}

/* parse_ipv4 fills p from the IPv4 header at off: the packet's own, or the
 * one an ICMP error quotes (related_lookup). */
static __always_inline int parse_ipv4(struct __sk_buff *skb, __u32 off, struct pkt *p)
{
	struct iphdr ih;
	if (bpf_skb_load_bytes(skb, off, &ih, sizeof(ih)))
		return -1;
	if (ih.version != 4 || ih.ihl < IP4_IHL_MIN)
		return -1;
	p->family = 4;
	p->src[0] = ih.saddr;
	p->dst[0] = ih.daddr;
	p->proto = ih.protocol;
	p->frag_proto = ih.protocol;
	p->l4off = off + ih.ihl * IP4_IHL_UNIT;
	p->ip_end = off + bpf_ntohs(ih.tot_len);
	__u16 fo = bpf_ntohs(ih.frag_off);
	if (fo & IP4_FRAG_OFFSET)
		p->frag = FRAG_LATER;
	else if (fo & IP4_MORE_FRAGS)
		p->frag = FRAG_FIRST;
	p->frag_id = bpf_ntohs(ih.id);
	return 0;
}

static __always_inline int is_ipv6_ext(__u8 next)
{
	switch (next) {
	case IPPROTO_HOPOPTS:
	case IPPROTO_ROUTING:
	case IPPROTO_FRAGMENT:
	case IPPROTO_AH:
	case IPPROTO_DSTOPTS:
		return 1;
	}
	return 0;
}

/* parse_ipv6 fills p from the IPv6 header at off (the packet's own, or one
 * an ICMPv6 error quotes) and the extension headers after it. */
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
		__u8 h[IP6_FRAG_HDR_LEN];
		switch (next) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
			if (bpf_skb_load_bytes(skb, off, h, 2))
				return -1;
			next = h[0];
			off += (h[1] + 1) * IP6_EXT_UNIT;
			break;
		case IPPROTO_AH:
			if (bpf_skb_load_bytes(skb, off, h, 2))
				return -1;
			next = h[0];
			off += (h[1] + 2) * IP6_AH_UNIT;
			break;
		case IPPROTO_FRAGMENT: {
			if (bpf_skb_load_bytes(skb, off, h, IP6_FRAG_HDR_LEN))
				return -1;
			next = h[0];
			__u16 fo = ((__u16)h[2] << 8) | h[3];
			if (fo & IP6_FRAG_OFFSET)
				p->frag = FRAG_LATER;
			else if (fo & IP6_MORE_FRAGS)
				p->frag = FRAG_FIRST;
			p->frag_id = ((__u32)h[4] << 24) | ((__u32)h[5] << 16) | ((__u32)h[6] << 8) | h[7];
			p->frag_proto = next;
			off += IP6_FRAG_HDR_LEN;
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
	if (is_ipv6_ext(next))
		return -1;
done:
	p->proto = next;
	p->l4off = off;
	return 0;
}

static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	__u16 proto;
	if (bpf_skb_load_bytes(skb, __builtin_offsetof(struct ethhdr, h_proto), &proto, 2))
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

static __always_inline int is_icmp_error(struct pkt *p)
{
	if (p->proto == IPPROTO_ICMP)
		return p->icmp_type == ICMP4_DEST_UNREACH || p->icmp_type == ICMP4_TIME_EXCEEDED ||
		       p->icmp_type == ICMP4_PARAM_PROBLEM;
	if (p->proto == IPPROTO_ICMPV6)
		return p->icmp_type >= ICMP6_ERROR_FIRST && p->icmp_type <= ICMP6_ERROR_LAST;
	return 0;
}

/* is_icmp_echo says p is an echo request or reply, and which (*request). */
static __always_inline int is_icmp_echo(struct pkt *p, int *request)
{
	if (p->proto == IPPROTO_ICMP && (p->icmp_type == ICMP4_ECHO_REQUEST || p->icmp_type == ICMP4_ECHO_REPLY)) {
		*request = p->icmp_type == ICMP4_ECHO_REQUEST;
		return 1;
	}
	if (p->proto == IPPROTO_ICMPV6 && (p->icmp_type == ICMP6_ECHO_REQUEST || p->icmp_type == ICMP6_ECHO_REPLY)) {
		*request = p->icmp_type == ICMP6_ECHO_REQUEST;
		return 1;
	}
	return 0;
}

static __always_inline int is_nd(struct pkt *p)
{
	/* Router/neighbour solicitation and advertisement, redirect, and MLD:
	 * IPv6 does not work without them. */
	if (p->proto != IPPROTO_ICMPV6)
		return 0;
	__u8 t = p->icmp_type;
	return (t >= ICMP6_ND_FIRST && t <= ICMP6_ND_LAST) || t == ICMP6_MLD2_REPORT;
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
	if (p->icmp_type == ICMP4_ECHO_REPLY && p->proto == IPPROTO_ICMP)
		p->icmp_type = ICMP4_ECHO_REQUEST;
	else if (p->icmp_type == ICMP6_ECHO_REPLY && p->proto == IPPROTO_ICMPV6)
		p->icmp_type = ICMP6_ECHO_REQUEST;
	*dir = *dir == DIR_FROM_GUEST ? DIR_TO_GUEST : DIR_FROM_GUEST;
}

#endif
