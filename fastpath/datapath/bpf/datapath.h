/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/* Types shared by the datapath and its Go loader (bpf2go generates Go
 * mirrors of every struct here). Layouts are explicit: no implicit padding. */
#ifndef PALISADE_DATAPATH_H
#define PALISADE_DATAPATH_H

#include <linux/types.h>

/* Every constant the Go side shares is an enumerator of a named enum,
 * anchored in BTF (struct btf_anchor in datapath.c) and listed in bpf2go's
 * -type flags (gen.go): the Go bindings then carry them as generated
 * constants, never re-typed. */

enum limits {
	MAX_GUESTS = 1024,
	MAX_RULES = 16384, /* per policy: 256 bitmap words, 4 summary words */
	BITMAP_WORDS = MAX_RULES / 64,
	SUMMARY_WORDS = BITMAP_WORDS / 64,
};

/* TCX verdicts (linux/bpf.h of 6.6+ has them as enum tcx_action_base;
 * Debian's UAPI headers predate it). TCX_REDIRECT is TC_ACT_REDIRECT, what
 * bpf_redirect returns. */
enum tcx_verdict {
	TCX_NEXT = -1,
	TCX_PASS = 0,
	TCX_DROP = 2,
	TCX_REDIRECT = 7,
};

enum direction {
	DIR_FROM_GUEST = 0, /* TCX ingress on the host-side vNIC */
	DIR_TO_GUEST = 1,   /* TCX egress on the host-side vNIC */
};

enum guest_mode {
	MODE_INLINE = 0,
	MODE_TAP = 1,
};

enum rule_action {
	ACT_ALLOW = 1,
	ACT_DENY = 2,
	ACT_FORCE_ALLOW = 3,
	ACT_BYPASS = 4,
	ACT_LOG_ONLY = 5,
};

enum invalid_policy {
	INVALID_DROP = 0, /* drop, count, event */
	INVALID_PASS = 1, /* count; then judged by the rules, statelessly (malformed: the default action) */
	INVALID_LOG = 2,  /* as pass, plus an event */
};

enum frag_policy {
	FRAG_FOLLOW = 0, /* later fragments follow the first fragment's verdict; orphans are dropped */
	FRAG_DROP = 1,   /* every fragment is dropped */
};

/* guest_cfg.flags */
enum guest_flags {
	CFG_PASS_ARP = 1 << 0,
	CFG_PASS_ND = 1 << 1,
	CFG_PASS_NON_IP = 1 << 2,
	CFG_INSPECT = 1 << 3,     /* allowed flows go to deep inspection */
	CFG_FAIL_CLOSED = 1 << 4, /* inspection unavailable: drop (else pass) */
};

enum timeout_index {
	TO_TCP_SYN = 0,
	TO_TCP_ESTABLISHED,
	TO_TCP_FIN_WAIT,
	TO_TCP_CLOSE_WAIT,
	TO_TCP_TIME_WAIT,
	TO_TCP_CLOSED,
	TO_UDP,
	TO_UDP_REPLIED,
	TO_ICMP,
	TO_OTHER,
	TO_COUNT,
};

/* Per protected vNIC, keyed by ifindex. Replaced whole on every change, so
 * a packet sees one consistent configuration. */
struct guest_cfg {
	__u32 slot;
	__u32 policy_id;
	__u32 rule_base;
	__u32 rule_count;
	__u8 mode;
	__u8 default_action;
	__u8 invalid_policy;
	__u8 frag_policy;
	__u32 flags;
	__u64 pickup_until_ns; /* mid-stream flows are picked up until then */
	__u32 max_tcp;
	__u32 max_other;
	__u32 timeouts[TO_COUNT]; /* seconds */
	__u32 default_rule_id;
};

enum tcp_state {
	TCP_NONE = 0,
	TCP_SYN_SENT = 1,
	TCP_SYN_RECV = 2,
	TCP_ESTABLISHED = 3,
	TCP_FIN_WAIT = 4,
	TCP_CLOSE_WAIT = 5,
	TCP_TIME_WAIT = 6,
	TCP_CLOSED = 7,
};

enum pseudo_state {
	PSEUDO_NEW = 0,
	PSEUDO_REPLIED = 1,
};

