// Package api is the wire contract of fastpathd's control API: the requests,
// the answers and the error codes that the daemon's server and every client
// (the CLI, the host agent, the console) share. It imports only the standard
// library and the policy format, so a client links neither cilium/ebpf nor
// netlink; docs/control-api.md is its reference.
package api
