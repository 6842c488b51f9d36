// Package channel owns the wire contract between fastpathd (host) and slowpathd
// (appliance): the product version and protocol revision, the framing and its
// decoder, the handshake that binds one slow path to a host, and the session that
// carries batched punts, verdicts, events and keepalives over TCP or AF_VSOCK.
// The specification is docs/protocol.md; this package is its only implementation.
package channel
