package channel

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/jonboulle/clockwork"
)

// Binding states as status reports them.
const (
	StateBound      = "bound"
	StateListening  = "listening (no slow path bound)"
	StateConnecting = "connecting"
	StateBackoff    = "waiting to reconnect"
	StateStopped    = "stopped"
)

// BindingStatus is what `fastpathd status` and `slowpathd status` print: the
// answer to "netstat | grep 2222" in seed 000, and more.
type BindingStatus struct {
	Role          string            `json:"role"`
	State         string            `json:"state"`
	Endpoint      string            `json:"endpoint"`
	LocalAddr     string            `json:"local_addr,omitempty"`
	PeerAddr      string            `json:"peer_addr,omitempty"`
	PeerID        string            `json:"peer_id,omitempty"`
	LocalVersion  string            `json:"local_version"`
	PeerVersion   string            `json:"peer_version,omitempty"`
	Revision      uint32            `json:"revision"`
	PeerRevision  uint32            `json:"peer_revision,omitempty"`
	LocalCaps     []string          `json:"local_capabilities"`
	PeerCaps      []string          `json:"peer_capabilities,omitempty"`
	Negotiated    []string          `json:"negotiated_capabilities,omitempty"`
	EnginesOff    []string          `json:"engines_offline,omitempty"`
	SessionID     uint64            `json:"session_id,omitempty"`
	StartedAt     time.Time         `json:"started_at"`
	BoundSince    *time.Time        `json:"bound_since,omitempty"`
	Bindings      uint64            `json:"bindings"`
	Reconnects    uint64            `json:"reconnects"`
	Refused       map[string]uint64 `json:"refused,omitempty"`
	LastError     string            `json:"last_error,omitempty"`
	LastErrorAt   *time.Time        `json:"last_error_at,omitempty"`
	RTT           time.Duration     `json:"rtt_ns,omitempty"`
	FramesIn      uint64            `json:"frames_in,omitempty"`
	FramesOut     uint64            `json:"frames_out,omitempty"`
	WriteSyscalls uint64            `json:"write_calls,omitempty"`
}

// Print writes the status for an operator.
func (s BindingStatus) Print(w io.Writer, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("role", s.Role)
	row("state", s.State)
	row("endpoint", s.Endpoint)
	if s.LocalAddr != "" || s.PeerAddr != "" {
		row("connection", fmt.Sprintf("%s <-> %s ESTABLISHED", s.LocalAddr, s.PeerAddr))
	}
	if s.PeerID != "" {
		row("peer", s.PeerID)
	}
	row("version", fmt.Sprintf("%s (rev %d)", s.LocalVersion, s.Revision))
	if s.PeerVersion != "" {
		row("peer version", fmt.Sprintf("%s (rev %d)", s.PeerVersion, s.PeerRevision))
	}
	row("capabilities", list(s.LocalCaps))
	if s.PeerCaps != nil {
		row("peer capabilities", list(s.PeerCaps))
		row("negotiated", list(s.Negotiated))
	}
	if len(s.EnginesOff) > 0 {
		row("engines offline", strings.Join(s.EnginesOff, ", "))
	}
	row("daemon uptime", now.Sub(s.StartedAt).Round(time.Second).String())
	if s.BoundSince != nil {
		row("bound for", now.Sub(*s.BoundSince).Round(time.Millisecond).String())
	}
	row("bindings", fmt.Sprintf("%d (reconnects %d)", s.Bindings, s.Reconnects))
	if s.RTT > 0 {
		row("keepalive rtt", s.RTT.String())
	}
	if s.FramesIn+s.FramesOut > 0 {
		row("frames", fmt.Sprintf("in %d, out %d in %d writes", s.FramesIn, s.FramesOut, s.WriteSyscalls))
	}
	if len(s.Refused) > 0 {
		keys := make([]string, 0, len(s.Refused))
		for k := range s.Refused {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s=%d", k, s.Refused[k]))
		}
		row("refused", strings.Join(parts, " "))
	}
	if s.LastError != "" {
		at := ""
		if s.LastErrorAt != nil {
			at = fmt.Sprintf(" (%s ago)", now.Sub(*s.LastErrorAt).Round(time.Second))
		}
		row("last error", s.LastError+at)
	}
	return tw.Flush()
}

