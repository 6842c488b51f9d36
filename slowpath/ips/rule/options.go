package rule

import (
	"bytes"
	"strconv"
	"strings"
)

// stickyBuffers are the buffer keywords that apply to the matches after them.
var stickyBuffers = map[string]Buffer{
	"pkt_data":        BufPayload,
	"http.uri":        BufURI,
	"http.method":     BufMethod,
	"http.header":     BufHeader,
	"http.host":       BufHost,
	"http.user_agent": BufUserAgent,
}

// legacyModifiers move the content just before them into a buffer.
var legacyModifiers = map[string]Buffer{
	"http_uri":        BufURI,
	"http_method":     BufMethod,
	"http_header":     BufHeader,
	"http_host":       BufHost,
	"http_user_agent": BufUserAgent,
}

// knownUnsupported are Suricata keywords this engine does not implement; the
// distinction from a typo only makes the refusal message more useful.
var knownUnsupported = map[string]bool{}

func init() {
	for _, k := range strings.Fields(`
		flowbits flowint xbits hostbits byte_test byte_jump byte_extract byte_math
		isdataat urilen bsize startswith endswith rawbytes base64_decode base64_data
		file_data file.data filemagic filename fileext filestore filesize filemd5 filesha1 filesha256
		http.uri.raw http_raw_uri http.header.raw http_raw_header http.cookie http_cookie
		http.request_body http_client_body http.response_body http_server_body http.stat_code
		http_stat_code http.stat_msg http_stat_msg http.request_line http.response_line
		http.protocol http.accept http.accept_enc http.accept_lang http.referer
		http.content_type http.content_len http.connection http.start http.header_names
		http.location http.server http.request_header http.response_header http.host.raw
		http_raw_host http.method.raw
		tls.sni tls_sni tls.version tls.subject tls.issuerdn tls.cert_subject tls.cert_issuer
		tls.cert_serial tls.cert_fingerprint tls.certs tls_cert_subject tls_cert_issuer
		ssl_version ssl_state ja3.hash ja3.string ja3s.hash ja3s.string ja4.hash
		dns.query dns_query dns.opcode dns.answer.name dns.query.name
		smb.share smb.named_pipe dcerpc.iface dcerpc.opnum dcerpc.stub_data ssh.proto
		ssh.software ssh_proto ssh_software krb5_cname krb5_sname ftpdata_command
		app-layer-protocol app-layer-event app-layer-state decode-event stream-event
		engine-event
		ttl itype icode icmp_id icmp_seq tos ipopts fragbits fragoffset flags seq ack
		window id ip_proto sameip ipv4-csum tcpv4-csum udpv4-csum tcp.mss tcp.hdr
		tag noalert target prefilter replace lua luajit iprep datarep dataset
		stream_size tcp.flags geoip asn1 entropy transform to_lowercase to_uppercase
		strip_whitespace compress_whitespace url_decode dotprefix pcrexform
		xor to_md5 to_sha1 to_sha256 header_lowercase strip_pseudo_headers
		gid requires config rate_filter suppress
	`) {
		knownUnsupported[k] = true
	}
}

// optionParser applies options to a rule in order, tracking the sticky
// buffer and the last content for modifiers.
type optionParser struct {
	r        *Rule
	buffer   Buffer
	sticky   bool // a sticky buffer other than pkt_data is active
	last     *Match
	seenFlow bool
}

func (p *optionParser) lastContent(modifier string) (*Content, error) {
	if p.last == nil || p.last.Content == nil {
		return nil, reasonf("%q needs a preceding content", modifier)
	}
	return p.last.Content, nil
}

// prevInBuffer says whether a match exists before the last one in its buffer
// (what a relative modifier anchors to).
func (p *optionParser) prevInBuffer(m *Match) *Match {
	var prev *Match
	for i := range p.r.Matches {
		if &p.r.Matches[i] == m {
			return prev
		}
		if p.r.Matches[i].Buffer == m.Buffer {
			prev = &p.r.Matches[i]
		}
	}
	return prev
}

