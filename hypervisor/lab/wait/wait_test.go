package wait

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestUntilReturnsOnceTheCheckHolds(t *testing.T) {
	calls := 0
	err := Until(time.Hour, func() error {
		calls++
		if calls < 4 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || calls != 4 {
		t.Fatalf("Until = %v after %d calls, want nil after 4", err, calls)
	}
}

func TestUntilReportsTheLastError(t *testing.T) {
	n := 0
	err := Until(0, func() error {
		n++
		return errors.New("count is 3, want 4")
	})
	if err == nil || !strings.Contains(err.Error(), "count is 3, want 4") || n != 1 {
		t.Fatalf("Until = %v after %d calls, want the check's error after one call", err, n)
	}
}
