package bindserver_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"

	"github.com/sirupsen/logrus"

	"github.com/palisade/palisade/fastpath/bindserver"
	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/slowpath/bindclient"
)

// hostHandler is what fastpathd plugs into the server (its punt engine):
// it learns of the binding and receives the verdicts.
type hostHandler struct {
	bound    chan *channel.Session
	verdicts chan channel.VerdictRecord
}

func (h *hostHandler) Bound(s *channel.Session, r channel.Result) {
	fmt.Printf("fast path: slow path %s bound, negotiated %s\n", r.Peer.ID, r.Negotiated)
	h.bound <- s
}

func (h *hostHandler) HandleFrame(f channel.Frame) error {
	vs, err := channel.DecodeVerdictBatch(f.Payload, nil)
	for _, v := range vs {
		h.verdicts <- v
	}
	return err
}

func (h *hostHandler) Unbound(error) {}

// applianceHandler is what slowpathd plugs into the client (its inspection
// service): it answers every punted packet with a verdict.
type applianceHandler struct{ sess *channel.Session }

func (a *applianceHandler) Bound(s *channel.Session, r channel.Result) { a.sess = s }

func (a *applianceHandler) HandleFrame(f channel.Frame) error {
	return channel.DecodePuntBatch(f.Payload, func(p channel.PuntRecord) error {
		v, err := channel.AppendVerdictBatch(nil, []channel.VerdictRecord{{Guest: p.Guest, FlowID: p.FlowID,
			PacketID: p.PacketID, Action: channel.ActionDrop, Flow: channel.FlowBlock}})
		if err != nil {
			return err
		}
		return a.sess.Send(channel.TypeVerdictBatch, v)
	})
}

func (a *applianceHandler) Unbound(error) {}

// A fast path serves the binding and a slow path keeps itself bound to it;
// each daemon plugs a channel.Handler in. The server refuses a slow path
// with another version, another secret, or while one is bound, and the
// client retries with backoff. fastpathd listens on the link-local
// channel.DefaultBindAddress; loopback keeps the example self-contained.
func ExampleServer_Serve() {
	secret := []byte("0123456789abcdef0123456789abcdef")
	quiet := logrus.New()
	quiet.SetOutput(io.Discard) // the daemons log bindings and refusals here
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())

	host := &hostHandler{bound: make(chan *channel.Session, 1), verdicts: make(chan channel.VerdictRecord, 1)}
	srv, err := bindserver.New(bindserver.Config{Secret: secret, Endpoint: addr, Log: quiet, Handler: host,
		Self: channel.Identity{Version: channel.Current(), Revision: channel.ProtocolRevision,
			Capabilities: channel.CapFirewall | channel.CapIPS | channel.CapWRS | channel.CapEvents, ID: "esx-01"}})
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()

	client, err := bindclient.New(bindclient.Config{Endpoint: addr, Log: quiet, Handler: &applianceHandler{},
		Self: channel.Identity{Version: channel.Current(), Revision: channel.ProtocolRevision,
			Capabilities: channel.CapIPS | channel.CapWRS, ID: "dsva-01"},
		Dial:   func(ctx context.Context) (net.Conn, error) { return (&net.Dialer{}).DialContext(ctx, "tcp", addr) },
		Secret: func() ([]byte, error) { return secret, nil }, // read again before every attempt
	})
	if err != nil {
		log.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- client.Run(ctx) }()

	sess := <-host.bound
	punt, err := channel.AppendPuntBatch(nil, []channel.PuntRecord{{Guest: 7, Direction: channel.FromGuest, FlowID: 42,
		PacketID: 1, Data: make([]byte, 64)}})
	if err != nil {
		log.Fatal(err)
	}
	if err := sess.Send(channel.TypePuntBatch, punt); err != nil {
		log.Fatal(err)
	}
	v := <-host.verdicts
	fmt.Printf("fast path: flow %d of guest %d: %s, %s\n", v.FlowID, v.Guest, v.Action, v.Flow)
	fmt.Println("fast path status:", srv.Status().State)

	cancel() // both say GOODBYE
	fmt.Println(<-served, <-ran)
	// Output:
	// fast path: slow path dsva-01 bound, negotiated ips,wrs
	// fast path: flow 42 of guest 7: drop, block
	// fast path status: bound
	// <nil> <nil>
}
