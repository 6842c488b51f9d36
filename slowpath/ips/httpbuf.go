package ips

import (
	"bytes"

	"github.com/palisade/palisade/slowpath/inspect/http1"
	"github.com/palisade/palisade/slowpath/internal/ascii"
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
	if host := http1.NormalizeHost(string(req.Header("Host"))); host != "" {
		b[rule.BufHost] = []byte(host)
	}
	b[rule.BufUserAgent] = req.Header("User-Agent")
	return b
}

// NormalizeURI is Suricata's normalized http.uri (libhtp with the IDS
// personality, case kept): the path, up to the first '?', is
// percent-decoded (invalid escapes stay as they are), backslashes become
// '/', runs of '/' are compressed, and dot segments are removed (RFC 3986
// remove_dot_segments); the query is percent-decoded. A request target
// that is not a path (absolute or authority form, '*') is only decoded.
func NormalizeURI(u []byte) []byte {
	if bytes.IndexByte(u, '%') < 0 && bytes.IndexByte(u, '\\') < 0 && !bytes.Contains(u, []byte("//")) && !bytes.Contains(u, []byte("/.")) {
		return u // nothing to decode or normalize
	}
	path, query, hasQuery := bytes.Cut(u, []byte("?"))
	if len(path) == 0 || path[0] != '/' {
		return percentDecode(nil, u)
	}
	p := percentDecode(nil, path)
	for i, c := range p {
		if c == '\\' {
			p[i] = '/'
		}
	}
	out := removeDotSegments(compressSlashes(p))
	if hasQuery {
		out = append(out, '?')
		out = percentDecode(out, query)
	}
	return out
}

// percentDecode appends s to dst with valid %xx escapes decoded.
func percentDecode(dst, s []byte) []byte {
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && ascii.IsHex(s[i+1]) && ascii.IsHex(s[i+2]) {
			dst = append(dst, ascii.Unhex(s[i+1])<<4|ascii.Unhex(s[i+2]))
			i += 2
			continue
		}
		dst = append(dst, s[i])
	}
	return dst
}

// compressSlashes turns every run of '/' into one, in place.
func compressSlashes(p []byte) []byte {
	out := p[:0]
	for i, c := range p {
		if c == '/' && i > 0 && p[i-1] == '/' {
			continue
		}
		out = append(out, c)
	}
	return out
}

// removeDotSegments is RFC 3986 section 5.2.4 on an absolute path.
func removeDotSegments(in []byte) []byte {
	out := make([]byte, 0, len(in))
	for len(in) > 0 {
		switch {
		case bytes.HasPrefix(in, []byte("../")):
			in = in[3:]
		case bytes.HasPrefix(in, []byte("./")):
			in = in[2:]
		case bytes.HasPrefix(in, []byte("/./")):
			in = in[2:]
		case bytes.Equal(in, []byte("/.")):
			in = []byte("/")
		case bytes.HasPrefix(in, []byte("/../")), bytes.Equal(in, []byte("/..")):
			if len(in) == 3 {
				in = []byte("/")
			} else {
				in = in[3:]
			}
			if i := bytes.LastIndexByte(out, '/'); i >= 0 {
				out = out[:i]
			} else {
				out = out[:0]
			}
		case bytes.Equal(in, []byte(".")), bytes.Equal(in, []byte("..")):
			in = nil
		default:
			// Move the first segment, with its leading '/', to the output.
			j := 0
			if in[0] == '/' {
				j = 1
			}
			if k := bytes.IndexByte(in[j:], '/'); k >= 0 {
				j += k
			} else {
				j = len(in)
			}
			out = append(out, in[:j]...)
			in = in[j:]
		}
	}
	return out
}
