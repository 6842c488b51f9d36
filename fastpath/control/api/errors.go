package api

import (
	"fmt"
	"net/http"
)

// Code says why a request failed: the "code" of every error answer
// ({"error": "…", "code": "…"}). A Code is an error, so a caller branches
// with errors.Is(err, api.ErrGuestNotFound) on what the client returns.
type Code string

// The codes fastpathd answers with; Status gives each one's HTTP status.
const (
	ErrBadRequest        Code = "bad_request"         // malformed body or parameter
	ErrInvalidPolicy     Code = "invalid_policy"      // the policy names the rule index, id and field at fault
	ErrGuestNotFound     Code = "guest_not_found"     // no such protected guest
	ErrVNICNotFound      Code = "vnic_not_found"      // no such interface on the host
	ErrAlreadyProtected  Code = "already_protected"   // the guest is protected already
	ErrVNICInUse         Code = "vnic_in_use"         // the vNIC protects another guest
	ErrHeapBelowReserved Code = "heap_below_reserved" // the budget cannot shrink under what is reserved
	ErrNoGuestSlot       Code = "no_guest_slot"       // every guest slot is in use
	ErrHeapExhausted     Code = "heap_exhausted"      // the guest or policy change does not fit the budget
	ErrRuleSpaceFull     Code = "rule_space_full"     // the shared rule pools are full
	ErrInternal          Code = "internal"            // a kernel operation or the state file failed
)

func (c Code) Error() string { return string(c) }

// Status is the HTTP status of an answer with code c.
func (c Code) Status() int {
	switch c {
	case ErrBadRequest, ErrInvalidPolicy:
		return http.StatusBadRequest
	case ErrGuestNotFound, ErrVNICNotFound:
		return http.StatusNotFound
	case ErrAlreadyProtected, ErrVNICInUse, ErrHeapBelowReserved:
		return http.StatusConflict
	case ErrNoGuestSlot:
		return http.StatusServiceUnavailable
	case ErrHeapExhausted, ErrRuleSpaceFull:
		return http.StatusInsufficientStorage
	}
	return http.StatusInternalServerError
}

// Error is a non-2xx answer as the client returns it. It unwraps to its
// Code, so errors.Is(err, api.ErrHeapExhausted) holds for a refused guest.
type Error struct {
	Status  int    // HTTP status
	Code    Code   // empty when the answer carried none (an unknown route)
	Message string // the server's error text
}

func (e *Error) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("%s (%s, HTTP %d)", e.Message, e.Code, e.Status)
	}
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
}

// Unwrap returns the code, for errors.Is.
func (e *Error) Unwrap() error {
	if e.Code == "" {
		return nil
	}
	return e.Code
}
