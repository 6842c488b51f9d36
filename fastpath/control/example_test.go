package control_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/palisade/palisade/fastpath/control"
	"github.com/palisade/palisade/fastpath/control/api"
	"github.com/palisade/palisade/fastpath/policy"
)

// This example protects a guest, lists the protected guests and unprotects
// the guest, branching on the API's error codes. It talks to a running
// fastpathd on its default socket, which only root may open, so it is
// compiled but not run; TestClientDrivesTheRealServer
// (fastpath/control/server) runs the same calls against the real server.
func ExampleClient() {
	ctx := context.Background()
	c := control.NewClient("/run/palisade/fastpathd.sock")

	p, err := policy.Parse([]byte(`{"name": "web", "rules": [
		{"id": 1, "action": "allow", "direction": "inbound", "protocol": "tcp", "destination_ports": ["443"]},
		{"id": 2, "action": "allow", "direction": "outbound"}]}`))
	if err != nil {
		log.Fatal(err)
	}
	g, err := c.Activate(ctx, "web-01", "vnic-web01", p)
	switch {
	case errors.Is(err, api.ErrAlreadyProtected):
		// Activation is not an update: replace the policy instead.
		g, err = c.UpdatePolicy(ctx, "web-01", p)
	case errors.Is(err, api.ErrHeapExhausted):
		log.Fatalf("the host's memory budget is full (fastpathd heap set SIZE raises it): %v", err)
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s protected on %s with policy %d\n", g.ID, g.VNIC, g.PolicyID)

	guests, err := c.ListGuests(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, g := range guests {
		fmt.Printf("%s\t%s\t%s mode\t%d rules\n", g.ID, g.VNIC, g.Mode, g.Rules)
	}

	if err := c.Deactivate(ctx, "web-01"); err != nil && !errors.Is(err, api.ErrGuestNotFound) {
		log.Fatal(err)
	}
}
