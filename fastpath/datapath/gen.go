package datapath

// The eBPF objects and their Go bindings are generated and committed, so
// `go build` needs no clang; `go tool task generate` regenerates them and CI
// checks they match the C (go tool task check:generated). Every type the Go
// side reads, and every enum whose values it uses, is listed with -type:
// the constants are generated from the C, never re-typed. bpf2go.sh adds
// the host's include directory for asm/ headers.
//go:generate sh bpf/bpf2go.sh -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type guest_cfg -type conn_key -type conn_val -type dim_val -type addr4_key -type addr6_key -type sport_key -type dport_key -type rule_info -type guest_counters -type event -type settings -type frag_key -type frag_val -type punt_meta -type decision_key -type flow_decision -type limits -type tcx_verdict -type direction -type guest_mode -type rule_action -type invalid_policy -type frag_policy -type guest_flags -type timeout_index -type tcp_state -type pseudo_state -type flow_verdict -type conn_flags -type initiator -type counter -type drop_reason -type event_kind -type punt_magic -type punt_flags -type punt_marks -type back_mark dp bpf/datapath.c
