package datapath

// The eBPF objects and their Go bindings are generated and committed, so
// `go build` needs no clang; `go tool task generate` regenerates them and CI
// checks they match the C (go tool task check:generated).
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type guest_cfg -type conn_key -type conn_val -type dim_val -type addr4_key -type addr6_key -type sport_key -type dport_key -type rule_info -type guest_counters -type event -type settings -type frag_key -type frag_val -type counter -type drop_reason -type event_kind -type tcp_state -type flow_verdict -type rule_action -type timeout_index -type punt_meta -type decision_key -type flow_decision dp bpf/datapath.c
