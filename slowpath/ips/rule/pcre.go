package rule

import (
	"fmt"
	"regexp"
	"regexp/syntax"
	"strconv"
	"strings"

	"github.com/palisade/palisade/slowpath/internal/ascii"
)

// pcreBufferFlags are Suricata's pcre modifiers that pick an HTTP buffer.
var pcreBufferFlags = map[byte]Buffer{
	'U': BufURI,
	'H': BufHeader,
	'M': BufMethod,
	'W': BufHost,
	'V': BufUserAgent,
}

// translatePCRE turns a Suricata pcre value ("/re/flags") into RE2, or
// refuses it when RE2 would not match exactly the same inputs.
func translatePCRE(src string, current Buffer, sticky bool) (*PCRE, Buffer, error) {
	refuse := func(format string, args ...any) error {
		return reasonf("pcre \"%s\": %s", src, fmt.Sprintf(format, args...))
	}
	if len(src) < 2 || src[0] != '/' {
		return nil, 0, refuse("must be /regex/flags")
	}
	end := strings.LastIndexByte(src, '/')
	if end == 0 {
		return nil, 0, refuse("must be /regex/flags")
	}
	body, flagText := src[1:end], src[end+1:]
	pc := &PCRE{Source: src}
	buf := current
	var inline strings.Builder
	var anchored, dollarEndOnly, extended, multiline, bufferFlag bool
	for i := 0; i < len(flagText); i++ {
		f := flagText[i]
		switch f {
		case 'i', 's':
			inline.WriteByte(f)
		case 'm':
			inline.WriteByte(f)
			multiline = true
		case 'x':
			extended = true
		case 'G':
			inline.WriteByte('U')
		case 'A':
			anchored = true
		case 'E':
			dollarEndOnly = true
		case 'R':
			pc.Relative = true
		default:
			b, ok := pcreBufferFlags[f]
			if !ok {
				return nil, 0, refuse("flag %q is not supported", f)
			}
			if sticky {
				return nil, 0, refuse("buffer flag %q after a sticky buffer", f)
			}
			if bufferFlag && b != buf {
				return nil, 0, refuse("more than one buffer flag")
			}
			buf, bufferFlag = b, true
		}
	}
	re, err := translateBody(body, extended, multiline || dollarEndOnly)
	if err != nil {
		return nil, 0, refuse("%v", err)
	}
	if anchored {
		re = `\A(?:` + re + `)`
	}
	if inline.Len() > 0 {
		re = "(?" + inline.String() + ")" + re
	}
	c, err := regexp.Compile(re)
	if err != nil {
		return nil, 0, refuse("RE2 rejects the translation: %v", err)
	}
	pc.Regexp = c
	for i, name := range c.SubexpNames() {
		if strings.HasPrefix(name, dollarGroup) {
			pc.dollars = append(pc.dollars, i)
		}
	}
	parsed, err := syntax.Parse(re, syntax.Perl)
	if err != nil {
		return nil, 0, refuse("RE2 rejects the translation: %v", err)
	}
	if pc.StartSensitive = leadingAssertion(parsed); pc.StartSensitive {
		// Searching from a later start: one byte of context first, so the
		// leading assertions see the byte really before the match.
		if pc.after, err = regexp.Compile(`(?s:.)(?:` + re + `)`); err != nil {
			return nil, 0, refuse("RE2 rejects the translation: %v", err)
		}
	}
	return pc, buf, nil
}

// dollarGroup names the capture group a PCRE '$' or '\Z' is translated to,
// so that a match ending before a final newline can be told apart from one
// that consumed it (PCRE's match ends before the newline).
const dollarGroup = "palisadeDollar"

// dollarRE is PCRE's end-of-subject-or-before-a-final-newline, captured.
func dollarRE(n int) string { return fmt.Sprintf(`(?P<%s%d>\n?\z)`, dollarGroup, n) }

// leadingAssertion says whether re can test an assertion that looks at the
// byte before the match (^, \A, \b, \B) before it consumes a byte: such a
// regexp run on a subject cut at a later start would see a false start.
func leadingAssertion(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpBeginLine, syntax.OpBeginText, syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return true
	case syntax.OpCapture, syntax.OpStar, syntax.OpPlus, syntax.OpQuest, syntax.OpRepeat:
		return leadingAssertion(re.Sub[0])
	case syntax.OpAlternate:
		for _, s := range re.Sub {
			if leadingAssertion(s) {
				return true
			}
		}
	case syntax.OpConcat:
		for _, s := range re.Sub {
			if leadingAssertion(s) {
				return true
			}
			if !nullable(s) {
				return false
			}
		}
	}
	return false
}

