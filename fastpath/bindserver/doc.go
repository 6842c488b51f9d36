// Package bindserver is the host side of the binding channel: it listens on
// the bind address, authenticates slow paths, holds the one binding a host
// allows, detects a dead slow path, and warns while none is bound.
package bindserver
