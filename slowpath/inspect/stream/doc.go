// Package stream reassembles one direction of a TCP connection into the byte
// stream the receiver would see. Overlaps are resolved first-seen-wins: bytes
// already delivered or already buffered are never replaced by a later
// segment, so a retransmission cannot rewrite what was inspected.
package stream