enum flow_verdict {
	FV_PASS = 0,
	FV_PUNT = 1,    /* deep inspection: held and sent to the slow path (issue 5) */
	FV_OFFLOAD = 2, /* inspected, then offloaded: passes in the kernel */
	FV_BLOCK = 3,   /* blocked by the slow path: dropped in the kernel */
};

/* conn_val.flags */
enum conn_flags {
	CONN_FORCE_ALLOW = 1 << 0, /* exempt from the invalid-packet policy */
	CONN_FIN_GUEST = 1 << 1,
	CONN_FIN_REMOTE = 1 << 2,
	CONN_PICKED_UP = 1 << 3,
};

/* conn_val.initiator: who opened the connection */
enum initiator {
	INIT_GUEST = 0,
	INIT_REMOTE = 1,
};

/* Connection key, oriented by the guest: one lookup serves both directions. */
struct conn_key {
	__u32 guest_addr[4];
	__u32 remote_addr[4];
	__u16 guest_port;
	__u16 remote_port;
	__u8 proto;
	__u8 family;
	__u16 pad;
};

struct conn_val {
	__u64 flow_id;
	__u64 created_ns;
	__u64 last_seen_ns;
	__u64 packets[2]; /* [enum direction] */
	__u64 bytes[2];
	__u32 rule_id;
	__u32 policy_id;
	__u8 state;
	__u8 initiator;
	__u8 verdict;
	__u8 flags;
	__u32 punted;   /* packets sent to the slow path and held */
	__u32 returned; /* of those, reinjected through the vNIC again */
	__u32 pad;
};

/* Rule bitmaps: summary bit w says bitmap word w is non-zero; the non-zero
 * words are stored in order from words[base]. A field value allows the rules
 * of its own bitmap (those naming a prefix that covers it) and those of the
 * field's "any" bitmap (rules that leave the field open), kept once per field
 * instead of copied into every prefix. */
struct dim_val {
	__u64 summary[SUMMARY_WORDS];
	__u32 base;
	__u32 pad;
	__u64 any_summary[SUMMARY_WORDS];
	__u32 any_base;
	__u32 any_pad;
};

struct addr4_key {
	__u32 prefixlen;
	__u32 policy_id;
	__u32 addr;
};

struct addr6_key {
	__u32 prefixlen;
	__u32 policy_id;
	__u32 addr[4];
};

struct sport_key {
	__u32 prefixlen;
	__u32 policy_id;
	__u8 proto;
	__u8 pad;
	__u16 port; /* network order: prefixes cover port ranges */
};

struct dport_key {
	__u32 prefixlen;
	__u32 policy_id;
	__u8 dir;
	__u8 proto;
	__u16 port; /* network order; the ICMP type for ICMP */
};

struct rule_info {
	__u32 id; /* the operator's rule id */
	__u8 action;
	__u8 pad[3];
};

struct frag_key {
	__u32 slot;
	__u32 id;
	__u32 src[4];
	__u32 dst[4];
	__u8 proto;
	__u8 family;
	__u16 pad;
};

struct frag_val {
	__u64 expires_ns;
	__u8 pass;
	__u8 pad[7];
};

enum counter {
	C_PKTS_FROM_GUEST = 0,
	C_BYTES_FROM_GUEST,
	C_PKTS_TO_GUEST,
	C_BYTES_TO_GUEST,
	C_PASSED,
	C_DROPPED,
	C_NEW_CONNS,
	C_ESTABLISHED_HITS,
	C_INVALID,
	C_PICKUPS,
	C_RECLASSIFIED,
	C_RELATED,
	C_BYPASSED,
	C_TAP_WOULD_DROP,
	C_TABLE_FULL,
	C_EVENTS_SUPPRESSED,
	C_PUNTED,          /* held and sent to the slow path */
	C_TAP_COPIES,      /* copied to the slow path (tap mode) */
	C_REINJECTED,      /* came back from the slow path */
	C_ENGINE_OFFLINE,  /* inspection unavailable, passed (fail-open) */
	C_OFFLOADED_HITS,  /* packets of offloaded flows */
	C_PUNT_SHED,       /* fastpathd congested for this guest: passed uninspected (fail-open) */
	C_FRAGMENTS,
	C_PORT_REUSE,
	C_COUNT,
};

