package rule

import "fmt"

// Error is why a rule was refused. SID is 0 when the rule's sid could not be
// read.
type Error struct {
	File   string
	Line   int
	SID    uint32
	Reason string
}

func (e *Error) Error() string {
	loc := ""
	if e.File != "" {
		loc = fmt.Sprintf("%s:%d: ", e.File, e.Line)
	} else if e.Line > 0 {
		loc = fmt.Sprintf("line %d: ", e.Line)
	}
	if e.SID == 0 {
		return fmt.Sprintf("%srule without a readable sid: %s", loc, e.Reason)
	}
	return fmt.Sprintf("%ssid %d: %s", loc, e.SID, e.Reason)
}

// reasonf builds the reason of a refusal; Parse fills in where and which sid.
func reasonf(format string, args ...any) error {
	return &Error{Reason: fmt.Sprintf(format, args...)}
}
