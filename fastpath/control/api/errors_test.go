package api_test

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/palisade/palisade/fastpath/control/api"
)

var codes = []api.Code{api.ErrBadRequest, api.ErrInvalidPolicy, api.ErrGuestNotFound, api.ErrVNICNotFound,
	api.ErrAlreadyProtected, api.ErrVNICInUse, api.ErrHeapBelowReserved, api.ErrNoGuestSlot, api.ErrHeapExhausted,
	api.ErrRuleSpaceFull, api.ErrInternal}

// TestDocsListEveryCodeWithItsStatus keeps docs/control-api.md the
// reference: its error table gives every code the status Status gives it.
func TestDocsListEveryCodeWithItsStatus(t *testing.T) {
	doc, err := os.ReadFile("../../../docs/control-api.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("^\\| (\\d{3}) \\| ([^|]+) \\|")
	code := regexp.MustCompile("`([a-z_]+)`")
	documented := map[api.Code]int{}
	for _, line := range strings.Split(string(doc), "\n") {
		m := row.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		status, _ := strconv.Atoi(m[1])
		for _, c := range code.FindAllStringSubmatch(m[2], -1) {
			documented[api.Code(c[1])] = status
		}
	}
	for _, c := range codes {
		if got, ok := documented[c]; !ok || got != c.Status() {
			t.Errorf("%s: documented with status %d, answered with %d", c, got, c.Status())
		}
	}
	if len(documented) != len(codes) {
		t.Errorf("docs list %d codes, the API has %d: %v", len(documented), len(codes), documented)
	}
}

func TestErrorUnwrapsToItsCode(t *testing.T) {
	err := fmt.Errorf("activate web: %w", &api.Error{Status: 404, Code: api.ErrGuestNotFound, Message: "web: guest not protected"})
	if !errors.Is(err, api.ErrGuestNotFound) || errors.Is(err, api.ErrVNICNotFound) {
		t.Fatalf("errors.Is on %v", err)
	}
	if got := err.Error(); got != "activate web: web: guest not protected (guest_not_found, HTTP 404)" {
		t.Fatalf("message: %s", got)
	}
	// An answer without a code (an unknown route) matches none.
	bare := &api.Error{Status: 404, Message: "404 page not found"}
	if errors.Is(bare, api.Code("")) || bare.Error() != "404 page not found (HTTP 404)" {
		t.Fatalf("codeless answer: %v", bare)
	}
}
