package control

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/fastpath/events"
	"github.com/palisade/palisade/fastpath/guests"
	"github.com/palisade/palisade/fastpath/heap"
	"github.com/palisade/palisade/fastpath/policy"
	"github.com/palisade/palisade/fastpath/punt"
	"github.com/palisade/palisade/hypervisor/localapi"
)

// Client calls a fastpathd's control API.
type Client struct{ lc *localapi.Client }

// NewClient talks to the daemon listening on socket.
func NewClient(socket string) *Client { return &Client{lc: localapi.NewClient(socket)} }

func path(format string, args ...any) string {
	esc := make([]any, len(args))
	for i, a := range args {
		esc[i] = url.PathEscape(fmt.Sprint(a))
	}
	return fmt.Sprintf(format, esc...)
}

// Activate protects guest on vnic with p.
func (c *Client) Activate(ctx context.Context, guest, vnic string, p *policy.Policy) (guests.Status, error) {
	raw, err := json.Marshal(p)
	if err != nil {
		return guests.Status{}, err
	}
	var st guests.Status
	err = c.lc.Do(ctx, http.MethodPost, "/v1/guests", ActivateRequest{Guest: guest, VNIC: vnic, Policy: raw}, &st)
	return st, err
}

// UpdatePolicy replaces a guest's policy.
func (c *Client) UpdatePolicy(ctx context.Context, guest string, p *policy.Policy) (guests.Status, error) {
	var st guests.Status
	err := c.lc.Do(ctx, http.MethodPut, path("/v1/guests/%s/policy", guest), p, &st)
	return st, err
}

// Deactivate stops protecting a guest.
func (c *Client) Deactivate(ctx context.Context, guest string) error {
	return c.lc.Do(ctx, http.MethodDelete, path("/v1/guests/%s", guest), nil, nil)
}

// ListGuests lists the protected guests.
func (c *Client) ListGuests(ctx context.Context) ([]guests.Status, error) {
	var out []guests.Status
	err := c.lc.Do(ctx, http.MethodGet, "/v1/guests", nil, &out)
	return out, err
}

// Stats returns a guest's counters.
func (c *Client) Stats(ctx context.Context, guest string) (guests.Stats, error) {
	var st guests.Stats
	err := c.lc.Do(ctx, http.MethodGet, path("/v1/guests/%s/stats", guest), nil, &st)
	return st, err
}

// Policy returns a guest's policy as the daemon normalized it.
func (c *Client) Policy(ctx context.Context, guest string) (*policy.Policy, error) {
	var p policy.Policy
	err := c.lc.Do(ctx, http.MethodGet, path("/v1/guests/%s/policy", guest), nil, &p)
	return &p, err
}

// Connections returns up to limit of a guest's tracked connections.
func (c *Client) Connections(ctx context.Context, guest string, limit int) ([]datapath.Conn, error) {
	var out []datapath.Conn
	err := c.lc.Do(ctx, http.MethodGet, path("/v1/guests/%s/connections", guest)+fmt.Sprintf("?limit=%d", limit), nil, &out)
	return out, err
}

// Events returns recent folded events, for one guest or all ("").
func (c *Client) Events(ctx context.Context, guest string, limit int) ([]events.Record, error) {
	var out []events.Record
	q := url.Values{"limit": {fmt.Sprint(limit)}}
	if guest != "" {
		q.Set("guest", guest)
	}
	err := c.lc.Do(ctx, http.MethodGet, "/v1/events?"+q.Encode(), nil, &out)
	return out, err
}

// Heap returns the memory budget.
func (c *Client) Heap(ctx context.Context) (heap.Report, error) {
	var r heap.Report
	err := c.lc.Do(ctx, http.MethodGet, "/v1/heap", nil, &r)
	return r, err
}

// SetHeap changes the memory budget ("512MiB").
func (c *Client) SetHeap(ctx context.Context, max string) (heap.Report, error) {
	var r heap.Report
	err := c.lc.Do(ctx, http.MethodPut, "/v1/heap", HeapRequest{Max: max}, &r)
	return r, err
}

// Inspection returns the inline inspection path's counters.
func (c *Client) Inspection(ctx context.Context) (punt.Stats, error) {
	var st punt.Stats
	err := c.lc.Do(ctx, http.MethodGet, "/v1/inspection", nil, &st)
	return st, err
}

// Status returns the slow-path binding's status.
func (c *Client) Status(ctx context.Context) (channel.BindingStatus, error) {
	var st channel.BindingStatus
	err := c.lc.Do(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}
