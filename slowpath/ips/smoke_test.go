package ips

import (
	"slices"
	"testing"
)

func TestSmokeHTTPURI(t *testing.T) {
	h := newHarness(t, `alert http any any -> any any (msg:"etc passwd"; http.uri; content:"/etc/passwd"; classtype:attempted-recon; sid:1; rev:2;)`)
	h.run(httpSession("GET /cgi-bin/../../etc/passwd HTTP/1.1\r\nHost: Example.com:8080\r\nUser-Agent: curl\r\n\r\n", "")...)
	if got := h.sids(); !slices.Equal(got, []uint32{1}) {
		t.Fatalf("sids %v", got)
	}
	r := h.sink.Records()[0]
	t.Logf("%+v %+v %+v", r, r.Alert, r.HTTP)
}
