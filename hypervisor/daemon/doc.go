// Package daemon is the process plumbing every Palisade daemon shares
// (fastpathd, slowpathd, and the agent and manager to come): logging flags,
// the signal-driven root context, the stamped --version, the binding flags
// and the `status` command, so that each daemon's main is only its own wiring.
package daemon
