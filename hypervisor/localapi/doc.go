// Package localapi serves and queries a daemon's local control surface: HTTP
// with JSON bodies over a root-only unix socket. Every Palisade daemon uses it
// (fastpathd's guest lifecycle API, both daemons' status and inspection
// endpoints); nothing on it is reachable from the network.
package localapi