func (p *optionParser) option(o option) error {
	r := p.r
	if b, ok := stickyBuffers[o.name]; ok {
		if o.has {
			return reasonf("%q takes no value", o.name)
		}
		p.buffer, p.sticky, p.last = b, b != BufPayload, nil
		return nil
	}
	if b, ok := legacyModifiers[o.name]; ok {
		if _, err := p.lastContent(o.name); err != nil {
			return err
		}
		if p.sticky || p.last.Buffer != BufPayload {
			return reasonf("%q cannot modify a content that is already in %s", o.name, p.last.Buffer)
		}
		if o.has {
			return reasonf("%q takes no value", o.name)
		}
		p.last.Buffer = b
		return p.checkRelative(p.last)
	}
	switch o.name {
	case "msg":
		s, err := unquote("msg", o.value)
		if err != nil {
			return err
		}
		r.Msg = s
	case "sid":
		// read before the other options
	case "rev":
		n, err := strconv.ParseUint(o.value, 10, 32)
		if err != nil {
			return reasonf("rev %q is not a 32-bit number", o.value)
		}
		r.Rev = uint32(n)
	case "classtype":
		if o.value == "" || strings.ContainsAny(o.value, " \t\",") {
			return reasonf("classtype %q is malformed", o.value)
		}
		r.Classtype = o.value
	case "priority":
		n, err := strconv.Atoi(o.value)
		if err != nil || n < 1 || n > 255 {
			return reasonf("priority %q is not a number from 1 to 255", o.value)
		}
		r.Priority = n
	case "reference":
		sys, id, ok := strings.Cut(o.value, ",")
		if !ok || strings.TrimSpace(sys) == "" || strings.TrimSpace(id) == "" {
			return reasonf("reference %q is not \"system,id\"", o.value)
		}
		r.References = append(r.References, Reference{strings.TrimSpace(sys), strings.TrimSpace(id)})
	case "metadata":
		for _, m := range strings.Split(o.value, ",") {
			if m = strings.TrimSpace(m); m != "" {
				r.Metadata = append(r.Metadata, m)
			}
		}
	case "content":
		return p.content(o)
	case "nocase":
		c, err := p.flagModifier(o)
		if err != nil {
			return err
		}
		c.Nocase = true
	case "fast_pattern":
		if o.has {
			return reasonf("fast_pattern options (%q) are not supported", o.value)
		}
		c, err := p.lastContent(o.name)
		if err != nil {
			return err
		}
		if c.Negated {
			return reasonf("fast_pattern on a negated content is not supported")
		}
		for _, m := range r.Matches {
			if m.Content != nil && m.Content.FastPattern {
				return reasonf("fast_pattern set on more than one content")
			}
		}
		c.FastPattern = true
	case "offset", "depth", "distance", "within":
		return p.position(o)
	case "pcre":
		return p.pcre(o)
	case "flow":
		if p.seenFlow {
			return reasonf("flow given twice")
		}
		p.seenFlow = true
		return p.flow(o.value)
	case "dsize":
		if r.Dsize != nil {
			return reasonf("dsize given twice")
		}
		d, err := parseDsize(o.value)
		if err != nil {
			return err
		}
		r.Dsize = d
	case "threshold":
		if r.Threshold != nil {
			return reasonf("threshold given twice")
		}
		t, err := parseRate("threshold", o.value, true)
		if err != nil {
			return err
		}
		r.Threshold = t
	case "detection_filter":
		if r.DetectionFilter != nil {
			return reasonf("detection_filter given twice")
		}
		t, err := parseRate("detection_filter", o.value, false)
		if err != nil {
			return err
		}
		r.DetectionFilter = t
	default:
		if knownUnsupported[o.name] {
			return reasonf("unsupported keyword %q", o.name)
		}
		return reasonf("unknown keyword %q", o.name)
	}
	return nil
}

func (p *optionParser) flagModifier(o option) (*Content, error) {
	c, err := p.lastContent(o.name)
	if err != nil {
		return nil, err
	}
	if o.has {
		return nil, reasonf("%q takes no value", o.name)
	}
	return c, nil
}

