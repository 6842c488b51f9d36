// Package daemon is the process plumbing every Palisade binary shares:
// logging flags, the signal-driven root context, and the --version line, so
// each daemon's main is only its own wiring.
package daemon
