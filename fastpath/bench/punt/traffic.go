package punt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/palisade/palisade/fastpath/datapath"
)

func (e *Env) guestAddr(port int) string {
	return netip.AddrPortFrom(e.Guest.Addr4, uint16(port)).String()
}

// guestRx is how many packets the guest's NIC received so far.
func (e *Env) guestRx() (uint64, error) {
	l, err := e.Guest.NS.Netlink().LinkByName("eth0")
	if err != nil {
		return 0, err
	}
	if l.Attrs().Statistics == nil {
		return 0, errors.New("guest eth0: no statistics")
	}
	return l.Attrs().Statistics.RxPackets, nil
}

// FloodResult is one throughput measurement: what the peer sent and what
// reached the guest during the measured window.
type FloodResult struct {
	Elapsed    time.Duration
	Sent       uint64 // datagrams the peer's sockets took
	SendErrors uint64
	Delivered  uint64 // datagrams the guest's NIC received
	CPU        CPU
}

// SentPPS and PPS are the offered and delivered rates.
func (r FloodResult) SentPPS() float64 { return float64(r.Sent) / r.Elapsed.Seconds() }
func (r FloodResult) PPS() float64     { return float64(r.Delivered) / r.Elapsed.Seconds() }

// paddedCounter keeps each sender's count on a cache line of its own.
type paddedCounter struct {
	n, errs atomic.Uint64
	_       [48]byte
}

// Flood sends UDP datagrams of payload bytes from the peer to the guest's
// FloodPort as fast as senders goroutines (one socket, so one flow, each)
// can, and counts, after warmup, for dur, what the guest's NIC receives.
// The guest has a socket bound to the port that is never read: datagrams
// that reach it are dropped by its full receive buffer, silently (no ICMP
// port unreachable comes back through the filter).
func (e *Env) Flood(ctx context.Context, senders, payload int, warmup, dur time.Duration) (FloodResult, error) {
	sink, err := e.Guest.NS.ListenPacket("udp4", fmt.Sprintf(":%d", FloodPort))
	if err != nil {
		return FloodResult{}, err
	}
	defer sink.Close()
	_ = sink.(*net.UDPConn).SetReadBuffer(4096)
	conns := make([]net.Conn, 0, senders)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < senders; i++ {
		c, err := e.Peer.NS.Dial(&net.Dialer{}, "udp4", e.guestAddr(FloodPort))
		if err != nil {
			return FloodResult{}, err
		}
		conns = append(conns, c)
	}
	counts := make([]paddedCounter, senders)
	var stop atomic.Bool
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, payload)
			for !stop.Load() {
				if _, err := c.Write(buf); err != nil {
					counts[i].errs.Add(1)
					continue
				}
				counts[i].n.Add(1)
			}
		}()
	}
	sent := func() (n, errs uint64) {
		for i := range counts {
			n += counts[i].n.Load()
			errs += counts[i].errs.Load()
		}
		return n, errs
	}
	defer func() {
		stop.Store(true)
		wg.Wait()
	}()
	if err := sleep(ctx, warmup); err != nil {
		return FloodResult{}, err
	}
	// The sender counters are read first, then the guest's in a system
	// call entered at once: on a saturated machine the goroutine may wait
	// milliseconds for a CPU after a system call returns, never before.
	snap := func() (at time.Time, s, x, rx uint64, err error) {
		at = time.Now()
		s, x = sent()
		rx, err = e.guestRx()
		return at, s, x, rx, err
	}
	procs := e.Procs()
	c0 := takeCPU(procs)
	t0, s0, x0, rx0, err := snap()
	if err != nil {
		return FloodResult{}, err
	}
	if err := sleep(ctx, dur); err != nil {
		return FloodResult{}, err
	}
	t1, s1, x1, rx1, err := snap()
	if err != nil {
		return FloodResult{}, err
	}
	c1 := takeCPU(procs)
	return FloodResult{Elapsed: t1.Sub(t0), Sent: s1 - s0, SendErrors: x1 - x0, Delivered: rx1 - rx0, CPU: cpuBetween(c0, c1)}, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// PingResult is one latency measurement.
type PingResult struct {
	RTTs []time.Duration // sorted
	Lost int             // requests whose reply did not come within a second
}

// Percentile of the sorted RTTs (nearest rank).
func (r PingResult) Percentile(p float64) time.Duration {
	if len(r.RTTs) == 0 {
		return 0
	}
	i := int(float64(len(r.RTTs))*p/100+0.999999) - 1
	return r.RTTs[max(0, min(i, len(r.RTTs)-1))]
}

