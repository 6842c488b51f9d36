// Package ips is the slow path's intrusion prevention engine: it compiles
// Suricata rules (parsed by package rule) against the variables of a config,
// prefilters them with one Aho-Corasick automaton per buffer, and inspects
// packets, reassembled TCP streams and HTTP requests per flow, turning
// matches into EVE alerts and drop/reject verdicts.
package ips
