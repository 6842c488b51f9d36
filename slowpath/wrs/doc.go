// Package wrs is the slow path's web reputation engine: it loads domain and
// URL reputation feeds, looks up the Host and path of each HTTP request and
// the SNI of each TLS ClientHello, and blocks what a guest's policy says is
// too risky, with an HTTP 403 page or a reset and an EVE alert.
package wrs
