// Package craft builds well-formed packets (Ethernet or raw IP, IPv4 or
// IPv6, TCP sessions with correct sequence numbers and checksums, UDP and
// ICMP) for the engines' tests and for the generator of the test captures.
// It is not used on the inspection path.
package craft
