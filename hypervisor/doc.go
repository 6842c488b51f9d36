// Package hypervisor holds Palisade's host abstraction. For now it has the
// network-namespace lab that stands in for hosts, appliances and guests
// (lab) and the command that runs one (cmd/lab); the vSphere agent's parts,
// inventory and host preparation, come later.
package hypervisor