func (p *optionParser) content(o option) error {
	v := o.value
	neg := strings.HasPrefix(v, "!")
	if neg {
		v = strings.TrimSpace(v[1:])
	}
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return reasonf("content value must be in double quotes")
	}
	b, err := contentBytes(v[1 : len(v)-1])
	if err != nil {
		return err
	}
	p.r.Matches = append(p.r.Matches, Match{Buffer: p.buffer, Content: &Content{Pattern: b, Negated: neg}})
	p.relink()
	return nil
}

// relink points last at the newest match (append may have moved them).
func (p *optionParser) relink() { p.last = &p.r.Matches[len(p.r.Matches)-1] }

func (p *optionParser) position(o option) error {
	c, err := p.lastContent(o.name)
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(o.value)
	if err != nil {
		return reasonf("%s %q is not a number", o.name, o.value)
	}
	switch o.name {
	case "offset":
		if c.HasOffset {
			return reasonf("offset given twice for one content")
		}
		if n < 0 {
			return reasonf("offset %d is negative", n)
		}
		c.Offset, c.HasOffset = n, true
	case "depth":
		if c.Depth != 0 {
			return reasonf("depth given twice for one content")
		}
		if n < len(c.Pattern) {
			return reasonf("depth %d is smaller than the content length %d", n, len(c.Pattern))
		}
		c.Depth = n
	case "distance":
		if c.HasDistance {
			return reasonf("distance given twice for one content")
		}
		c.Distance, c.HasDistance, c.Relative = n, true, true
	case "within":
		if c.Within != 0 {
			return reasonf("within given twice for one content")
		}
		if n < len(c.Pattern) {
			return reasonf("within %d is smaller than the content length %d", n, len(c.Pattern))
		}
		c.Within, c.Relative = n, true
	}
	if c.Relative && (c.HasOffset || c.Depth != 0) {
		return reasonf("content mixes relative (distance/within) and absolute (offset/depth) modifiers")
	}
	return p.checkRelative(p.last)
}

// checkRelative refuses relative modifiers with nothing to anchor to.
func (p *optionParser) checkRelative(m *Match) error {
	rel := m.Content != nil && m.Content.Relative || m.PCRE != nil && m.PCRE.Relative
	if !rel {
		return nil
	}
	prev := p.prevInBuffer(m)
	if prev == nil {
		return reasonf("relative match needs a preceding content or pcre in %s", m.Buffer)
	}
	if prev.Content != nil && prev.Content.Negated || prev.PCRE != nil && prev.PCRE.Negated {
		return reasonf("relative match anchored to a negated match is not supported")
	}
	return nil
}

func (p *optionParser) pcre(o option) error {
	v := o.value
	neg := strings.HasPrefix(v, "!")
	if neg {
		v = strings.TrimSpace(v[1:])
	}
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return reasonf("pcre value must be in double quotes")
	}
	src := v[1 : len(v)-1]
	pc, buf, err := translatePCRE(src, p.buffer, p.sticky)
	if err != nil {
		return err
	}
	pc.Negated = neg
	p.r.Matches = append(p.r.Matches, Match{Buffer: buf, PCRE: pc})
	p.relink()
	return p.checkRelative(p.last)
}

func (p *optionParser) flow(v string) error {
	f := &p.r.Flow
	for _, part := range strings.Split(v, ",") {
		switch w := strings.TrimSpace(part); w {
		case "to_server", "from_client":
			if f.Dir == FlowToClient {
				return reasonf("flow has both to_server and to_client")
			}
			f.Dir = FlowToServer
		case "to_client", "from_server":
			if f.Dir == FlowToServer {
				return reasonf("flow has both to_server and to_client")
			}
			f.Dir = FlowToClient
		case "established":
			f.Established = true
		case "not_established":
			f.NotEstablished = true
		case "stateless":
			f.Stateless = true
		case "":
			return reasonf("flow %q has an empty option", v)
		default:
			return reasonf("flow option %q is not supported", w)
		}
	}
	if f.Established && (f.NotEstablished || f.Stateless) {
		return reasonf("flow %q contradicts itself", v)
	}
	return nil
}

