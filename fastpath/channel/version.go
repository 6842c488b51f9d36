package channel

import (
	"fmt"
	"strconv"
	"strings"
)

// The product version is defined here and nowhere else. Release is
// MAJOR.MINOR.SP; the build number is stamped by the Taskfile with
//
//	-ldflags "-X github.com/palisade/palisade/fastpath/channel.build=N"
//
// so two binaries of one release can differ only in their build.
var (
	release = "0.1.0"
	build   = "0"
)

// ProtocolRevision numbers the frame layouts after the handshake. HELLO,
// CHALLENGE and REJECT keep their layout across revisions so that a peer of
// another revision can always be told why it was refused.
const ProtocolRevision uint32 = 1

// Version is a product version MAJOR.MINOR.SP.BUILD.
type Version struct {
	Major, Minor, ServicePack uint16
	Build                     uint32
}

// Current is the version of this binary.
func Current() Version {
	v, err := ParseVersion(release + "." + build)
	if err != nil {
		// Only a broken -ldflags stamp gets here; refusing to start is the
		// right answer for a binary that cannot say what it is.
		panic(fmt.Sprintf("palisade: invalid stamped version: %v", err))
	}
	return v
}

// ParseVersion parses "MAJOR.MINOR.SP.BUILD".
func ParseVersion(s string) (Version, error) {
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return Version{}, fmt.Errorf("version %q: want MAJOR.MINOR.SP.BUILD", s)
	}
	var n [4]uint64
	for i, p := range parts {
		bits := 16
		if i == 3 {
			bits = 32
		}
		v, err := strconv.ParseUint(p, 10, bits)
		if err != nil {
			return Version{}, fmt.Errorf("version %q: component %d: %w", s, i+1, err)
		}
		n[i] = v
	}
	return Version{Major: uint16(n[0]), Minor: uint16(n[1]), ServicePack: uint16(n[2]), Build: uint32(n[3])}, nil
}

// MustParseVersion is ParseVersion for constants in tests and tools.
func MustParseVersion(s string) Version {
	v, err := ParseVersion(s)
	if err != nil {
		panic(err)
	}
	return v
}

func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d.%d", v.Major, v.Minor, v.ServicePack, v.Build)
}

// Release is the version with the build masked, as the seeds print it
// ("9.5.3.x"): the part two peers must agree on.
func (v Version) Release() string {
	return fmt.Sprintf("%d.%d.%d.x", v.Major, v.Minor, v.ServicePack)
}

// Compatible reports whether two binaries may bind: the first three
// components must be equal; the build may differ.
func (v Version) Compatible(o Version) bool {
	return v.Major == o.Major && v.Minor == o.Minor && v.ServicePack == o.ServicePack
}

// VersionLine is what every binary prints for --version.
func VersionLine(binary string) string {
	return fmt.Sprintf("%s %s (protocol revision %d)", binary, Current(), ProtocolRevision)
}
