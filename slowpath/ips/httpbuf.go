package ips

import (
	"bytes"

	"github.com/palisade/palisade/slowpath/inspect/http1"
	"github.com/palisade/palisade/slowpath/ips/rule"
)

// httpBuffers fills the HTTP buffers of one request. In an http rule, a
// content without a sticky buffer inspects the raw request head (request
// line and headers).
func httpBuffers(stream []byte, req *http1.Request) [rule.NumBuffers][]byte {
	var b [rule.NumBuffers][]byte
	b[rule.BufPayload] = stream[req.Start:req.End]
	b[rule.BufMethod] = req.Method
	b[rule.BufURI] = NormalizeURI(req.URI)
	var h []byte
	for _, hd := range req.Headers {
		if bytes.EqualFold(hd.Name, []byte("Cookie")) {
			continue // Suricata keeps cookies in http.cookie
		}
		h = append(h, hd.Name...)
		h = append(h, ": "...)
		h = append(h, hd.Value...)
		h = append(h, "\r\n"...)
	}
	b[rule.BufHeader] = h
	b[rule.BufHost] = NormalizeHost(req.Header("Host"))
	b[rule.BufUserAgent] = req.Header("User-Agent")
	return b
}

// NormalizeURI percent-decodes a request URI (invalid escapes stay as they
// are), as Suricata's http.uri does.
func NormalizeURI(u []byte) []byte {
	if bytes.IndexByte(u, '%') < 0 {
		return u
	}
	out := make([]byte, 0, len(u))
	for i := 0; i < len(u); i++ {
		if u[i] == '%' && i+2 < len(u) && isHexDigit(u[i+1]) && isHexDigit(u[i+2]) {
			out = append(out, unhex(u[i+1])<<4|unhex(u[i+2]))
			i += 2
			continue
		}
		out = append(out, u[i])
	}
	return out
}

// NormalizeHost lower-cases a Host header and drops its port.
func NormalizeHost(h []byte) []byte {
	if len(h) == 0 {
		return nil
	}
	if h[0] == '[' { // [v6]:port
		if i := bytes.IndexByte(h, ']'); i > 0 {
			h = h[:i+1]
		}
	} else if i := bytes.LastIndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	return []byte(asciiLower(h))
}

func isHexDigit(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