func list(v []string) string {
	if len(v) == 0 {
		return "none"
	}
	return strings.Join(v, ", ")
}

// Tracker keeps the binding's bookkeeping for either side and renders it as a
// BindingStatus. It is safe for concurrent use.
type Tracker struct {
	mu         sync.Mutex
	clock      clockwork.Clock
	role       string
	endpoint   string
	self       Identity
	started    time.Time
	state      string
	session    *Session
	result     Result
	boundSince time.Time
	unbound    time.Time
	bindings   uint64
	refused    map[string]uint64
	lastErr    string
	lastErrAt  time.Time
}

// NewTracker starts tracking in the given state; every time it records is
// read from clock.
func NewTracker(role, endpoint string, self Identity, state string, clock clockwork.Clock) *Tracker {
	now := clock.Now()
	return &Tracker{clock: clock, role: role, endpoint: endpoint, self: self, started: now, unbound: now, state: state,
		refused: map[string]uint64{}}
}

// SetState records a state other than bound.
func (t *Tracker) SetState(s string) {
	t.mu.Lock()
	t.state = s
	t.mu.Unlock()
}

// Bound records a new binding and returns how many bindings there have been.
func (t *Tracker) Bound(s *Session, r Result) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.session, t.result, t.boundSince, t.state = s, r, t.clock.Now(), StateBound
	t.bindings++
	return t.bindings
}

// Unbound records the end of binding s (a stale s is ignored) and why.
func (t *Tracker) Unbound(s *Session, reason error, next string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.session != s {
		return
	}
	t.session, t.unbound, t.state = nil, t.clock.Now(), next
	if reason != nil {
		t.lastErr, t.lastErrAt = reason.Error(), t.unbound
	}
}

// Refused counts a refused or failed attempt under key.
func (t *Tracker) Refused(key string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.refused[key]++
	t.lastErr, t.lastErrAt = err.Error(), t.clock.Now()
}

// Failed records an error that is not a refusal (a failed dial, say).
func (t *Tracker) Failed(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lastErr, t.lastErrAt = err.Error(), t.clock.Now()
}

// Session is the bound session, or nil.
func (t *Tracker) Session() *Session {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.session
}

// Binding is the bound session with its handshake result and since when.
func (t *Tracker) Binding() (*Session, Result, time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.session, t.result, t.boundSince
}

// UnboundSince is when the last binding ended (or tracking started); zero
// while bound.
func (t *Tracker) UnboundSince() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.session != nil {
		return time.Time{}
	}
	return t.unbound
}

// Status renders the bookkeeping.
func (t *Tracker) Status() BindingStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := BindingStatus{
		Role: t.role, State: t.state, Endpoint: t.endpoint,
		LocalVersion: t.self.Version.String(), Revision: t.self.Revision,
		LocalCaps: t.self.Capabilities.Names(), StartedAt: t.started,
		Bindings: t.bindings, LastError: t.lastErr,
	}
	if st.Bindings > 1 {
		st.Reconnects = st.Bindings - 1
	}
	if !t.lastErrAt.IsZero() {
		at := t.lastErrAt
		st.LastErrorAt = &at
	}
	if len(t.refused) > 0 {
		st.Refused = make(map[string]uint64, len(t.refused))
		for k, v := range t.refused {
			st.Refused[k] = v
		}
	}
	if s := t.session; s != nil {
		st.LocalAddr = s.Conn().LocalAddr().String()
		st.PeerAddr = s.Conn().RemoteAddr().String()
		st.PeerID = t.result.Peer.ID
		st.PeerVersion = t.result.Peer.Version.String()
		st.PeerRevision = t.result.Peer.Revision
		st.PeerCaps = t.result.Peer.Capabilities.Names()
		st.Negotiated = t.result.Negotiated.Names()
		st.SessionID = t.result.SessionID
		since := t.boundSince
		st.BoundSince = &since
		st.RTT = s.RTT()
		st.FramesIn, st.FramesOut, st.WriteSyscalls = s.Counters()
	}
	return st
}