// PingPong sends n UDP requests (after warm unmeasured ones) from the peer
// to the guest's EchoPort, one outstanding at a time; the guest echoes
// each. Every round trip crosses the filter twice: the request to the
// guest, the reply from it.
func (e *Env) PingPong(ctx context.Context, n, warm int) (PingResult, error) {
	echo, err := e.Guest.NS.ListenPacket("udp4", fmt.Sprintf(":%d", EchoPort))
	if err != nil {
		return PingResult{}, err
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			k, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteTo(buf[:k], from)
		}
	}()
	c, err := e.Peer.NS.Dial(&net.Dialer{}, "udp4", e.guestAddr(EchoPort))
	if err != nil {
		return PingResult{}, err
	}
	defer c.Close()
	req := make([]byte, 64)
	resp := make([]byte, 2048)
	res := PingResult{RTTs: make([]time.Duration, 0, n)}
	for i := 0; i < warm+n; i++ {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		seq := uint64(i + 1)
		binary.BigEndian.PutUint64(req, seq)
		start := time.Now()
		if _, err := c.Write(req); err != nil {
			return res, fmt.Errorf("ping %d: %w", i, err)
		}
		_ = c.SetReadDeadline(start.Add(time.Second))
		for {
			k, err := c.Read(resp)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					res.Lost++
					break
				}
				return res, fmt.Errorf("ping %d: %w", i, err)
			}
			if k < 8 || binary.BigEndian.Uint64(resp) != seq {
				continue // a late reply to an earlier request
			}
			if i >= warm {
				res.RTTs = append(res.RTTs, time.Since(start))
			}
			break
		}
	}
	slices.Sort(res.RTTs)
	return res, nil
}

// TransferResult is one long TCP transfer.
type TransferResult struct {
	Elapsed time.Duration // connect to the last byte read by the guest, or the limit
	Bytes   int64         // what the guest read
	Done    bool          // every byte arrived within the limit
}

// MBps is the rate the guest read at, in MB/s.
func (r TransferResult) MBps() float64 { return float64(r.Bytes) / r.Elapsed.Seconds() / 1e6 }

type countingWriter struct{ n atomic.Int64 }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n.Add(int64(len(p)))
	return len(p), nil
}

// Transfer sends size bytes over one TCP connection from the peer to the
// guest's TCPPort, for at most limit: the time from the connect to the
// guest having read the last byte, or what it read by the limit.
func (e *Env) Transfer(ctx context.Context, size int64, limit time.Duration) (TransferResult, error) {
	ln, err := e.Guest.NS.Listen("tcp4", fmt.Sprintf(":%d", TCPPort))
	if err != nil {
		return TransferResult{}, err
	}
	defer ln.Close()
	var got countingWriter
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(&got, c)
		done <- err
	}()
	start := time.Now()
	deadline := start.Add(limit)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	c, err := e.Peer.NS.DialContext(ctx, &net.Dialer{}, "tcp4", e.guestAddr(TCPPort))
	if err != nil {
		return TransferResult{}, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	timedOut := func() (TransferResult, error) {
		if context.Cause(ctx) != context.DeadlineExceeded {
			return TransferResult{}, ctx.Err()
		}
		return TransferResult{Elapsed: limit, Bytes: got.n.Load()}, nil
	}
	buf := make([]byte, 256<<10)
	for left := size; left > 0; {
		k := min(int64(len(buf)), left)
		if _, err := c.Write(buf[:k]); err != nil {
			if ctx.Err() != nil {
				return timedOut()
			}
			return TransferResult{}, fmt.Errorf("transfer: %w", err)
		}
		left -= k
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return TransferResult{}, err
	}
	select {
	case err := <-done:
		if n := got.n.Load(); err != nil || n != size {
			return TransferResult{}, fmt.Errorf("transfer: the guest read %d of %d bytes: %v", n, size, err)
		}
		return TransferResult{Elapsed: time.Since(start), Bytes: size, Done: true}, nil
	case <-ctx.Done():
		return timedOut()
	}
}

// SetPeerGSO lets the peer's NIC send GSO super-packets (TSO) or not: with
// gso_max_segs 1 its TCP sends wire-size segments only.
func (e *Env) SetPeerGSO(on bool) error {
	nl := e.Peer.NS.Netlink()
	l, err := nl.LinkByName("eth0")
	if err != nil {
		return err
	}
	segs := 65535 // the kernel's default (GSO_MAX_SEGS)
	if !on {
		segs = 1
	}
	return nl.LinkSetGSOMaxSegs(l, segs)
}

// puntDevDrops is what the punt device (fastpathd's veth pair, in the host
// namespace) dropped on its way to fastpathd so far.
func (e *Env) puntDevDrops() uint64 {
	l, err := e.Site.Host.Netlink().LinkByName(datapath.PuntOut)
	if err != nil || l.Attrs().Statistics == nil {
		return 0
	}
	return l.Attrs().Statistics.TxDropped
}
