package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/fastpath/control"
	"github.com/palisade/palisade/fastpath/control/api"
	"github.com/palisade/palisade/fastpath/control/server"
	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/fastpath/events"
	"github.com/palisade/palisade/fastpath/guests"
	"github.com/palisade/palisade/fastpath/heap"
	"github.com/palisade/palisade/fastpath/policy"
	"github.com/palisade/palisade/hypervisor/lab"
	"github.com/palisade/palisade/hypervisor/lab/wait"
	"github.com/palisade/palisade/hypervisor/localapi"
)

// serve runs the real server, over a real guest manager and datapath, on a
// unix socket, for a host namespace with vNICs vnic1 and vnic2; requests
// are handled inside the namespace, where the vNICs are.
func serve(t *testing.T) *control.Client {
	t.Helper()
	l := lab.ForTest(t)
	ns, err := l.Namespace("host")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"1", "2"} {
		if _, _, err := l.Link(lab.End{NS: ns, Name: "vnic" + n}, lab.End{NS: ns, Name: "peer" + n}); err != nil {
			t.Fatal(err)
		}
	}
	dp, err := datapath.Open(datapath.Config{PinDir: filepath.Join(lab.BPFFSForTest(t), "palisade")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	budget, costs, err := heap.ForDatapath(dp, heap.DefaultMax, heap.DefaultReserve)
	if err != nil {
		t.Fatal(err)
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	dir := lab.TempDirForTest(t)
	mgr, err := guests.New(guests.Config{Datapath: dp, StateFile: filepath.Join(dir, "guests.json"), Links: ns.Netlink(), Log: log, Budget: budget, Costs: costs})
	if err != nil {
		t.Fatal(err)
	}
	srv := &server.Server{Guests: mgr, Events: events.New(events.Config{Name: mgr.SlotName, Log: log}),
		Binding:    func() channel.BindingStatus { return channel.BindingStatus{} },
		Inspection: func() api.InspectionStats { return api.InspectionStats{} },
		Heap: func() (api.HeapReport, error) {
			r := budget.Snapshot()
			r.Costs = api.HeapCosts(costs)
			return r, nil
		}}
	h := srv.Handler()
	inNS := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := ns.Do(func() error { h.ServeHTTP(w, r); return nil }); err != nil {
			t.Error(err)
		}
	})
	sock := filepath.Join(dir, "fastpathd.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- localapi.Serve(ctx, sock, inNS) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	c := control.NewClient(sock)
	wait.ForErr(t, "the control socket answers", func() error { _, err := c.ListGuests(ctx); return err })
	return c
}

func parse(t *testing.T, js string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

const webJSON = `{"name":"web","max_tcp_connections":1000,"max_udp_connections":1000,"rules":[
	{"id":1,"action":"allow","direction":"inbound","protocol":"tcp","destination_ports":["80"]}]}`

// TestClientDrivesTheRealServer runs a guest's lifecycle through the client
// and the real server: what the client returns is what the manager did.
func TestClientDrivesTheRealServer(t *testing.T) {
	c := serve(t)
	ctx := context.Background()
	g, err := c.Activate(ctx, "web", "vnic1", parse(t, webJSON))
	if err != nil {
		t.Fatal(err)
	}
	if g.ID != "web" || g.VNIC != "vnic1" || g.Rules != 1 || g.PolicyName != "web" || g.MaxTCP != 1000 {
		t.Fatalf("activated: %+v", g)
	}
	if gs, err := c.ListGuests(ctx); err != nil || len(gs) != 1 || gs[0].ID != "web" {
		t.Fatalf("list: %+v %v", gs, err)
	}
	st, err := c.Stats(ctx, "web")
	if err != nil || st.ID != "web" || len(st.RuleHits) != 1 || st.RuleHits[0].ID != 1 || st.RuleHits[0].Action != policy.Allow {
		t.Fatalf("stats: %+v %v", st, err)
	}
	if conns, err := c.Connections(ctx, "web", 10); err != nil || len(conns) != 0 {
		t.Fatalf("connections of an idle guest: %+v %v", conns, err)
	}
	p := parse(t, webJSON)
	p.Rules = append(p.Rules, policy.Rule{ID: 2, Action: policy.Deny, Protocol: "udp"})
	up, err := c.UpdatePolicy(ctx, "web", p)
	if err != nil || up.Rules != 2 || up.PolicyID <= g.PolicyID {
		t.Fatalf("update: %+v %v", up, err)
	}
	if got, err := c.Policy(ctx, "web"); err != nil || len(got.Rules) != 2 || got.Rules[1].Direction != policy.AnyDir {
		t.Fatalf("policy as normalized: %+v %v", got, err)
	}
	r, err := c.SetHeap(ctx, "300MiB")
	if err != nil || r.Max != 300<<20 || len(r.Guests) != 1 || r.Guests[0].Guest != "web" || r.Costs.EntryBytes == 0 {
		t.Fatalf("heap set: %+v %v", r, err)
	}
	if err := c.Deactivate(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if gs, err := c.ListGuests(ctx); err != nil || len(gs) != 0 {
		t.Fatalf("after deactivation: %+v %v", gs, err)
	}
}

// TestRefusalsCarryTheirCodes makes the real server refuse each way a
// client can provoke, and checks that the client's error is an *api.Error
// with the code and HTTP status docs/control-api.md gives.
func TestRefusalsCarryTheirCodes(t *testing.T) {
	c := serve(t)
	ctx := context.Background()
	if _, err := c.Activate(ctx, "web", "vnic1", parse(t, webJSON)); err != nil {
		t.Fatal(err)
	}
	huge := parse(t, webJSON)
	huge.MaxTCP = 1 << 30
	for _, tc := range []struct {
		what string
		call func() error
		want api.Code
	}{
		{"deactivate an unknown guest", func() error { return c.Deactivate(ctx, "nobody") }, api.ErrGuestNotFound},
		{"stats of an unknown guest", func() error { _, err := c.Stats(ctx, "nobody"); return err }, api.ErrGuestNotFound},
		{"activate on a missing vNIC", func() error { _, err := c.Activate(ctx, "db", "vnic9", parse(t, webJSON)); return err }, api.ErrVNICNotFound},
		{"activate twice", func() error { _, err := c.Activate(ctx, "web", "vnic2", parse(t, webJSON)); return err }, api.ErrAlreadyProtected},
		{"activate on a vNIC in use", func() error { _, err := c.Activate(ctx, "db", "vnic1", parse(t, webJSON)); return err }, api.ErrVNICInUse},
		{"an invalid policy", func() error { _, err := c.UpdatePolicy(ctx, "web", &policy.Policy{Mode: "loud"}); return err }, api.ErrInvalidPolicy},
		{"a guest over the budget", func() error { _, err := c.Activate(ctx, "db", "vnic2", huge); return err }, api.ErrHeapExhausted},
		{"a heap below what is reserved", func() error { _, err := c.SetHeap(ctx, "1MiB"); return err }, api.ErrHeapBelowReserved},
		{"a heap size that is no size", func() error { _, err := c.SetHeap(ctx, "lots"); return err }, api.ErrBadRequest},
		{"a negative limit", func() error { _, err := c.Connections(ctx, "web", -1); return err }, api.ErrBadRequest},
	} {
		err := tc.call()
		var ae *api.Error
		if !errors.Is(err, tc.want) || !errors.As(err, &ae) || ae.Code != tc.want || ae.Status != tc.want.Status() || ae.Message == "" {
			t.Errorf("%s: %#v, want code %s (HTTP %d)", tc.what, err, tc.want, tc.want.Status())
			continue
		}
		if want := fmt.Sprintf("%s (%s, HTTP %d)", ae.Message, tc.want, tc.want.Status()); err.Error() != want {
			t.Errorf("%s: message %q, want %q", tc.what, err.Error(), want)
		}
	}
}
