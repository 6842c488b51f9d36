package rule

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/palisade/palisade/slowpath/internal/ascii"
)

// ParseReader reads a rules file: one rule per line, '#' comments, blank
// lines, and lines continued by a trailing backslash. It returns the rules
// it accepted and one *Error per refused rule; a read error ends it.
func ParseReader(r io.Reader, file string) ([]*Rule, []*Error, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var rules []*Rule
	var refused []*Error
	var pending strings.Builder
	startLine, line := 0, 0
	flush := func() {
		text := strings.TrimSpace(pending.String())
		pending.Reset()
		if text == "" || strings.HasPrefix(text, "#") {
			return
		}
		r, err := Parse(text)
		if err != nil {
			e := asError(err)
			e.File, e.Line = file, startLine
			refused = append(refused, e)
			return
		}
		r.File, r.Line = file, startLine
		rules = append(rules, r)
	}
	for sc.Scan() {
		line++
		s := sc.Text()
		if pending.Len() == 0 {
			startLine = line
			if t := strings.TrimSpace(s); t == "" || strings.HasPrefix(t, "#") {
				continue
			}
		}
		if strings.HasSuffix(s, "\\") {
			pending.WriteString(s[:len(s)-1])
			continue
		}
		pending.WriteString(s)
		flush()
	}
	if err := sc.Err(); err != nil {
		return rules, refused, fmt.Errorf("%s:%d: %w", file, line+1, err)
	}
	flush() // a continuation on the last line
	return rules, refused, nil
}

func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		c := *e
		return &c
	}
	return &Error{Reason: err.Error()}
}

// Parse parses one rule. A refusal is an *Error carrying the sid when the
// rule had a readable one.
func Parse(text string) (*Rule, error) {
	r := &Rule{Text: text}
	err := parse(r, text)
	if err != nil {
		e := asError(err)
		if e.SID == 0 {
			e.SID = sniffSID(text)
		}
		return nil, e
	}
	return r, nil
}

// sniffSID finds a sid in a rule that failed to parse, for the message.
func sniffSID(text string) uint32 {
	for _, key := range []string{"; sid:", ";sid:", "(sid:", "( sid:"} {
		i := strings.Index(text, key)
		if i < 0 {
			continue
		}
		rest := strings.TrimLeft(text[i+len(key):], " ")
		j := strings.IndexFunc(rest, func(c rune) bool { return c < '0' || c > '9' })
		if j < 0 {
			j = len(rest)
		}
		if n, err := strconv.ParseUint(rest[:j], 10, 32); err == nil {
			return uint32(n)
		}
	}
	return 0
}

func parse(r *Rule, text string) error {
	open := strings.IndexByte(text, '(')
	if open < 0 || !strings.HasSuffix(text, ")") {
		return reasonf("rule must end with an option list in parentheses")
	}
	header, err := headerFields(text[:open])
	if err != nil {
		return err
	}
	opts, err := splitOptions(text[open+1 : len(text)-1])
	if err != nil {
		return err
	}
	// Read the sid first so every later refusal can name it.
	for _, o := range opts {
		if o.name == "sid" {
			n, err := strconv.ParseUint(o.value, 10, 32)
			if err != nil || n == 0 {
				return reasonf("sid %q is not a positive 32-bit number", o.value)
			}
			r.SID = uint32(n)
		}
	}
	if err := r.parseHeader(header); err != nil {
		return withSID(err, r.SID)
	}
	p := optionParser{r: r}
	for _, o := range opts {
		if err := p.option(o); err != nil {
			return withSID(err, r.SID)
		}
	}
	if err := p.finish(); err != nil {
		return withSID(err, r.SID)
	}
	return nil
}

func withSID(err error, sid uint32) error {
	e := asError(err)
	e.SID = sid
	return e
}

