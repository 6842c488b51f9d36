package punt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// vnetHdrLen is struct virtio_net_hdr: the packet socket reports a GSO
// super-packet's segmentation in it and takes it back on send, so held
// packets return byte for byte, however large.
const vnetHdrLen = 10

// stripFront turns a virtio header that describes a frame into one that
// describes the frame without its first n bytes (the metadata): checksum
// start and header length are offsets from the frame's start.
func stripFront(vnet []byte, n uint16) {
	const needsCsum = 1
	if hdrLen := binary.LittleEndian.Uint16(vnet[2:]); hdrLen > n {
		binary.LittleEndian.PutUint16(vnet[2:], hdrLen-n)
	}
	if vnet[0]&needsCsum != 0 {
		binary.LittleEndian.PutUint16(vnet[6:], binary.LittleEndian.Uint16(vnet[6:])-n)
	}
}

// packetSocket reads and writes whole frames on one interface.
type packetSocket struct {
	fd      int
	ifindex int
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func openPacketSocket(ifindex int) (*packetSocket, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	s := &packetSocket{fd: fd, ifindex: ifindex}
	for _, o := range []struct {
		level, opt, val int
		what            string
	}{
		{unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1, "vnet header"},
		{unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1, "ignore outgoing"},
		{unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32 << 20, "receive buffer"},
		{unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 32 << 20, "send buffer"},
	} {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.val); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("packet socket: %s: %w", o.what, err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("packet socket: bind to ifindex %d: %w", ifindex, err)
	}
	return s, nil
}

// Wait blocks until a frame is readable or timeout passes.
func (s *packetSocket) Wait(timeout time.Duration) error {
	fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
	_, err := unix.Poll(fds, max(1, int(timeout/time.Millisecond)))
	if errors.Is(err, unix.EINTR) {
		return nil
	}
	return err
}

// Read returns the next frame with its vnet header, or ok=false if none is
// waiting.
func (s *packetSocket) Read(buf []byte) (n int, ok bool, err error) {
	n, _, err = unix.Recvfrom(s.fd, buf, unix.MSG_DONTWAIT|unix.MSG_TRUNC)
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	if n > len(buf) {
		return 0, false, fmt.Errorf("%w: %d bytes, buffer %d", ErrTruncated, n, len(buf))
	}
	return n, true, nil
}

// transientReadError says a read failed for a reason that passes (the device
// went down, memory is short); any other error will not go away by reading
// again.
func transientReadError(err error) bool {
	return errors.Is(err, unix.ENETDOWN) || errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM)
}

// Write sends a frame that starts with its vnet header, with skb mark set
// (it tells the reinject program where the packet goes). While the device
// is full it tries again until deadline, not longer: a stuck device must not
// hold up its caller.
func (s *packetSocket) Write(b []byte, mark uint32, deadline time.Time) error {
	oob := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_SOCKET, unix.SO_MARK
	h.SetLen(unix.CmsgLen(4))
	binary.NativeEndian.PutUint32(oob[unix.CmsgLen(0):], mark)
	for {
		err := unix.Sendmsg(s.fd, b, oob, &unix.SockaddrLinklayer{Ifindex: s.ifindex}, 0)
		full := errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ENOBUFS)
		if !full {
			return err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("punt device full: %w", err)
		}
		// The punt device's queue is momentarily full; it drains at
		// wire speed.
		if errors.Is(err, unix.EAGAIN) {
			if werr := s.waitWritable(min(left, 10*time.Millisecond)); werr != nil {
				return werr
			}
		} else {
			time.Sleep(min(left, 200*time.Microsecond)) // ENOBUFS: the queue, not the socket
		}
	}
}

func (s *packetSocket) waitWritable(timeout time.Duration) error {
	fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLOUT}}
	_, err := unix.Poll(fds, max(1, int(timeout/time.Millisecond)))
	if errors.Is(err, unix.EINTR) {
		return nil
	}
	return err
}

// Close closes the socket; the device stays.
func (s *packetSocket) Close() error { return unix.Close(s.fd) }
