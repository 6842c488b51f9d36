// Command fastpathd is Palisade's host daemon: it loads the eBPF datapath and
// protects guests' vNICs with it, listens for the appliance's slow path on
// the link-local bind address, and serves the local control API.
package main
