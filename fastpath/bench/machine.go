package bench

import (
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Machine is the CPU model and kernel release the reports print.
func Machine() (model, kernel string) {
	model = "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		kernel = unix.ByteSliceToString(u.Release[:])
	}
	return model, kernel
}
