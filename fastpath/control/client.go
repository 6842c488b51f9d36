package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/fastpath/control/api"
	"github.com/palisade/palisade/fastpath/policy"
	"github.com/palisade/palisade/hypervisor/localapi"
)

// Client calls a fastpathd's control API. A refused request returns an
// *api.Error, which unwraps to its api.Code: callers branch with
// errors.Is(err, api.ErrGuestNotFound).
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

// do calls the daemon and turns an error answer into an *api.Error.
func (c *Client) do(ctx context.Context, method, urlPath string, in, out any) error {
	err := c.lc.Do(ctx, method, urlPath, in, out)
	var se *localapi.StatusError
	if errors.As(err, &se) {
		return &api.Error{Status: se.Status, Code: api.Code(se.Body.Code), Message: se.Body.Error}
	}
	return err
}

// Activate protects guest on vnic with p.
func (c *Client) Activate(ctx context.Context, guest, vnic string, p *policy.Policy) (api.Guest, error) {
	raw, err := json.Marshal(p)
	if err != nil {
		return api.Guest{}, fmt.Errorf("activate %s: %w", guest, err)
	}
	var st api.Guest
	err = c.do(ctx, http.MethodPost, "/v1/guests", api.ActivateRequest{Guest: guest, VNIC: vnic, Policy: raw}, &st)
	return st, err
}

// UpdatePolicy replaces a guest's policy.
func (c *Client) UpdatePolicy(ctx context.Context, guest string, p *policy.Policy) (api.Guest, error) {
	var st api.Guest
	err := c.do(ctx, http.MethodPut, path("/v1/guests/%s/policy", guest), p, &st)
	return st, err
}

// Deactivate stops protecting a guest.
func (c *Client) Deactivate(ctx context.Context, guest string) error {
	return c.do(ctx, http.MethodDelete, path("/v1/guests/%s", guest), nil, nil)
}

// ListGuests lists the protected guests.
func (c *Client) ListGuests(ctx context.Context) ([]api.Guest, error) {
	var out []api.Guest
	err := c.do(ctx, http.MethodGet, "/v1/guests", nil, &out)
	return out, err
}

// Guest returns one protected guest.
func (c *Client) Guest(ctx context.Context, guest string) (api.Guest, error) {
	var st api.Guest
	err := c.do(ctx, http.MethodGet, path("/v1/guests/%s", guest), nil, &st)
	return st, err
}

// Stats returns a guest's counters.
func (c *Client) Stats(ctx context.Context, guest string) (api.GuestStats, error) {
	var st api.GuestStats
	err := c.do(ctx, http.MethodGet, path("/v1/guests/%s/stats", guest), nil, &st)
	return st, err
}

// Policy returns a guest's policy as the daemon normalized it.
func (c *Client) Policy(ctx context.Context, guest string) (*policy.Policy, error) {
	var p policy.Policy
	if err := c.do(ctx, http.MethodGet, path("/v1/guests/%s/policy", guest), nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Connections returns up to limit of a guest's tracked connections.
func (c *Client) Connections(ctx context.Context, guest string, limit int) ([]api.Conn, error) {
	var out []api.Conn
	err := c.do(ctx, http.MethodGet, path("/v1/guests/%s/connections", guest)+fmt.Sprintf("?limit=%d", limit), nil, &out)
	return out, err
}

// Events returns recent folded events, for one guest or all ("").
func (c *Client) Events(ctx context.Context, guest string, limit int) ([]api.Event, error) {
	var out []api.Event
	q := url.Values{"limit": {fmt.Sprint(limit)}}
	if guest != "" {
		q.Set("guest", guest)
	}
	err := c.do(ctx, http.MethodGet, "/v1/events?"+q.Encode(), nil, &out)
	return out, err
}

// Heap returns the memory budget.
func (c *Client) Heap(ctx context.Context) (api.HeapReport, error) {
	var r api.HeapReport
	err := c.do(ctx, http.MethodGet, "/v1/heap", nil, &r)
	return r, err
}

// SetHeap changes the memory budget ("512MiB"); fastpathd keeps the value
// across restarts (docs/heap.md).
func (c *Client) SetHeap(ctx context.Context, max string) (api.HeapReport, error) {
	var r api.HeapReport
	err := c.do(ctx, http.MethodPut, "/v1/heap", api.HeapRequest{Max: max}, &r)
	return r, err
}

// Inspection returns the inline inspection path's counters.
func (c *Client) Inspection(ctx context.Context) (api.InspectionStats, error) {
	var st api.InspectionStats
	err := c.do(ctx, http.MethodGet, "/v1/inspection", nil, &st)
	return st, err
}

// Status returns the slow-path binding's status.
func (c *Client) Status(ctx context.Context) (channel.BindingStatus, error) {
	var st channel.BindingStatus
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}
