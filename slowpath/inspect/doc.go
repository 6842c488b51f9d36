// Package inspect runs the slow path's engines offline: it reads a pcap or
// pcapng capture, feeds every packet through an engine chain as the fast
// path would (blocked and offloaded flows stop being inspected), stamps
// alerts with their packet number, and reports where a damaged capture
// stops. The packages below it hold the protocol layers the engines share.
package inspect
