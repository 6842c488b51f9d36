/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/* The datapath's maps: what fastpathd configures (vNICs, policies, tables,
 * settings) and reads back (counters, events), pinned by name so that they
 * outlive fastpathd. */
#ifndef PALISADE_LIB_MAPS_H
#define PALISADE_LIB_MAPS_H

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_GUESTS);
	/* Not preallocated: a replaced element is freed only after an RCU
	 * grace period, so a packet that holds the old configuration reads it
	 * whole while fastpathd swaps in a new one. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32); /* ifindex */
	__type(value, struct guest_cfg);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} vnics SEC(".maps");

/* Each guest's table is an LRU hash sized by its policy (the template's
 * max_entries is only a placeholder). */
#define CONN_TABLE                                      \
	struct {                                        \
		__uint(type, BPF_MAP_TYPE_LRU_HASH);    \
		__uint(max_entries, 1);                 \
		__type(key, struct conn_key);           \
		__type(value, struct conn_val);         \
	}

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MAX_GUESTS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, CONN_TABLE);
} conn_tcp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MAX_GUESTS);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, CONN_TABLE);
} conn_other SEC(".maps");

/* Live entries per guest table ([slot*2] TCP, [slot*2+1] other): raised here
 * on insert, recounted exactly by fastpathd's sweeper. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_GUESTS * 2);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} conn_live SEC(".maps");

#define DIM_MAP(name, keytype)                         \
	struct {                                       \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);   \
		__uint(max_entries, 1 << 20);          \
		__uint(map_flags, BPF_F_NO_PREALLOC);  \
		__type(key, keytype);                  \
		__type(value, struct dim_val);         \
		__uint(pinning, LIBBPF_PIN_BY_NAME);   \
	} name SEC(".maps")

DIM_MAP(dim_src4, struct addr4_key);
DIM_MAP(dim_dst4, struct addr4_key);
DIM_MAP(dim_src6, struct addr6_key);
DIM_MAP(dim_dst6, struct addr6_key);
DIM_MAP(dim_sport, struct sport_key);
DIM_MAP(dim_dport, struct dport_key);

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << 20); /* resized by the loader */
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} words SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << 18); /* resized by the loader */
	__type(key, __u32);
	__type(value, struct rule_info);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1 << 18); /* same size as rules */
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} rule_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_GUESTS);
	__type(key, __u32);
	__type(value, struct guest_counters);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} guest_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct frag_key);
	__type(value, struct frag_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_GUESTS);
	__type(key, __u32);
	__type(value, struct event_budget);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} event_budgets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct settings);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} settings_map SEC(".maps");

/* Per guest slot: non-zero while fastpathd holds as much of the guest's
 * traffic as it may. The datapath then sheds the guest's inspected packets by
 * its fail policy itself, instead of copying each to user space first. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_GUESTS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} punt_congested SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384); /* decisions live until a packet applies them */
	__type(key, struct decision_key);
	__type(value, struct flow_decision);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flow_decisions SEC(".maps");

/* Updating a map-of-maps from user space waits for every running program
 * (synchronize_rcu): fastpathd does so before it reuses what an old policy
 * used. No program reads this map. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_ARRAY);
		__uint(max_entries, 1);
		__type(key, __u32);
		__type(value, __u32);
	});
} rcu_barrier SEC(".maps");

#endif