enum drop_reason {
	DR_NONE = 0,
	DR_RULE_DENY,
	DR_DEFAULT_DENY,
	DR_INVALID_STATE,
	DR_INVALID_FLAGS,
	DR_MALFORMED,
	DR_FRAGMENT,
	DR_NON_IP,
	DR_ARP,
	DR_FLOW_BLOCKED,
	DR_ENGINE_OFFLINE, /* inspection unavailable, dropped (fail-closed) */
	DR_PUNT_FAILED,    /* the packet could not be prepared for the slow path */
	DR_PUNT_SHED,      /* fastpathd congested for this guest: dropped (fail-closed) */
	DR_COUNT,
};

struct guest_counters {
	__u64 c[C_COUNT];
	__u64 drops[DR_COUNT];
};

enum event_kind {
	EV_DENY = 1,
	EV_LOG = 2,
	EV_INVALID = 3,
	EV_TABLE_FULL = 4,
	EV_DROP = 5, /* other drops: fragments, non-IP, ARP, malformed */
};

struct event {
	__u64 ts_ns;
	__u32 slot;
	__u32 rule_id;
	__u32 src[4];
	__u32 dst[4];
	__u16 sport;
	__u16 dport;
	__u8 kind;
	__u8 reason;
	__u8 dir;
	__u8 proto;
	__u8 family;
	__u8 tcp_flags;
	__u8 tap;
	__u8 state;
};

struct event_budget {
	__u64 tokens;
	__u64 last_ns;
};

struct settings {
	__u32 events_per_sec; /* per guest, per CPU */
	__u32 events_burst;
	__u32 punt_ifindex;   /* where held packets go; 0: no punt device */
	__u32 slowpath_bound; /* a slow path with inspection is bound */
	__u64 alive_until_ns; /* fastpathd's heartbeat: after this, it is gone */
};

/* Held packets reach fastpathd with this in front of their Ethernet header.
 * The vNIC's program leaves the packet untouched: it parks the metadata in a
 * per-CPU slot and tags the packet's mark; the punt device's egress program,
 * which runs synchronously on the same CPU, prepends it. Prepending
 * (bpf_skb_change_head) keeps a GSO super-packet a valid GSO packet, where
 * inserting after the Ethernet header would mark it for software
 * segmentation that the metadata then breaks. */
enum punt_magic {
	PUNT_MAGIC = 0x50554e54, /* "PUNT" */
};

/* punt_meta.flags */
enum punt_flags {
	META_TAP = 1 << 0, /* a copy; the original was delivered */
};

struct punt_meta {
	__u32 magic;
	__u32 slot;
	__u32 ifindex; /* the vNIC */
	__u8 dir;
	__u8 flags;
	__u16 pad;
	__u64 flow_id;
	__u64 packet_id;
	struct conn_key key;
};

/* Packet marks. A held packet leaves for the punt device tagged with
 * MARK_PUNT_TAG in its high nibble and its per-CPU sequence number below;
 * packets coming back from the slow path carry MARK_REINJECTED or
 * MARK_INJECTED, so the vNIC's program does not judge them twice. */
enum punt_marks {
	MARK_PUNT_TAG = 0xa0000000,      /* high nibble of a held packet's tag */
	MARK_PUNT_TAG_MASK = 0xf0000000, /* where the tag's nibble is */
	MARK_PUNT_SEQ = 0x0fffffff,      /* where its sequence number is */
	MARK_REINJECTED = 0x50414c31,    /* "PAL1": a held packet, allowed */
	MARK_INJECTED = 0x50414c32,      /* "PAL2": made by fastpathd (reject) */
};

/* fastpathd writes packets back with a mark saying where they go: the vNIC's
 * ifindex, the direction, and whether fastpathd made the packet. */
enum back_mark {
	BACK_IFINDEX = 0x3fffffff,
	BACK_INJECT = 1u << 30,
	BACK_TO_GUEST = 1u << 31,
};

struct decision_key {
	__u32 slot;
	__u32 pad;
	__u64 flow_id;
};

/* A per-flow decision from the slow path, applied by the datapath: block at
 * once; offload once every held packet of the flow has come back or been
 * dropped (dropped counts fastpathd's drops), so nothing is reordered. */
struct flow_decision {
	__u8 verdict; /* FV_OFFLOAD or FV_BLOCK */
	__u8 pad[3];
	__u32 dropped;
};

#endif
