// Package http1 parses HTTP/1.x messages out of reassembled TCP streams:
// requests (pipelined, with Content-Length or chunked bodies skipped) into
// the buffers the IPS matches on, and responses just far enough to stay in
// step with the requests they answer.
package http1
