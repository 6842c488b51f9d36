// Package control is fastpathd's guest lifecycle API: Activate, UpdatePolicy,
// Deactivate, Stats and ListGuests (plus connections, events and the binding
// status) as HTTP+JSON on the daemon's local unix socket, and the typed
// client that the CLI and the host agent use. docs/control-api.md lists the
// routes.
package control
