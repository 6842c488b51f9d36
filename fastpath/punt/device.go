package punt

import (
	"errors"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/palisade/palisade/fastpath/datapath"
)

// Datapath is what the engine tells the datapath: whether a slow path that
// inspects is bound, that fastpathd is alive, what was decided for a flow,
// and which guests to shed. *datapath.Datapath is the real one.
type Datapath interface {
	SetSlowPath(bound bool) error
	Heartbeat(ttl time.Duration) error
	// SetFlowDecision offloads (datapath.DecideOffload) or blocks
	// (datapath.DecideBlock) a flow; dropped counts the flow's held packets
	// the engine dropped, which the offload hand-over must not wait for.
	SetFlowDecision(slot uint32, flowID uint64, verdict uint8, dropped uint32) error
	SetCongested(slot uint32, congested bool) error
}

// Device is the punt device as the engine uses it: held packets come in,
// each a virtio header, the datapath's metadata (datapath.PuntMeta) and the
// frame; packets go back as a virtio header and the frame, with a mark that
// says where to (datapath.BackMark). The real one is a packet socket on
// datapath.PuntIn.
type Device interface {
	// Read copies the next held packet into buf; ok=false if none is
	// waiting. A packet larger than buf is lost: ErrTruncated. A read
	// error that passes (ENETDOWN, ENOBUFS, ENOMEM) is logged and reading
	// goes on; any other ends Run.
	Read(buf []byte) (n int, ok bool, err error)
	// Wait blocks until a packet is waiting or timeout passes.
	Wait(timeout time.Duration) error
	// Write sends b marked mark; while the device is full it tries again
	// until deadline, not longer.
	Write(b []byte, mark uint32, deadline time.Time) error
	Close() error
}

// ErrTruncated says a held packet did not fit the read buffer (it is lost).
var ErrTruncated = errors.New("frame truncated")

var (
	_ Datapath = (*datapath.Datapath)(nil)
	_ Device   = (*packetSocket)(nil)
)

// puntDevices is a Datapath that can make the punt device itself; New opens
// a packet socket on it when the Config names no Device.
type puntDevices interface {
	EnsurePuntDevice(nl *netlink.Handle) (inIfindex int, err error)
}
