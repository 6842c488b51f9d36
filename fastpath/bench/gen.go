package bench

// The traffic programs and their Go bindings are generated and committed,
// like the datapath's (go tool task generate).
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type bench_cfg traffic bpf/traffic.c
