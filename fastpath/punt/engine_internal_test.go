package punt

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/hypervisor/lab"
)

// newTestEngine makes an engine on a real datapath in a namespace of its
// own; its guests fail closed.
func newTestEngine(t *testing.T) *Engine {
	t.Helper()
	ns, err := lab.ForTest(t).Namespace("host")
	if err != nil {
		t.Fatal(err)
	}
	dp, err := datapath.Open(datapath.Config{PinDir: filepath.Join(lab.BPFFSForTest(t), "palisade")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	log := logrus.New()
	log.SetOutput(io.Discard)
	var e *Engine
	err = ns.Do(func() (err error) {
		e, err = New(Config{Datapath: dp, Links: ns.Netlink(), Log: log,
			GuestOf: func(uint32) (Guest, bool) { return Guest{ID: "g", FailClosed: true}, true }})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// hold registers a held packet of its own flow, as take does.
func (e *Engine) hold(id uint64) *held {
	h := &held{id: id, flow: flowKey{0, id}, raw: make([]byte, 100), deadline: time.Now().Add(time.Minute)}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.flows[h.flow] = &flowState{queue: []*held{h}}
	e.byID[id] = h
	e.order = append(e.order, h)
	e.account(h, +1)
	return h
}

func TestRunEndsWhenReadingFails(t *testing.T) {
	e := newTestEngine(t)
	done := make(chan error, 1)
	go func() { done <- e.Run(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	// The socket turns into something that cannot be read as one.
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	if err := unix.Dup2(int(null.Fd()), e.sock.fd); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Run ended without an error")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run goes on (and keeps the heartbeat) after its reader failed")
	}
}

func TestOversizedFrameCountsAsMalformed(t *testing.T) {
	e := newTestEngine(t)
	_ = e.sock.close()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	e.sock = &packetSocket{fd: fds[0]}
	defer e.sock.close()

	// The largest frame the punt device carries fits the read buffer.
	largest := make([]byte, vnetHdrLen+datapath.PuntMetaSize+14+65535)
	if _, err := unix.Write(fds[1], largest); err != nil {
		t.Fatal(err)
	}
	if n, ok, err := e.sock.read(make([]byte, readBufSize)); !ok || err != nil || n != len(largest) {
		t.Fatalf("a %d-byte frame: read %d %v %v", len(largest), n, ok, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = e.readLoop(ctx) }()
	defer func() { cancel(); wg.Wait() }()
	if _, err := unix.Write(fds[1], make([]byte, readBufSize+1)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for e.Stats().Malformed != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("a truncated frame is not counted: malformed %d", e.Stats().Malformed)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSendFailureNamesItsReason(t *testing.T) {
	e := newTestEngine(t)
	rec := []channel.PuntRecord{{Direction: channel.ToGuest, Data: make([]byte, 60)}}
	size := 2 + channel.PuntRecordSize(rec[0])
	e.send(rec, []*held{e.hold(1)}, size) // no slow path bound
	a, b := net.Pipe()
	defer b.Close()
	s := channel.NewSession(channel.NewConn(a), channel.SessionConfig{Role: channel.RoleFastPath})
	s.Close(errors.New("peer gone"))
	e.sess.Store(s)
	e.send(rec, []*held{e.hold(2)}, size) // the session ended
	if st := e.Stats(); st.FailClosed["unbound"] != 2 || st.FailClosed["queue full"] != 0 || st.Pending != 0 {
		t.Fatalf("fail_closed %v, pending %d", st.FailClosed, st.Pending)
	}
}

func TestFailAllLetsGoOfPackets(t *testing.T) {
	e := newTestEngine(t)
	for id := uint64(1); id <= 3; id++ {
		e.hold(id)
	}
	e.failAll("unbound")
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, h := range e.order[:cap(e.order)] {
		if h != nil {
			t.Fatalf("order keeps released packet %d (%d)", h.id, i)
		}
	}
	if e.totalBytes != 0 || len(e.byID) != 0 {
		t.Fatalf("still held: %d bytes, %d packets", e.totalBytes, len(e.byID))
	}
}
