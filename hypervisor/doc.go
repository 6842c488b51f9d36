// Package hypervisor holds Palisade's host abstraction: what every daemon
// needs from the machine it runs on (process plumbing in daemon, the local
// control socket in localapi) and the network-namespace lab that stands in
// for hosts, appliances and guests (lab, cmd/lab). The vSphere and Linux
// host parts the agent uses arrive with it.
package hypervisor
