package appproto

import "testing"

func TestDetect(t *testing.T) {
	for s, want := range map[string]Proto{
		"GET / HTTP/1.1\r\n":      HTTP,
		"GE":                      Unknown,
		"\x16\x03\x01\x00\x10":    TLS,
		"SSH-2.0-OpenSSH_9.6\r\n": Other,
		"\x16":                    Unknown,
	} {
		if got := Detect([]byte(s)); got != want {
			t.Errorf("%q: %v, want %v", s, got, want)
		}
	}
}