// headerFields splits the header at white space, keeping bracketed lists
// (which may contain spaces) in one field.
func headerFields(s string) ([]string, error) {
	var fields []string
	var cur strings.Builder
	depth := 0
	for _, c := range s {
		switch {
		case c == '[':
			depth++
			cur.WriteRune(c)
		case c == ']':
			depth--
			if depth < 0 {
				return nil, reasonf("unbalanced ']' in the rule header")
			}
			cur.WriteRune(c)
		case c == ' ' || c == '\t':
			if depth > 0 {
				continue // "[1.2.3.4, 5.6.7.8]" is one list
			}
			if cur.Len() > 0 {
				fields = append(fields, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(c)
		}
	}
	if depth != 0 {
		return nil, reasonf("unbalanced '[' in the rule header")
	}
	if cur.Len() > 0 {
		fields = append(fields, cur.String())
	}
	return fields, nil
}

var actions = map[string]Action{"alert": Alert, "drop": Drop, "reject": Reject, "pass": Pass}

// protocols are the header protocols supported; pkthdr and http1 are
// Suricata's aliases.
var protocols = map[string]Proto{"ip": ProtoIP, "pkthdr": ProtoIP, "tcp": ProtoTCP, "udp": ProtoUDP, "icmp": ProtoICMP, "http": ProtoHTTP, "http1": ProtoHTTP}

func (r *Rule) parseHeader(f []string) error {
	if len(f) != 7 {
		return reasonf("rule header has %d fields, want 7 (action proto src sport direction dst dport)", len(f))
	}
	var ok bool
	if r.Action, ok = actions[f[0]]; !ok {
		return reasonf("unsupported action %q", f[0])
	}
	if r.Proto, ok = protocols[strings.ToLower(f[1])]; !ok {
		return reasonf("unsupported protocol %q", f[1])
	}
	switch f[4] {
	case "->":
	case "<>":
		r.Bidirectional = true
	case "<-":
		return reasonf("direction \"<-\" is not valid (Suricata has no reverse operator)")
	default:
		return reasonf("invalid direction %q", f[4])
	}
	r.Src, r.SrcPorts, r.Dst, r.DstPorts = f[2], f[3], f[5], f[6]
	// Check the syntax now; variables are resolved when the rule is compiled.
	for _, a := range []string{r.Src, r.Dst} {
		if _, err := ParseAddrs(a, nil); err != nil {
			return err
		}
	}
	for _, p := range []string{r.SrcPorts, r.DstPorts} {
		if _, err := ParsePorts(p, nil); err != nil {
			return err
		}
	}
	return nil
}

type option struct {
	name  string
	value string // raw, trimmed; empty for flags
	has   bool   // a ':' was present
}

// splitOptions splits "k:v; k; ..." at semicolons not escaped by a
// backslash, as Suricata does: a ';' inside quotes must be escaped too.
func splitOptions(s string) ([]option, error) {
	var opts []option
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++ // the next byte is escaped
		case ';':
			o, err := makeOption(s[start:i])
			if err != nil {
				return nil, err
			}
			opts = append(opts, o)
			start = i + 1
		}
	}
	if strings.TrimSpace(s[start:]) != "" {
		return nil, reasonf("option %q is not terminated by ';'", strings.TrimSpace(s[start:]))
	}
	return opts, nil
}

func makeOption(s string) (option, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return option{}, reasonf("empty option (\";;\")")
	}
	name, value, has := strings.Cut(s, ":")
	name = strings.TrimSpace(name)
	if name == "" || strings.ContainsAny(name, " \t\"") {
		return option{}, reasonf("malformed option %q", s)
	}
	return option{name: name, value: strings.TrimSpace(value), has: has}, nil
}

// unquote reads a string value in double quotes; Suricata escapes are \" \;
// \\ and \: .
func unquote(keyword, v string) (string, error) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", reasonf("%s value must be in double quotes", keyword)
	}
	v = v[1 : len(v)-1]
	if !strings.Contains(v, "\\") {
		if strings.Contains(v, "\"") {
			return "", reasonf("%s value has an unescaped '\"'", keyword)
		}
		return v, nil
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\':
			if i+1 == len(v) {
				return "", reasonf("%s value ends with a lone backslash", keyword)
			}
			i++
			switch v[i] {
			case '"', ';', '\\', ':':
				b.WriteByte(v[i])
			default:
				return "", reasonf("%s value has invalid escape \"\\%c\"", keyword, v[i])
			}
		case c == '"':
			return "", reasonf("%s value has an unescaped '\"'", keyword)
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// contentBytes decodes a content string: text with escapes and |hex| runs.
func contentBytes(s string) ([]byte, error) {
	var out []byte
	hex := false
	var nib []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		if hex {
			switch {
			case c == '|':
				if len(nib) != 0 {
					return nil, reasonf("content has an odd number of hex digits")
				}
				hex = false
			case c == ' ':
				if len(nib) != 0 {
					return nil, reasonf("content has a split hex byte")
				}
			case ascii.IsHex(c):
				nib = append(nib, c)
				if len(nib) == 2 {
					v, _ := strconv.ParseUint(string(nib), 16, 8)
					out = append(out, byte(v))
					nib = nib[:0]
				}
			default:
				return nil, reasonf("content has invalid hex character %q", c)
			}
			continue
		}
		switch c {
		case '|':
			hex = true
		case '\\':
			if i+1 == len(s) {
				return nil, reasonf("content ends with a lone backslash")
			}
			i++
			switch s[i] {
			case '"', ';', '\\', ':':
				out = append(out, s[i])
			default:
				return nil, reasonf("content has invalid escape \"\\%c\"", s[i])
			}
		case '"':
			return nil, reasonf("content has an unescaped '\"'")
		case ';':
			return nil, reasonf("content has an unescaped ';'")
		default:
			out = append(out, c)
		}
	}
	if hex {
		return nil, reasonf("content has an unterminated |hex| run")
	}
	if len(out) == 0 {
		return nil, reasonf("content is empty")
	}
	return out, nil
}
