package bench

// The traffic programs and their Go bindings are generated and committed,
// like the datapath's (go tool task generate), with the datapath's bpf2go
// wrapper, which finds the host's include directory for asm/ headers.
//go:generate sh ../datapath/bpf/bpf2go.sh -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type bench_cfg traffic bpf/traffic.c