// nullable says whether re can match without consuming a byte.
func nullable(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpEmptyMatch, syntax.OpBeginLine, syntax.OpEndLine, syntax.OpBeginText, syntax.OpEndText,
		syntax.OpWordBoundary, syntax.OpNoWordBoundary, syntax.OpStar, syntax.OpQuest:
		return true
	case syntax.OpRepeat:
		return re.Min == 0 || nullable(re.Sub[0])
	case syntax.OpCapture, syntax.OpPlus:
		return nullable(re.Sub[0])
	case syntax.OpConcat:
		for _, s := range re.Sub {
			if !nullable(s) {
				return false
			}
		}
		return true
	case syntax.OpAlternate:
		for _, s := range re.Sub {
			if nullable(s) {
				return true
			}
		}
	}
	return false
}

// translateBody rewrites PCRE syntax into RE2 syntax. plainDollar says '$'
// already means end-of-text only (m or E flag); otherwise PCRE's '$' also
// matches before a final newline and is rewritten so.
func translateBody(s string, extended, plainDollar bool) (string, error) {
	var out strings.Builder
	dollars := 0
	inClass := false
	classStart := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 {
			return "", fmt.Errorf("byte 0x%02x in the pattern would be read as UTF-8 by RE2", c)
		}
		if c == '\\' {
			if i+1 == len(s) {
				return "", fmt.Errorf("ends with a lone backslash")
			}
			t, n, err := translateEscape(s[i+1:], inClass)
			if err != nil {
				return "", err
			}
			if t == zEscape {
				t = dollarRE(dollars)
				dollars++
			}
			out.WriteString(t)
			i += n
			continue
		}
		if inClass {
			if c == ']' && i > classStart {
				inClass = false
			}
			if c == '[' && i+1 < len(s) && s[i+1] == ':' {
				// A POSIX class like [:alpha:]: copy it whole.
				if j := strings.Index(s[i:], ":]"); j > 0 {
					out.WriteString(s[i : i+j+2])
					i += j + 1
					continue
				}
			}
			out.WriteByte(c)
			continue
		}
		switch c {
		case '[':
			inClass = true
			classStart = i + 1
			if i+1 < len(s) && s[i+1] == '^' {
				classStart++
			}
			// A ']' first in the class is literal.
			out.WriteByte(c)
			continue
		case '(':
			skip, err := checkGroup(s[i+1:])
			if err != nil {
				return "", err
			}
			if skip > 0 { // a (?#comment)
				i += skip
				continue
			}
		case '$':
			if !plainDollar {
				out.WriteString(dollarRE(dollars))
				dollars++
				continue
			}
		case '*', '+', '?', '}':
			if i+1 < len(s) && s[i+1] == '+' && isQuantifierEnd(s, i) {
				return "", fmt.Errorf("possessive quantifier %q has no RE2 equivalent", s[i:i+2])
			}
		case ' ', '\t', '\n', '\r', '\f', '\v':
			if extended {
				continue
			}
		case '#':
			if extended {
				j := strings.IndexByte(s[i:], '\n')
				if j < 0 {
					return out.String(), nil
				}
				i += j
				continue
			}
		}
		out.WriteByte(c)
	}
	if inClass {
		return "", fmt.Errorf("unterminated character class")
	}
	return out.String(), nil
}

