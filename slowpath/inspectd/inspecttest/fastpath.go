package inspecttest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/palisade/palisade/fastpath/bindserver"
	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/hypervisor/lab/wait"
	"github.com/palisade/palisade/slowpath/inspect/craft"
)

// Secret is the binding secret of test bindings.
var Secret = []byte("0123456789abcdef0123456789abcdef")

// Identity is a side's handshake identity at this build's version.
func Identity(caps channel.Capabilities, id string) channel.Identity {
	return channel.Identity{Version: channel.Current(), Revision: channel.ProtocolRevision, Capabilities: caps, ID: id}
}

// Log discards everything but warnings and errors, which go to the test's
// output.
func Log(t testing.TB) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.AddHook(hook{t})
	return l.WithField("test", t.Name())
}

type hook struct{ t testing.TB }

func (h hook) Levels() []logrus.Level { return logrus.AllLevels[:logrus.WarnLevel+1] }
func (h hook) Fire(e *logrus.Entry) error {
	line, _ := e.String()
	h.t.Log(line)
	return nil
}

// Verdict is a verdict as the fast path received it, with when.
type Verdict struct {
	channel.VerdictRecord
	At time.Time
}

// FastPath serves one listener as a fast path offering every capability.
type FastPath struct {
	t      testing.TB
	Server *bindserver.Server

	mu       sync.Mutex
	sess     *channel.Session
	verdicts []Verdict
	events   []channel.EventRecord
	changed  chan struct{}
}

// Start serves ln until the test ends.
func Start(t testing.TB, ln net.Listener, timing channel.Timing) *FastPath {
	t.Helper()
	f := &FastPath{t: t, changed: make(chan struct{}, 1)}
	var err error
	f.Server, err = bindserver.New(bindserver.Config{
		Self:   Identity(channel.CapFirewall|channel.CapIPS|channel.CapWRS|channel.CapOffload|channel.CapTap|channel.CapEvents, "host"),
		Secret: Secret, Endpoint: ln.Addr().String(), Timing: timing, Log: Log(t), Handler: f,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = f.Server.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

func (f *FastPath) Bound(s *channel.Session, _ channel.Result) {
	f.mu.Lock()
	f.sess = s
	f.mu.Unlock()
	f.signal()
}

func (f *FastPath) Unbound(error) {
	f.mu.Lock()
	f.sess = nil
	f.mu.Unlock()
	f.signal()
}

// HandleFrame keeps verdicts and events (copied: the payload is reused).
func (f *FastPath) HandleFrame(fr channel.Frame) error {
	now := time.Now()
	switch fr.Type {
	case channel.TypeVerdictBatch:
		recs, err := channel.DecodeVerdictBatch(fr.Payload, nil)
		if err != nil {
			return err
		}
		f.mu.Lock()
		for _, r := range recs {
			r.Reply = append([]byte(nil), r.Reply...)
			f.verdicts = append(f.verdicts, Verdict{r, now})
		}
		f.mu.Unlock()
	case channel.TypeEventBatch:
		recs, err := channel.DecodeEventBatch(fr.Payload, nil)
		if err != nil {
			return err
		}
		f.mu.Lock()
		for _, r := range recs {
			r.Body = append([]byte(nil), r.Body...)
			f.events = append(f.events, r)
		}
		f.mu.Unlock()
	}
	f.signal()
	return nil
}

func (f *FastPath) signal() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// WaitFor waits until cond holds (see wait.ForSignal): cond is checked
// again whenever a frame arrives or the binding changes.
func (f *FastPath) WaitFor(what string, cond func() bool) {
	f.t.Helper()
	wait.ForSignal(f.t, what, f.changed, cond)
}

// Session is the bound session, or nil.
func (f *FastPath) Session() *channel.Session {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sess
}

// WaitBound waits for a binding other than prev (nil: any) and returns it.
func (f *FastPath) WaitBound(prev *channel.Session) *channel.Session {
	f.t.Helper()
	f.WaitFor("bound", func() bool { s := f.Session(); return s != nil && s != prev })
	return f.Session()
}

// Punt sends one PUNT_BATCH.
func (f *FastPath) Punt(recs ...channel.PuntRecord) {
	f.t.Helper()
	p, err := channel.AppendPuntBatch(nil, recs)
	if err != nil {
		f.t.Fatal(err)
	}
	f.SendRaw(p)
}

// SendRaw sends payload as a PUNT_BATCH, waiting while the session's queue
// is full.
func (f *FastPath) SendRaw(payload []byte) {
	f.t.Helper()
	s := f.Session()
	if s == nil {
		f.t.Fatal("not bound")
	}
	wait.ForErr(f.t, "punt queued", func() error {
		err := s.Send(channel.TypePuntBatch, payload)
		if err != nil && s.Err() != nil {
			f.t.Fatalf("punt: %v", err)
		}
		return err
	})
}

// VerdictCount is how many verdicts have arrived.
func (f *FastPath) VerdictCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.verdicts)
}

// WaitVerdictCount waits until n verdicts have arrived in all.
func (f *FastPath) WaitVerdictCount(n int) {
	f.t.Helper()
	f.WaitFor(fmt.Sprintf("%d verdicts", n), func() bool { return f.VerdictCount() >= n })
}

// WaitVerdict waits for the verdict that arrives i-th (from 0) and returns
// it.
func (f *FastPath) WaitVerdict(i int) Verdict {
	f.t.Helper()
	f.WaitVerdictCount(i + 1)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.verdicts[i]
}

// WaitVerdicts waits until n verdicts have arrived in all and returns them.
func (f *FastPath) WaitVerdicts(n int) []Verdict {
	f.t.Helper()
	f.WaitVerdictCount(n)
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Verdict(nil), f.verdicts...)
}

// WaitEvents waits until n events have arrived in all and returns them.
func (f *FastPath) WaitEvents(n int) []channel.EventRecord {
	f.t.Helper()
	f.WaitFor(fmt.Sprintf("%d events", n), func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.events) >= n
	})
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]channel.EventRecord(nil), f.events...)
}

// ByFlow groups verdicts by guest and flow id, in arrival order.
func ByFlow(vs []Verdict) map[[2]uint64][]Verdict {
	out := map[[2]uint64][]Verdict{}
	for _, v := range vs {
		k := [2]uint64{uint64(v.Guest), v.FlowID}
		out[k] = append(out[k], v)
	}
	return out
}

// Punts turns crafted frames into the punt records of one flow of guest,
// numbered from packet id 1; frames sent from guestIP leave the guest.
func Punts(guest uint32, flowID uint64, guestIP netip.Addr, frames []craft.Frame) []channel.PuntRecord {
	out := make([]channel.PuntRecord, len(frames))
	for i, f := range frames {
		dir := channel.ToGuest
		if f.Decoded().Src == guestIP {
			dir = channel.FromGuest
		}
		out[i] = channel.PuntRecord{Guest: guest, Direction: dir, FlowID: flowID, PacketID: uint64(i + 1), Data: f.Data}
	}
	return out
}
