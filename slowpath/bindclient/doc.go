// Package bindclient is the appliance side of the binding channel: it dials
// the host's fast path, authenticates, keeps the binding alive, and reconnects
// with capped exponential backoff whenever it is lost.
package bindclient
