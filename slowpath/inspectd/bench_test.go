package inspectd_test

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/palisade/palisade/fastpath/channel"
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
	verdicts atomic.Int64
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
	d := &direct{perBatch: perBatch}
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
				d.verdicts.Add(int64(binary.BigEndian.Uint16(f.Payload)))
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
	want := d.verdicts.Load() + int64(n*d.perBatch)
	for range n {
		if err := d.svc.HandleFrame(d.batch); err != nil {
			tb.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for d.verdicts.Load() < want {
		if time.Now().After(deadline) {
			tb.Fatalf("%d of %d verdicts", d.verdicts.Load(), want)
		}
		time.Sleep(20 * time.Microsecond)
	}
}

// BenchmarkService is the service's own cost per punted packet with the
// allow engine: go test -run '^$' -bench Service ./slowpath/inspectd
func BenchmarkService(b *testing.B) {
	const perBatch = 64
	d := newDirect(b, perBatch)
	b.ResetTimer()
	d.run(b, b.N)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perBatch), "ns/packet")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestServiceCostPerPacket logs what BenchmarkService measures, in wall and
// CPU time per packet (all of the process's CPU, so the session's writer and
// the counting reader are included).
func TestServiceCostPerPacket(t *testing.T) {
	const perBatch = 64
	d := newDirect(t, perBatch)
	d.run(t, 100) // warm up
	n := 100_000 / raceDivisor / perBatch
	start, cpu := time.Now(), cpuTime()
	d.run(t, n)
	wall, used := time.Since(start), cpuTime()-cpu
	packets := n * perBatch
	t.Logf("service cost, allow engine, %d workers: %d packets in %s: %.0f ns/packet wall, %.0f ns/packet CPU (%.1f Mpps)",
		d.svc.Stats().Workers, packets, wall.Round(time.Millisecond), float64(wall.Nanoseconds())/float64(packets),
		float64(used.Nanoseconds())/float64(packets), float64(packets)/wall.Seconds()/1e6)
}
