package http1

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/palisade/palisade/slowpath/internal/ascii"
)

// MaxHeaderBytes bounds a message's start line and headers; a stream that
// has not finished its headers by then is not parsed further.
const MaxHeaderBytes = 64 << 10

// ErrNotHTTP means the stream does not look like HTTP/1.x.
var ErrNotHTTP = errors.New("not HTTP/1.x")

// Header is one header line; the slices alias the stream.
type Header struct {
	Name  []byte
	Value []byte
	// Invalid: the line had no colon, or nothing before it. As libhtp, it
	// is kept as a header with an empty name and the line (or what follows
	// the colon) as its value, so its content is still inspected.
	Invalid bool
}

// Request is one parsed request. Its slices alias the stream they came
// from and stay valid as long as that data does.
type Request struct {
	Method   []byte
	URI      []byte // as sent
	Protocol []byte // "HTTP/1.1"; empty for HTTP/0.9-style request lines
	Headers  []Header
	Start    int // stream offset of the request line
	End      int // stream offset just past the headers
}

// Header returns the value of the first header called name (ASCII
// case-insensitive), or nil.
func (r *Request) Header(name string) []byte {
	for _, h := range r.Headers {
		if len(h.Name) == len(name) && bytes.EqualFold(h.Name, []byte(name)) {
			return h.Value
		}
	}
	return nil
}

// LooksLikeRequest says whether the start of a client stream is an HTTP
// request line (an upper-case token and a space), so that a parser is worth
// starting. It needs at most 17 bytes and says false until it has one.
func LooksLikeRequest(b []byte) bool {
	for i, c := range b {
		switch {
		case c == ' ':
			return i > 0
		case !(c >= 'A' && c <= 'Z' || c == '_' || c == '-'):
			return false
		case i >= 16:
			return false
		}
	}
	return false
}

// body tracks the bytes of a message body still to skip.
type body struct {
	length    int64 // bytes left of a Content-Length body or of the current chunk
	chunked   bool
	chunkData bool // inside a chunk's data (then its CRLF)
	trailers  bool // after the last chunk, until the empty line
	untilEOF  bool
}

// skip consumes body bytes from data[off:], returning the new offset and
// whether the body is complete.
func (b *body) skip(data []byte, off int) (int, bool, error) {
	for {
		switch {
		case b.untilEOF:
			return len(data), false, nil
		case b.length > 0:
			n := min(int64(len(data)-off), b.length)
			off += int(n)
			b.length -= n
			if b.length > 0 {
				return off, false, nil
			}
			if !b.chunked {
				return off, true, nil
			}
		case !b.chunked:
			return off, true, nil
		case b.trailers:
			line, next, ok := nextLine(data, off)
			if !ok {
				return off, false, nil
			}
			off = next
			if len(line) == 0 {
				*b = body{}
				return off, true, nil
			}
		case b.chunkData:
			// The CRLF after a chunk's data.
			_, next, ok := nextLine(data, off)
			if !ok {
				return off, false, nil
			}
			off, b.chunkData = next, false
		default:
			line, next, ok := nextLine(data, off)
			if !ok {
				if len(data)-off > 1024 {
					return off, false, errors.New("chunk size line too long")
				}
				return off, false, nil
			}
			if i := bytes.IndexByte(line, ';'); i >= 0 {
				line = line[:i]
			}
			n, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
			if err != nil || n < 0 {
				return off, false, fmt.Errorf("bad chunk size %q", line)
			}
			off = next
			if n == 0 {
				b.trailers = true
				continue
			}
			b.length, b.chunkData = n, true
			// Consume the data, then come back for its CRLF.
			m := min(int64(len(data)-off), b.length)
			off += int(m)
			b.length -= m
			if b.length > 0 {
				return off, false, nil
			}
		}
	}
}

// nextLine returns the line at data[off:] without its CRLF (or bare LF, as
// servers accept) and the offset after it.
func nextLine(data []byte, off int) ([]byte, int, bool) {
	i := bytes.IndexByte(data[off:], '\n')
	if i < 0 {
		return nil, off, false
	}
	line := data[off : off+i]
	return bytes.TrimSuffix(line, []byte("\r")), off + i + 1, true
}

