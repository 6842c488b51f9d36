// Package agent will be the host agent: host preparation, one appliance per
// host, the guest protection state machine, reconciliation with the manager,
// and migration hand-off. It arrives with its issue; this file marks its place
// in the layout.
package agent
