/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/* Numbers of the wire protocols the datapath reads that the UAPI headers it
 * can include do not name (linux/icmp.h needs libc; the fragment bits and
 * ICMPv6's discovery types are kernel-internal). */
#ifndef PALISADE_LIB_PROTO_H
#define PALISADE_LIB_PROTO_H

#define NSEC_PER_SEC 1000000000ULL

/* ICMP types (RFC 792) */
enum icmp4_type {
	ICMP4_ECHO_REPLY = 0,
	ICMP4_DEST_UNREACH = 3,
	ICMP4_ECHO_REQUEST = 8,
	ICMP4_TIME_EXCEEDED = 11,
	ICMP4_PARAM_PROBLEM = 12,
};

/* ICMPv6 types (RFC 4443, 4861, 3810) */
enum icmp6_type {
	ICMP6_ERROR_FIRST = 1, /* 1-4: destination unreachable, packet too big, */
	ICMP6_ERROR_LAST = 4,  /* time exceeded, parameter problem */
	ICMP6_ECHO_REQUEST = 128,
	ICMP6_ECHO_REPLY = 129,
	ICMP6_ND_FIRST = 130, /* 130-132 MLD, 133-137 router and neighbour */
	ICMP6_ND_LAST = 137,  /* discovery, redirect */
	ICMP6_MLD2_REPORT = 143,
};

/* The ICMP header's first 8 bytes: type, code, checksum, then (echo) the
 * identifier; an error quotes the offending packet right after them. */
enum icmp_header {
	ICMP_HDR_LEN = 8,
	ICMP_ECHO_ID_OFF = 4,
};

/* IPv4 frag_off, host order */
enum ip4_frag_bits {
	IP4_MORE_FRAGS = 0x2000,
	IP4_FRAG_OFFSET = 0x1fff,
};

/* The IPv6 fragment header's offset word, host order */
enum ip6_frag_bits {
	IP6_MORE_FRAGS = 0x0001,
	IP6_FRAG_OFFSET = 0xfff8,
};

enum ip6_ext_len {
	IP6_EXT_UNIT = 8, /* hop-by-hop, routing, destination options: (len + 1) * 8 */
	IP6_AH_UNIT = 4,  /* AH: (len + 2) * 4 */
	IP6_FRAG_HDR_LEN = 8,
};

/* TCP flags, in the flags byte of the TCP header (struct tcphdr's
 * bitfields, as one byte) */
enum tcp_flag_bits {
	TCPF_FIN = 0x01,
	TCPF_SYN = 0x02,
	TCPF_RST = 0x04,
	TCPF_PSH = 0x08,
	TCPF_ACK = 0x10,
	TCPF_URG = 0x20,
};

enum tcp_header {
	TCP_FLAGS_OFF = 13, /* the flags byte: CWR ECE URG ACK PSH RST SYN FIN */
	TCP_DOFF_UNIT = 4,  /* data offset counts 32-bit words */
};

enum ip4_header {
	IP4_IHL_UNIT = 4, /* header length counts 32-bit words */
	IP4_IHL_MIN = 5,
};

#endif