// parseHead parses a start line and headers at data[off:]. It returns ok
// false when more data is needed.
func parseHead(data []byte, off int) (h head, ok bool, err error) {
	line, next, found := nextLine(data, off)
	// Tolerate empty lines between messages, as servers do.
	for found && len(line) == 0 {
		off = next
		line, next, found = nextLine(data, off)
	}
	if !found {
		if len(data)-off > MaxHeaderBytes {
			return h, false, errors.New("start line too long")
		}
		return h, false, nil
	}
	h.start, h.startOff = line, off
	for {
		line, next, found = nextLine(data, next)
		if !found {
			if len(data)-off > MaxHeaderBytes {
				return h, false, errors.New("headers too long")
			}
			return h, false, nil
		}
		if len(line) == 0 {
			h.end = next
			return h, true, nil
		}
		if (line[0] == ' ' || line[0] == '\t') && len(h.headers) > 0 {
			// Obsolete line folding: part of the previous value. The
			// value then no longer aliases one contiguous span, so copy.
			last := &h.headers[len(h.headers)-1]
			last.Value = append(append(append([]byte(nil), last.Value...), ' '), bytes.TrimSpace(line)...)
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			h.headers = append(h.headers, Header{Value: bytes.TrimSpace(line), Invalid: true})
			continue
		}
		name := bytes.TrimSpace(line[:colon])
		h.headers = append(h.headers, Header{Name: name, Value: bytes.TrimSpace(line[colon+1:]), Invalid: len(name) == 0})
	}
}

// head is a message's start line and headers.
type head struct {
	start    []byte
	startOff int
	headers  []Header
	end      int // offset just past the empty line
}

func truncate(b []byte) []byte {
	if len(b) > 40 {
		return b[:40]
	}
	return b
}

// bodyOf decides how a message's body is delimited from its headers.
func bodyOf(headers []Header) (body, error) {
	for _, h := range headers {
		if bytes.EqualFold(h.Name, []byte("Transfer-Encoding")) && bytes.Contains(bytes.ToLower(h.Value), []byte("chunked")) {
			return body{chunked: true}, nil
		}
	}
	for _, h := range headers {
		if bytes.EqualFold(h.Name, []byte("Content-Length")) {
			n, err := strconv.ParseInt(string(h.Value), 10, 64)
			if err != nil || n < 0 {
				return body{}, fmt.Errorf("bad Content-Length %q", truncate(h.Value))
			}
			return body{length: n}, nil
		}
	}
	return body{}, nil
}

// RequestParser walks a client stream request by request. The zero value is
// ready; feed it the whole stream so far each time it grows.
type RequestParser struct {
	off    int
	inBody bool
	body   body
	err    error
}

// Err is the error that stopped the parser, if any.
func (p *RequestParser) Err() error { return p.err }

// Parse reports every request whose headers are complete in data and were
// not reported before. data must be the stream from its first byte; it may
// only grow between calls.
func (p *RequestParser) Parse(data []byte, fn func(*Request)) error {
	for p.err == nil {
		if p.inBody {
			off, done, err := p.body.skip(data, p.off)
			p.off = off
			if err != nil {
				p.err = fmt.Errorf("request body at stream offset %d: %w", off, err)
				break
			}
			if !done {
				break
			}
			p.inBody = false
		}
		if p.off >= len(data) {
			break
		}
		h, ok, err := parseHead(data, p.off)
		if err != nil {
			p.err = fmt.Errorf("request at stream offset %d: %w", p.off, err)
			break
		}
		if !ok {
			break
		}
		req, err := parseRequestLine(h.start)
		if err != nil {
			p.err = fmt.Errorf("request at stream offset %d: %w", h.startOff, err)
			break
		}
		req.Headers, req.Start, req.End = h.headers, h.startOff, h.end
		b, err := bodyOf(h.headers)
		// The request is complete whatever its body: it is reported even
		// when the body cannot be delimited (and parsing stops there).
		p.off, p.body, p.inBody = h.end, b, true
		fn(&req)
		if err != nil {
			p.err = fmt.Errorf("request at stream offset %d: %w", h.startOff, err)
			break
		}
	}
	return p.err
}

