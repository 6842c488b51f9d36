package rule

import (
	"regexp"
	"unicode/utf8"
)

// Action is what a matching rule does.
type Action uint8

const (
	Alert Action = iota + 1
	Drop
	Reject
	Pass
)

func (a Action) String() string {
	switch a {
	case Alert:
		return "alert"
	case Drop:
		return "drop"
	case Reject:
		return "reject"
	case Pass:
		return "pass"
	}
	return "action?"
}

// Proto is a rule's protocol field.
type Proto uint8

const (
	ProtoIP Proto = iota + 1
	ProtoTCP
	ProtoUDP
	ProtoICMP
	ProtoHTTP // app-layer HTTP over TCP
)

func (p Proto) String() string {
	return [...]string{"?", "ip", "tcp", "udp", "icmp", "http"}[p]
}

// Buffer is where a content or pcre looks.
type Buffer uint8

const (
	BufPayload   Buffer = iota // packet payload, or the reassembled stream for TCP
	BufURI                     // http.uri: the normalized request URI
	BufMethod                  // http.method
	BufHeader                  // http.header: normalized request headers but Cookie
	BufHost                    // http.host: the Host header, lower-cased, without port
	BufUserAgent               // http.user_agent
	NumBuffers
)

var bufferNames = [NumBuffers]string{"payload", "http.uri", "http.method", "http.header", "http.host", "http.user_agent"}

func (b Buffer) String() string { return bufferNames[b] }

// IsHTTP says whether the buffer belongs to an HTTP request.
func (b Buffer) IsHTTP() bool { return b != BufPayload }

// Content is one content keyword with its modifiers.
type Content struct {
	Pattern     []byte
	Negated     bool
	Nocase      bool
	Offset      int
	Depth       int // 0: unset
	Distance    int
	Within      int // 0: unset
	HasOffset   bool
	HasDistance bool
	Relative    bool // distance or within given: anchored to the previous match
	FastPattern bool
}

// PCRE is one pcre keyword, translated to RE2.
type PCRE struct {
	Source   string // as written in the rule, between the quotes
	Regexp   *regexp.Regexp
	Negated  bool
	Relative bool // R: starts where the previous match in the buffer ended
	// StartSensitive: the match can begin with ^, \A, \b or \B, which look
	// at the byte before it, so the regexp must not be run on a subject cut
	// at a later start (it would see a false beginning there).
	StartSensitive bool
	after          *regexp.Regexp // StartSensitive: the regexp behind one byte of context
	dollars        []int          // capture groups of PCRE '$' and '\Z' (see Find)
}

// FindFrom is Find on data with the match starting at from or later, the
// bytes before from still seen by assertions (PCRE's start offset): ^ and
// \A cannot match at a later start, \b and \B look at the real byte before.
func (p *PCRE) FindFrom(data []byte, from int) (start, end int, ok bool) {
	if from > len(data) {
		return 0, 0, false
	}
	if from == 0 || !p.StartSensitive {
		start, end, ok = p.find(p.Regexp, data[from:])
		return from + start, from + end, ok
	}
	base := from - 1
	start, end, ok = p.find(p.after, data[base:])
	if !ok {
		return 0, 0, false
	}
	// The context byte is one rune as RE2 reads it.
	_, w := utf8.DecodeRune(data[base+start:])
	return base + start + w, base + end, true
}

// Find returns the leftmost match in data, with PCRE's end: a '$' or '\Z'
// that matched before a final newline ends the match before that newline.
func (p *PCRE) Find(data []byte) (start, end int, ok bool) { return p.find(p.Regexp, data) }

func (p *PCRE) find(re *regexp.Regexp, data []byte) (start, end int, ok bool) {
	if len(p.dollars) == 0 {
		loc := re.FindIndex(data)
		if loc == nil {
			return 0, 0, false
		}
		return loc[0], loc[1], true
	}
	loc := re.FindSubmatchIndex(data)
	if loc == nil {
		return 0, 0, false
	}
	start, end = loc[0], loc[1]
	for _, g := range p.dollars {
		if s, e := loc[2*g], loc[2*g+1]; s >= 0 && e > s {
			end = s // it took the final newline, which PCRE leaves out
		}
	}
	return start, end, true
}

// Match is one content or pcre, in rule order, with the buffer it inspects.
type Match struct {
	Buffer  Buffer
	Content *Content
	PCRE    *PCRE
}

// FlowDir is flow's direction option.
type FlowDir uint8

const (
	FlowAny FlowDir = iota
	FlowToServer
	FlowToClient
)

// Flow is the flow keyword.
type Flow struct {
	Dir            FlowDir
	Established    bool
	NotEstablished bool
	Stateless      bool
}

// Dsize compares the packet payload size.
type Dsize struct {
	Op     string // "=", "!", "<", "<=", ">", ">=", "<>"
	Lo, Hi int
}

// Matches says whether a payload size satisfies the comparison.
func (d *Dsize) Matches(n int) bool {
	switch d.Op {
	case "=":
		return n == d.Lo
	case "!":
		return n != d.Lo
	case "<":
		return n < d.Lo
	case "<=":
		return n <= d.Lo
	case ">":
		return n > d.Lo
	case ">=":
		return n >= d.Lo
	case "<>":
		return n > d.Lo && n < d.Hi
	}
	return false
}

// Track is what a threshold counts by.
type Track uint8

const (
	BySrc Track = iota + 1
	ByDst
)

// ThresholdType is threshold's type.
type ThresholdType uint8

const (
	Limit     ThresholdType = iota + 1 // alert on the first count events per period
	Threshold                          // alert on every count-th event per period
	Both                               // alert once per period, at the count-th event
)

// Rate is a threshold or detection_filter.
type Rate struct {
	Type    ThresholdType // 0 for detection_filter
	Track   Track
	Count   int
	Seconds int
}

// Reference is one reference keyword.
type Reference struct {
	System string
	ID     string
}

// Rule is a parsed rule. Addresses and ports are kept as written; resolve
// them with a Vars.
type Rule struct {
	Action        Action
	Proto         Proto
	Src, Dst      string
	SrcPorts      string
	DstPorts      string
	Bidirectional bool

	SID        uint32
	Rev        uint32
	Msg        string
	Classtype  string
	Priority   int // 0: unset, then the classtype's
	References []Reference
	Metadata   []string

	Matches         []Match
	Flow            Flow
	Dsize           *Dsize
	Threshold       *Rate
	DetectionFilter *Rate

	Text string // the rule as read, continuations joined
	File string
	Line int
}

// UsesHTTP says whether any match inspects an HTTP buffer.
func (r *Rule) UsesHTTP() bool {
	for _, m := range r.Matches {
		if m.Buffer.IsHTTP() {
			return true
		}
	}
	return false
}
