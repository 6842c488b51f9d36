package api

import "encoding/json"

// ActivateRequest protects a guest (POST /v1/guests).
type ActivateRequest struct {
	Guest  string          `json:"guest"`
	VNIC   string          `json:"vnic"`
	Policy json.RawMessage `json:"policy"` // a policy.Policy; the server parses it strictly
}

// HeapRequest changes the memory budget (PUT /v1/heap).
type HeapRequest struct {
	Max string `json:"max"` // "512MiB" or a byte count
}

// Deactivated answers DELETE /v1/guests/{id}.
type Deactivated struct {
	Guest string `json:"deactivated"`
}