func (p *optionParser) finish() error {
	r := p.r
	if r.SID == 0 {
		return reasonf("rule has no sid")
	}
	for i := range r.Matches {
		if m := &r.Matches[i]; m.Buffer.IsHTTP() && r.Proto != ProtoHTTP && r.Proto != ProtoTCP && r.Proto != ProtoIP {
			return reasonf("%s used in a %s rule", m.Buffer, r.Proto)
		}
	}
	for _, m := range r.Matches {
		if c := m.Content; c != nil && m.Buffer == BufHost && !c.Nocase && bytes.ContainsFunc(c.Pattern, func(r rune) bool { return r >= 'A' && r <= 'Z' }) {
			return reasonf("content %q in http.host has upper-case letters and can never match (the buffer is lower-cased)", c.Pattern)
		}
	}
	if r.Dsize != nil && r.UsesHTTP() {
		return reasonf("dsize cannot be combined with http buffers")
	}
	if r.UsesHTTP() && r.Flow.Dir == FlowToClient {
		return reasonf("http request buffers with flow:to_client can never match")
	}
	return nil
}

func parseDsize(v string) (*Dsize, error) {
	s := strings.ReplaceAll(v, " ", "")
	bad := reasonf("dsize %q is not N, !N, <N, <=N, >N, >=N or N<>M", v)
	num := func(x string) (int, bool) {
		n, err := strconv.Atoi(x)
		return n, err == nil && n >= 0 && n <= 65535
	}
	if lo, hi, ok := strings.Cut(s, "<>"); ok {
		a, ok1 := num(lo)
		b, ok2 := num(hi)
		if !ok1 || !ok2 || a >= b {
			return nil, bad
		}
		return &Dsize{Op: "<>", Lo: a, Hi: b}, nil
	}
	for _, op := range []string{"<=", ">=", "<", ">", "!"} {
		if rest, ok := strings.CutPrefix(s, op); ok {
			n, ok := num(rest)
			if !ok {
				return nil, bad
			}
			return &Dsize{Op: op, Lo: n}, nil
		}
	}
	n, ok := num(s)
	if !ok {
		return nil, bad
	}
	return &Dsize{Op: "=", Lo: n}, nil
}

// parseRate reads "type T, track by_src, count N, seconds M" (type only for
// threshold).
func parseRate(keyword, v string, wantType bool) (*Rate, error) {
	t := &Rate{}
	seen := map[string]bool{}
	for _, part := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(strings.TrimSpace(part), " ")
		val = strings.TrimSpace(val)
		if seen[k] {
			return nil, reasonf("%s has %q twice", keyword, k)
		}
		seen[k] = true
		switch k {
		case "type":
			if !wantType {
				return nil, reasonf("%s takes no type", keyword)
			}
			switch val {
			case "limit":
				t.Type = Limit
			case "threshold":
				t.Type = Threshold
			case "both":
				t.Type = Both
			default:
				return nil, reasonf("%s type %q is not limit, threshold or both", keyword, val)
			}
		case "track":
			switch val {
			case "by_src":
				t.Track = BySrc
			case "by_dst":
				t.Track = ByDst
			default:
				return nil, reasonf("%s track %q is not supported (by_src or by_dst)", keyword, val)
			}
		case "count", "seconds":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 {
				return nil, reasonf("%s %s %q is not a positive number", keyword, k, val)
			}
			if k == "count" {
				t.Count = n
			} else {
				t.Seconds = n
			}
		default:
			return nil, reasonf("%s has unknown setting %q", keyword, k)
		}
	}
	if wantType && t.Type == 0 || t.Track == 0 || t.Count == 0 || t.Seconds == 0 {
		if wantType {
			return nil, reasonf("%s needs type, track, count and seconds", keyword)
		}
		return nil, reasonf("%s needs track, count and seconds", keyword)
	}
	return t, nil
}
