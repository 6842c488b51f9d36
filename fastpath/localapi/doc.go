// Package localapi serves and queries a daemon's local control surface: HTTP
// with JSON bodies over a root-only unix socket. fastpathd's guest lifecycle
// API and both daemons' status endpoints use it; nothing on it is reachable
// from the network.
package localapi
