#!/bin/sh
# bpf2go.sh runs bpf2go with its arguments, adding the include directory
# that holds the kernel's asm/ headers (linux/types.h needs asm/types.h).
# Debian keeps them under the host's multiarch triplet
# (/usr/include/x86_64-linux-gnu, /usr/include/aarch64-linux-gnu, ...), so
# the triplet is asked for, never assumed; other distributions keep them in
# /usr/include/asm, which needs no flag. Both go:generate lines of the
# module use it: the datapath's and the benchmark's traffic programs.
set -eu

triplet=""
for ask in "clang -print-multiarch" "gcc -print-multiarch" "dpkg-architecture -qDEB_HOST_MULTIARCH"; do
	triplet=$($ask 2>/dev/null || true)
	if [ -n "$triplet" ] && [ -f "/usr/include/$triplet/asm/types.h" ]; then
		exec go tool bpf2go "$@" -- "-I/usr/include/$triplet"
	fi
done
if [ -f /usr/include/asm/types.h ]; then
	exec go tool bpf2go "$@"
fi
echo "bpf2go.sh: no asm/types.h for this host: not in /usr/include/asm, nor under a multiarch triplet" \
	"(clang/gcc -print-multiarch, dpkg-architecture said: '${triplet}'); install the kernel headers (Debian: linux-libc-dev)" >&2
exit 1
