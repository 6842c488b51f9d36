package channel_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/netip"
	"time"

	"github.com/palisade/palisade/fastpath/channel"
)

// The fast path listens and the slow path dials; both prove the shared
// secret in the handshake, then a session carries a punted packet to the
// slow path and its verdict back. In production the endpoint is the
// link-local 169.254.1.1:2222 (ParseEndpoint, then CheckLinkLocal) and the
// daemons' bindserver and bindclient drive these calls; loopback keeps the
// example self-contained.
func ExampleEndpoint_Listen() {
	secret := []byte("0123456789abcdef0123456789abcdef") // both read it from a 0600 file
	ep, err := channel.ParseEndpoint("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	ln, err := ep.Listen()
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	hostBound := make(chan channel.Result, 1)
	verdicts := make(chan channel.VerdictRecord, 1)
	go fastPath(ctx, ln, secret, hostBound, verdicts)

	// The slow path's side: dial, offer, and answer every punt.
	dial, err := channel.ParseEndpoint(ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}
	nc, err := dial.Dial(ctx, netip.Addr{})
	if err != nil {
		log.Fatal(err)
	}
	conn := channel.NewConn(nc)
	res, err := conn.Offer(channel.OfferConfig{Secret: secret, Self: channel.Identity{Version: channel.Current(),
		Revision: channel.ProtocolRevision, Capabilities: channel.CapIPS | channel.CapWRS | channel.CapEvents, ID: "dsva-01"}})
	if err != nil {
		log.Fatal(err) // a *channel.RejectedError says why the host refused
	}
	host := <-hostBound
	fmt.Printf("fast path bound appliance %s, negotiated %s\n", host.Peer.ID, host.Negotiated)
	fmt.Printf("slow path bound to host %s, session %d, keepalive %s\n", res.Peer.ID, res.SessionID, res.PeerKeepalive)

	inspected := make(chan string, 1)
	var app *channel.Session
	app = channel.NewSession(conn, channel.SessionConfig{Role: channel.RoleSlowPath, Handle: func(f channel.Frame) error {
		return channel.DecodePuntBatch(f.Payload, func(p channel.PuntRecord) error {
			// p.Data aliases the frame: valid only during this call.
			inspected <- fmt.Sprintf("slow path inspects guest %d, flow %d: %d bytes", p.Guest, p.FlowID, len(p.Data))
			v, err := channel.AppendVerdictBatch(nil, []channel.VerdictRecord{{Guest: p.Guest, FlowID: p.FlowID,
				PacketID: p.PacketID, Action: channel.ActionAllow, Flow: channel.FlowOffload}})
			if err != nil {
				return err
			}
			return app.Send(channel.TypeVerdictBatch, v)
		})
	}})
	go app.Run(ctx)

	fmt.Println(<-inspected)
	v := <-verdicts
	fmt.Printf("fast path verdict for flow %d: %s, %s\n", v.FlowID, v.Action, v.Flow)
	// Output:
	// fast path bound appliance dsva-01, negotiated ips,events
	// slow path bound to host esx-01, session 1, keepalive 1s
	// slow path inspects guest 7, flow 42: 64 bytes
	// fast path verdict for flow 42: allow, offload
}

// fastPath is the host's side: accept, check the slow path's proof, and
// punt one packet once bound.
func fastPath(ctx context.Context, ln net.Listener, secret []byte, bound chan<- channel.Result, verdicts chan<- channel.VerdictRecord) {
	nc, err := ln.Accept()
	if err != nil {
		log.Fatal(err)
	}
	conn := channel.NewConn(nc)
	res, err := conn.Accept(channel.AcceptConfig{Secret: secret, SessionID: 1, Keepalive: time.Second, DeadAfter: 3 * time.Second,
		Self: channel.Identity{Version: channel.Current(), Revision: channel.ProtocolRevision,
			Capabilities: channel.CapFirewall | channel.CapIPS | channel.CapEvents, ID: "esx-01"}})
	if err != nil {
		log.Fatal(err)
	}
	bound <- res
	sess := channel.NewSession(conn, channel.SessionConfig{Role: channel.RoleFastPath, Handle: func(f channel.Frame) error {
		vs, err := channel.DecodeVerdictBatch(f.Payload, nil)
		for _, v := range vs {
			verdicts <- v
		}
		return err
	}})
	go sess.Run(ctx)
	punt, err := channel.AppendPuntBatch(nil, []channel.PuntRecord{{Guest: 7, Direction: channel.FromGuest, FlowID: 42,
		PacketID: 1, Data: make([]byte, 64)}})
	if err != nil {
		log.Fatal(err)
	}
	if err := sess.Send(channel.TypePuntBatch, punt); err != nil {
		log.Fatal(err)
	}
}
