package punt

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/palisade/palisade/fastpath/datapath"
)

// TestSocketReportsTruncation reads through the packet socket's code from a
// datagram socket pair: the largest packet the punt device carries fits
// the engine's buffer, and a larger one is reported, not passed on cut.
func TestSocketReportsTruncation(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	s := &packetSocket{fd: fds[0]}
	defer s.Close()
	largest := make([]byte, vnetHdrLen+datapath.PuntMetaSize+14+65535)
	if _, err := unix.Write(fds[1], largest); err != nil {
		t.Fatal(err)
	}
	if n, ok, err := s.Read(make([]byte, readBufSize)); !ok || err != nil || n != len(largest) {
		t.Fatalf("a %d-byte frame: read %d %v %v", len(largest), n, ok, err)
	}
	if _, err := unix.Write(fds[1], make([]byte, readBufSize+1)); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.Read(make([]byte, readBufSize)); ok || !errors.Is(err, ErrTruncated) {
		t.Fatalf("an oversized frame: ok %v, %v", ok, err)
	}
	if _, ok, err := s.Read(make([]byte, readBufSize)); ok || err != nil {
		t.Fatalf("nothing waiting: ok %v, %v", ok, err)
	}
}

// TestSocketReadFailureEndsReading: a descriptor that cannot be read as a
// socket gives an error the engine does not retry (Run ends on it).
func TestSocketReadFailureEndsReading(t *testing.T) {
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	s := &packetSocket{fd: int(null.Fd())}
	_, ok, err := s.Read(make([]byte, 64))
	if ok || err == nil || transientReadError(err) {
		t.Fatalf("reading /dev/null as a socket: ok %v, %v", ok, err)
	}
}
