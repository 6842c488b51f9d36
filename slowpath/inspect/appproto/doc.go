// Package appproto recognizes the application protocol of a TCP flow from
// the first bytes its client sends, the way both inspection engines need
// it: HTTP/1.x, TLS, or something else.
package appproto
