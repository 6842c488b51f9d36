package server

import (
	"errors"
	"fmt"
	"testing"

	"github.com/palisade/palisade/fastpath/control/api"
	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/fastpath/guests"
	"github.com/palisade/palisade/fastpath/heap"
	"github.com/palisade/palisade/fastpath/policy"
)

// TestEveryDaemonErrorHasItsCode maps each error the daemon's packages
// return, wrapped as they wrap it, to its code.
func TestEveryDaemonErrorHasItsCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want api.Code
	}{
		{&heap.ExhaustedError{Guest: "g"}, api.ErrHeapExhausted},
		{&heap.BelowReservedError{}, api.ErrHeapBelowReserved},
		{&policy.Error{Rule: -1, Field: "mode"}, api.ErrInvalidPolicy},
		{guests.ErrNotFound, api.ErrGuestNotFound},
		{guests.ErrNoVNIC, api.ErrVNICNotFound},
		{guests.ErrAlreadyActive, api.ErrAlreadyProtected},
		{guests.ErrVNICInUse, api.ErrVNICInUse},
		{guests.ErrNoSlot, api.ErrNoGuestSlot},
		{&datapath.PoolFullError{Pool: "rule"}, api.ErrRuleSpaceFull},
		{errors.New("bpf map update: permission denied"), api.ErrInternal},
	} {
		if got := codeOf(fmt.Errorf("activate g: %w", tc.err)); got != tc.want {
			t.Errorf("%T %v: code %s, want %s", tc.err, tc.err, got, tc.want)
		}
	}
}
