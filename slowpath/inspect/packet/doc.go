// Package packet decodes the headers the inspection engines need (Ethernet
// with VLAN tags, IPv4, IPv6, TCP, UDP, ICMP) from a punted frame or a raw IP
// packet without allocating, and verifies checksums on request. It does not
// reassemble IP fragments: a non-first fragment carries no ports.
package packet
