package inspectd_test

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/hypervisor/lab/wait"
	"github.com/palisade/palisade/slowpath/engine"
	"github.com/palisade/palisade/slowpath/inspect/craft"
	"github.com/palisade/palisade/slowpath/inspectd"
	"github.com/palisade/palisade/slowpath/inspectd/inspecttest"
)

// direct is the service on a real session over loopback TCP whose far end
// only counts verdicts: no fast path, so what is measured is the service
// (copy, queue, engines, batching, encoding) and the session's writer.
type direct struct {
	svc      *inspectd.Service
	sess     *channel.Session
	verdicts atomic.Int64
	lastAt   atomic.Int64  // when the last verdict frame arrived, Unix ns
	arrived  chan struct{} // signalled on every verdict frame
	batch    channel.Frame
	perBatch int
}

func newDirect(tb testing.TB, perBatch int) *direct {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	near, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	far, err := ln.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sess := channel.NewSession(channel.NewConn(near), channel.SessionConfig{Role: channel.RoleSlowPath, Keepalive: time.Hour, DeadAfter: time.Hour})
	d := &direct{sess: sess, perBatch: perBatch, arrived: make(chan struct{}, 1)}
	d.svc, err = inspectd.New(inspectd.Config{MaxStall: noShed, Log: inspecttest.Log(tb)}, chainOf(engine.NewOffloadAfter(0)))
	if err != nil {
		tb.Fatal(err)
	}
	d.svc.Bound(sess, channel.Result{Negotiated: slowPathCaps})
	done := make(chan struct{}, 2)
	go func() { _ = sess.Run(ctx); done <- struct{}{} }()
	go func() {
		r := channel.NewReader(far)
		for {
			f, err := r.ReadFrame()
			if err != nil {
				done <- struct{}{}
				return
			}
			if f.Type == channel.TypeVerdictBatch {
				d.lastAt.Store(time.Now().UnixNano())
				d.verdicts.Add(int64(binary.BigEndian.Uint16(f.Payload)))
				select {
				case d.arrived <- struct{}{}:
				default:
				}
			}
		}
	}()
	tb.Cleanup(func() {
		cancel()
		_ = far.Close()
		<-done
		<-done
		_ = d.svc.Close()
	})

	frame := (&craft.Endpoints{Ethernet: true}).UDP(netip.MustParseAddrPort(guestIP+":5000"), netip.MustParseAddrPort("198.51.100.9:53"), make([]byte, 470)).Data
	recs := make([]channel.PuntRecord, perBatch)
	for i := range recs {
		recs[i] = channel.PuntRecord{Guest: 7, Direction: channel.FromGuest, FlowID: uint64(i * 7919), PacketID: uint64(i), Data: frame}
	}
	p, err := channel.AppendPuntBatch(nil, recs)
	if err != nil {
		tb.Fatal(err)
	}
	d.batch = channel.Frame{Type: channel.TypePuntBatch, Payload: p}
	return d
}

// run hands the service n batches as the reader would and waits for every
// verdict.
func (d *direct) run(tb testing.TB, n int) {
	tb.Helper()
	want := d.verdicts.Load() + int64(n*d.perBatch)
	for range n {
		if err := d.svc.HandleFrame(d.batch); err != nil {
			tb.Fatal(err)
		}
	}
	wait.ForSignal(tb, "every verdict", d.arrived, func() bool { return d.verdicts.Load() >= want })
}

// BenchmarkService is the service's own cost per punted packet with the
// allow engine, in wall and CPU time (all of the process's CPU, so the
// session's writer and the counting reader are included):
// go test -run '^$' -bench Service ./slowpath/inspectd
func BenchmarkService(b *testing.B) {
	const perBatch = 64
	d := newDirect(b, perBatch)
	d.run(b, 100) // warm up
	cpu := cpuTime()
	b.ResetTimer()
	d.run(b, b.N)
	b.StopTimer()
	packets := float64(b.N * perBatch)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/packets, "ns/packet")
	b.ReportMetric(float64((cpuTime()-cpu).Nanoseconds())/packets, "cpu-ns/packet")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// finish records when the engines last finished a packet.
type finish struct{ at atomic.Int64 }

func (f *finish) Name() string           { return "finish" }
func (f *finish) FlowEnd(uint32, uint64) {}
func (f *finish) Inspect(*engine.Packet) engine.Verdict {
	f.at.Store(time.Now().UnixNano())
	return engine.Allow
}

// BenchmarkLonePunt is how long a lone punt's verdict takes to reach the
// fast path once the engines are done with it (p50 and p99), against a
// floor measured in the same run, alternately: a lone verdict frame sent
// on an idle session over loopback TCP to a reader, without the service.
// p50-x-floor is the service's hand-off from worker to fast path as a
// multiple of the bare binding's.
func BenchmarkLonePunt(b *testing.B) {
	fin := &finish{}
	l := startLoop(b, inspectd.Config{}, chainOf(engine.NewOffloadAfter(0), fin))
	bare := newDirect(b, 1)
	floorFrame, err := channel.AppendVerdictBatch(nil, []channel.VerdictRecord{{Guest: 99, FlowID: 1, PacketID: 1, Action: channel.ActionAllow}})
	if err != nil {
		b.Fatal(err)
	}
	lat, floor := make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		l.fast.Punt(udpPunts(uint64(3000+i), 1, 1)...)
		lat = append(lat, l.fast.WaitVerdict(i).At.Sub(time.Unix(0, fin.at.Load())))
		want, sent := bare.verdicts.Load()+1, time.Now()
		if err := bare.sess.Send(channel.TypeVerdictBatch, floorFrame); err != nil {
			b.Fatal(err)
		}
		wait.ForSignal(b, "the floor's frame", bare.arrived, func() bool { return bare.verdicts.Load() >= want })
		floor = append(floor, time.Unix(0, bare.lastAt.Load()).Sub(sent))
	}
	b.StopTimer()
	slices.Sort(lat)
	slices.Sort(floor)
	p50, p99, f50 := lat[len(lat)/2], lat[len(lat)*99/100], floor[len(floor)/2]
	b.ReportMetric(float64(p50.Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(p99.Nanoseconds())/1e3, "p99-µs")
	b.ReportMetric(float64(f50.Nanoseconds())/1e3, "floor-p50-µs")
	b.ReportMetric(float64(p50)/float64(max(f50, 1)), "p50-x-floor")
}

// BenchmarkFlood is the whole binding's throughput under a flood (the test
// fast path, loopback TCP, the service), in punts per second, and as a
// multiple of the service's own cost per packet measured in the same run
// (BenchmarkService's harness): x-service is what the binding adds.
func BenchmarkFlood(b *testing.B) {
	l := startLoop(b, inspectd.Config{MaxStall: noShed}, chainOf(engine.NewOffloadAfter(0)))
	flood(b, l, 4096) // warm up
	b.ResetTimer()
	flood(b, l, b.N)
	b.StopTimer()
	perPunt := float64(b.Elapsed().Nanoseconds()) / float64(b.N)

	const perBatch = 256
	d := newDirect(b, perBatch)
	d.run(b, 16) // warm up
	batches := max(1, b.N/perBatch)
	start := time.Now()
	d.run(b, batches)
	service := float64(time.Since(start).Nanoseconds()) / float64(batches*perBatch)
	b.ReportMetric(1e9/perPunt, "punts/s")
	b.ReportMetric(perPunt, "ns/punt")
	b.ReportMetric(perPunt/service, "x-service")
}