func parseRequestLine(line []byte) (Request, error) {
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 || !LooksLikeRequest(line[:sp+1]) {
		return Request{}, fmt.Errorf("%w: request line %q", ErrNotHTTP, truncate(line))
	}
	r := Request{Method: line[:sp]}
	rest := bytes.TrimLeft(line[sp+1:], " ")
	if i := bytes.LastIndexByte(rest, ' '); i >= 0 && bytes.HasPrefix(rest[i+1:], []byte("HTTP/")) {
		r.URI, r.Protocol = bytes.TrimRight(rest[:i], " "), rest[i+1:]
	} else {
		r.URI = rest
	}
	if len(r.URI) == 0 {
		return Request{}, fmt.Errorf("%w: request line %q without a URI", ErrNotHTTP, truncate(line))
	}
	return r, nil
}

// ResponseParser walks a server stream in step with the requests it
// answers, so that a HEAD's body-less response or a close-delimited body
// does not throw it off.
type ResponseParser struct {
	off       int
	inBody    bool
	body      body
	methods   [][]byte // methods of the requests not yet answered
	Responses int      // complete responses seen
	err       error
}

// Expect queues the method of a request the server will answer.
func (p *ResponseParser) Expect(method []byte) {
	p.methods = append(p.methods, append([]byte(nil), method...))
}

// Err is the error that stopped the parser, if any.
func (p *ResponseParser) Err() error { return p.err }

// Parse consumes the responses complete in data (the whole server stream so
// far); fn, if not nil, gets each status code as its headers complete.
func (p *ResponseParser) Parse(data []byte, fn func(status int)) error {
	for p.err == nil {
		if p.inBody {
			off, done, err := p.body.skip(data, p.off)
			p.off = off
			if err != nil {
				p.err = fmt.Errorf("response body at stream offset %d: %w", off, err)
				break
			}
			if !done {
				break
			}
			p.inBody = false
			p.Responses++
		}
		if p.off >= len(data) {
			break
		}
		h, ok, err := parseHead(data, p.off)
		if err != nil {
			p.err = fmt.Errorf("response at stream offset %d: %w", p.off, err)
			break
		}
		if !ok {
			break
		}
		headers := h.headers
		status, err := parseStatusLine(h.start)
		if err != nil {
			p.err = fmt.Errorf("response at stream offset %d: %w", h.startOff, err)
			break
		}
		var method []byte
		if status >= 200 && len(p.methods) > 0 { // 1xx answers no request on its own
			method, p.methods = p.methods[0], p.methods[1:]
		}
		b := body{}
		switch {
		case status < 200, status == 204, status == 304, bytes.Equal(method, []byte("HEAD")):
		default:
			if b, err = bodyOf(headers); err != nil {
				p.err = fmt.Errorf("response at stream offset %d: %w", h.startOff, err)
				break
			}
			if !b.chunked && b.length == 0 && !hasHeader(headers, "Content-Length") {
				b.untilEOF = true
			}
		}
		if p.err != nil {
			break
		}
		p.off, p.body, p.inBody = h.end, b, true
		if fn != nil {
			fn(status)
		}
	}
	return p.err
}

func hasHeader(headers []Header, name string) bool {
	for _, h := range headers {
		if bytes.EqualFold(h.Name, []byte(name)) {
			return true
		}
	}
	return false
}

func parseStatusLine(line []byte) (int, error) {
	if !bytes.HasPrefix(line, []byte("HTTP/")) || len(line) < 12 || line[8] != ' ' {
		return 0, fmt.Errorf("%w: status line %q", ErrNotHTTP, truncate(line))
	}
	code, err := strconv.Atoi(string(line[9:12]))
	if err != nil || code < 100 || code > 999 {
		return 0, fmt.Errorf("%w: status line %q", ErrNotHTTP, truncate(line))
	}
	return code, nil
}

// NormalizeHost is a host as Suricata's http.host and the reputation
// lookups compare it: white space trimmed, lower-cased (ASCII), the port
// dropped (an IPv6 literal keeps its brackets) and trailing dots removed.
func NormalizeHost(h string) string {
	h = strings.TrimSpace(h)
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			h = h[:i+1]
		}
	} else if i := strings.LastIndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	return strings.TrimRight(string(ascii.AppendLower(nil, []byte(h))), ".")
}
