// Package guests owns the protected guests of one host: activation,
// re-policying and deactivation in an order that never drops an allowed
// packet, slot allocation, the state file that lets a restarted fastpathd
// carry on where it stopped (its guests, and a heap size set at runtime), and
// the sweeper that expires idle connections.
package guests
