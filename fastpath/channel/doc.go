// Package channel owns the wire contract between fastpathd (host) and slowpathd
// (appliance): the product version and protocol revision, the framing and its
// decoder, the handshake that binds one slow path to a host, and the session that
// carries batched punts, verdicts, events and keepalives over TCP or AF_VSOCK.
// It also holds what both ends keep about a binding (status, the rate-limited
// refusal log), with every time bound measured on an injectable clock.
// The specification is docs/protocol.md; this package is its only implementation.
package channel
