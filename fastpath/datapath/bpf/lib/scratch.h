/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/* Per-CPU scratch space for values too big for the 512-byte stack: with
 * classification's frames on top of a packet's, the stack would pass it. */
#ifndef PALISADE_LIB_SCRATCH_H
#define PALISADE_LIB_SCRATCH_H

struct scratch {
	struct conn_val nv;    /* a new connection, before its insert */
	struct frag_key fk;    /* the packet's fragment key, if a fragment */
	struct pkt pkt;        /* the packet being judged */
	struct pkt alt;        /* the packet seen from the flow's other side */
	struct punt_meta meta; /* parked for the punt device's egress program */
	__u32 meta_tag;        /* the mark of the packet it belongs to */
	__u32 pad;
	__u64 punt_seq; /* this CPU's held-packet numbers */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_map SEC(".maps");

#endif
