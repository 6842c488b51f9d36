// Package tlshello reads what the slow path needs from a TLS connection's
// cleartext start: the ClientHello's server name (SNI), reassembled across
// records and segments, and the record types each side sends, so an engine
// knows when the handshake is over and only encrypted data follows.
package tlshello
