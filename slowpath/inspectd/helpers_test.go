package inspectd_test

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/hypervisor/lab/wait"
	"github.com/palisade/palisade/slowpath/bindclient"
	"github.com/palisade/palisade/slowpath/engine"
	"github.com/palisade/palisade/slowpath/eve"
	"github.com/palisade/palisade/slowpath/inspectd"
	"github.com/palisade/palisade/slowpath/inspectd/inspecttest"
)

// slowPathCaps are slowpathd's capabilities.
const slowPathCaps = channel.CapIPS | channel.CapWRS | channel.CapOffload | channel.CapEvents

// loop is a test fast path and a slow path running the service, bound over
// loopback TCP.
type loop struct {
	fast   *inspecttest.FastPath
	svc    *inspectd.Service
	slow   *boundService
	client *bindclient.Client
}

// boundService is the slow path's binding handler: the service, and the
// session it is bound on, which a benchmark sends on directly to measure
// the binding without the service.
type boundService struct {
	*inspectd.Service
	sess atomic.Pointer[channel.Session]
}

func (b *boundService) Bound(s *channel.Session, r channel.Result) {
	b.sess.Store(s)
	b.Service.Bound(s, r)
}

// startLoop binds a slow path running build's engine to a test fast path.
func startLoop(t testing.TB, cfg inspectd.Config, build func(eve.Sink) (engine.Engine, error)) *loop {
	t.Helper()
	log := inspecttest.Log(t)
	if cfg.Log == nil {
		cfg.Log = log
	}
	svc, err := inspectd.New(cfg, build)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	timing := channel.Timing{Keepalive: 200 * time.Millisecond, DeadAfter: 2 * time.Second}
	l := &loop{fast: inspecttest.Start(t, ln, timing), svc: svc, slow: &boundService{Service: svc}}
	addr := ln.Addr().String()
	l.client, err = bindclient.New(bindclient.Config{
		Self: inspecttest.Identity(slowPathCaps, "appliance"), Endpoint: addr,
		Dial:    func(ctx context.Context) (net.Conn, error) { return (&net.Dialer{}).DialContext(ctx, "tcp", addr) },
		Secret:  func() ([]byte, error) { return inspecttest.Secret, nil },
		Timing:  timing,
		Log:     log,
		Handler: l.slow,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = l.client.Run(ctx) }()
	go func() { defer wg.Done(); _ = svc.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	l.fast.WaitBound(nil)
	wait.For(t, "slow path bound", func() bool { return l.slow.sess.Load() != nil })
	return l
}

// chainOf builds a chain of engines that do not emit alerts.
func chainOf(es ...engine.Engine) func(eve.Sink) (engine.Engine, error) {
	return func(eve.Sink) (engine.Engine, error) { return engine.Chain(es), nil }
}

// stats waits until the service has counted n verdicts sent (it counts a
// frame once queued, which may be after the fast path has it) and returns
// its counters.
func (l *loop) stats(n int) inspectd.Stats {
	l.fast.WaitFor("verdicts counted", func() bool { return l.svc.Stats().Verdicts.Sent >= uint64(n) })
	return l.svc.Stats()
}

// runTickers are the waiters Service.Run keeps on its clock: the alert
// flush and the EVE flush.
const runTickers = 2

// blockUntil waits until n timers and tickers wait on clock.
func blockUntil(t testing.TB, clock *clockwork.FakeClock, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait.Limit)
	defer cancel()
	if err := clock.BlockUntilContext(ctx, n); err != nil {
		t.Fatalf("waiting for %d timers on the clock: %v", n, err)
	}
}
