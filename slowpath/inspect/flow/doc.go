// Package flow tracks connections by guest and 5-tuple for an inspection
// engine: which end is the client, whether the connection is established in
// Suricata's sense, each direction's reassembled TCP stream, and the
// engine's own per-flow state. The fast path's flow id is only an alias:
// offline it is zero, so the 5-tuple is the key.
package flow
