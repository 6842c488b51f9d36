// Package control is the typed client of fastpathd's control API (guest
// activation, re-policying, deactivation, stats, connections, events, the
// heap budget and the binding status), which the CLI, the host agent and
// the console use. It speaks the contract in control/api over the daemon's
// unix socket and links neither the datapath nor netlink; the daemon's side
// is control/server. docs/control-api.md lists the routes.
package control
