// Package managerstub will be the management console: REST API, web UI, an
// embedded SQLite store and per-guest activation. It arrives with its issue;
// this file marks its place in the layout.
package managerstub
