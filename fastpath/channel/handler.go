package channel

// Handler is what a daemon plugs into its end of a binding, on either side:
// it learns when a peer binds and unbinds, and receives every frame the
// session does not handle itself (punts and verdicts, events, alerts).
// fastpathd's bind server and slowpathd's bind client both drive one.
type Handler interface {
	// Bound is called once the handshake succeeded, before the session runs.
	Bound(s *Session, r Result)
	// HandleFrame receives a data frame; an error ends the session.
	HandleFrame(f Frame) error
	// Unbound is called once the session has ended, with the reason.
	Unbound(reason error)
}