// isQuantifierEnd says whether s[i] ends a quantifier (so a '+' after it
// makes it possessive rather than quantifying again).
func isQuantifierEnd(s string, i int) bool {
	if s[i] != '}' {
		return i > 0 // '*', '+' or '?' after something
	}
	j := strings.LastIndexByte(s[:i], '{')
	if j < 0 {
		return false
	}
	inner := s[j+1 : i]
	lo, hi, _ := strings.Cut(inner, ",")
	_, err1 := strconv.Atoi(lo)
	return err1 == nil && (hi == "" || isDigits(hi))
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// checkGroup refuses group constructs RE2 lacks. s follows the '('. It
// returns how many bytes to skip for a comment group.
func checkGroup(s string) (int, error) {
	switch {
	case strings.HasPrefix(s, "*"):
		return 0, fmt.Errorf("backtracking verb \"(*\" has no RE2 equivalent")
	case !strings.HasPrefix(s, "?"):
		return 0, nil
	}
	g := s[1:]
	for _, bad := range []struct{ prefix, what string }{
		{"=", "lookahead \"(?=\""},
		{"!", "negative lookahead \"(?!\""},
		{"<=", "lookbehind \"(?<=\""},
		{"<!", "negative lookbehind \"(?<!\""},
		{">", "atomic group \"(?>\""},
		{"|", "branch reset \"(?|\""},
		{"(", "conditional \"(?(\""},
		{"R", "recursion \"(?R\""},
		{"&", "subroutine call \"(?&\""},
		{"P>", "subroutine call \"(?P>\""},
		{"P=", "named backreference \"(?P=\""},
		{"'", "quoted group name \"(?'\""},
		{"C", "callout \"(?C\""},
	} {
		if strings.HasPrefix(g, bad.prefix) {
			return 0, fmt.Errorf("%s has no RE2 equivalent", bad.what)
		}
	}
	if len(g) > 0 && (g[0] >= '0' && g[0] <= '9' || (g[0] == '+' || g[0] == '-') && len(g) > 1 && g[1] >= '0' && g[1] <= '9') {
		return 0, fmt.Errorf("subroutine call \"(?%c\" has no RE2 equivalent", g[0])
	}
	if strings.HasPrefix(g, "#") {
		j := strings.IndexByte(g, ')')
		if j < 0 {
			return 0, fmt.Errorf("unterminated comment group")
		}
		return j + 2, nil // '?' + comment + ')'
	}
	if strings.HasPrefix(g, "<") || strings.HasPrefix(g, "P<") {
		return 0, nil // named group: RE2 has both spellings
	}
	// Inline flags "(?flags)" or "(?flags:": RE2 knows i, m, s and U.
	for j := 0; j < len(g); j++ {
		switch g[j] {
		case ')', ':':
			return 0, nil
		case 'i', 'm', 's', 'U', '-':
		default:
			return 0, fmt.Errorf("inline flag %q has no RE2 equivalent", g[j])
		}
	}
	return 0, nil
}

// zEscape stands for \Z until translateBody numbers its capture group.
const zEscape = `\Z`

// translateEscape handles the escape after a backslash (s starts after it)
// and returns the RE2 text and how many bytes of s it consumed.
func translateEscape(s string, inClass bool) (string, int, error) {
	c := s[0]
	switch {
	case c >= 0x80:
		return "", 0, fmt.Errorf("byte 0x%02x in the pattern would be read as UTF-8 by RE2", c)
	case c == 'Q' || c == 'E':
		return "", 0, fmt.Errorf("quoting with \\Q...\\E is not supported")
	case c >= '1' && c <= '9':
		return "", 0, fmt.Errorf("backreference \"\\%c\" has no RE2 equivalent", c)
	case c == '0':
		j := 1
		for j < len(s) && j < 3 && s[j] >= '0' && s[j] <= '7' {
			j++
		}
		v, _ := strconv.ParseUint(s[:j], 8, 8)
		if v >= 0x80 {
			return "", 0, fmt.Errorf("byte 0x%02x would be read as UTF-8 by RE2", v)
		}
		return fmt.Sprintf(`\x%02x`, v), j, nil
	case c == 'x':
		hex := ""
		n := 1
		if strings.HasPrefix(s[1:], "{") {
			k := strings.IndexByte(s, '}')
			if k < 0 {
				return "", 0, fmt.Errorf("unterminated \\x{...}")
			}
			hex, n = s[2:k], k+1
		} else {
			for n < len(s) && n < 3 && ascii.IsHex(s[n]) {
				n++
			}
			hex = s[1:n]
		}
		v, err := strconv.ParseUint(hex, 16, 32)
		if hex == "" {
			v, err = 0, nil
		}
		if err != nil {
			return "", 0, fmt.Errorf("invalid escape \\x%s", hex)
		}
		if v >= 0x80 {
			return "", 0, fmt.Errorf("\\x%s matches byte 0x%02x, which RE2 would read as UTF-8", hex, v)
		}
		return fmt.Sprintf(`\x%02x`, v), n, nil
	case c == 'e':
		return `\x1b`, 1, nil
	case c == 'c':
		// PCRE: a lower-case letter is upper-cased, then bit 0x40 flips;
		// any printable ASCII character may follow.
		if len(s) < 2 || s[1] < 0x20 || s[1] > 0x7e {
			return "", 0, fmt.Errorf("invalid control escape")
		}
		x := s[1]
		if x >= 'a' && x <= 'z' {
			x -= 'a' - 'A'
		}
		return fmt.Sprintf(`\x%02x`, x^0x40), 2, nil
	case c == 'Z':
		if inClass {
			return "", 0, fmt.Errorf("\\Z inside a class")
		}
		return zEscape, 1, nil
	case strings.IndexByte("gkGKhHvVRXNCLluU", c) >= 0:
		return "", 0, fmt.Errorf("escape \"\\%c\" has no RE2 equivalent", c)
	}
	return `\` + string(c), 1, nil
}
