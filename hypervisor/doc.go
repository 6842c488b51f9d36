// Package hypervisor holds Palisade's host abstraction: vSphere inventory and
// host preparation (vsphere), the Linux view of vNICs (linux), and the
// network-namespace lab that stands in for hosts, appliances and guests (lab).
package hypervisor
