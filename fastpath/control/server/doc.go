// Package server is fastpathd's side of the control API: it serves the
// contract in control/api over HTTP on the daemon's unix socket, calling the
// guest manager, the event aggregator and the heap budget, and maps their
// errors to the API's codes in one place.
package server
