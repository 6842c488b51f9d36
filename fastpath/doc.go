// Package fastpath is the host half of Palisade: the eBPF datapath on guest
// vNICs, its loader, and fastpathd, which holds the binding to the appliance's
// slow path. The subpackages each own one part; see docs/architecture.md.
package fastpath
