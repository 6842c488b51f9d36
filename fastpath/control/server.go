package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/fastpath/events"
	"github.com/palisade/palisade/fastpath/guests"
	"github.com/palisade/palisade/fastpath/heap"
	"github.com/palisade/palisade/fastpath/policy"
	"github.com/palisade/palisade/fastpath/punt"
	"github.com/palisade/palisade/hypervisor/localapi"
)

// maxBody bounds a request: a 16,384-rule policy is a few megabytes.
const maxBody = 32 << 20

// ActivateRequest protects a guest.
type ActivateRequest struct {
	Guest  string          `json:"guest"`
	VNIC   string          `json:"vnic"`
	Policy json.RawMessage `json:"policy"`
}

// Server serves the API.
type Server struct {
	Guests  *guests.Manager
	Events  *events.Aggregator
	Binding func() channel.BindingStatus
	Heap    func() (heap.Report, error)
	SetHeap func(max uint64) error
	// Inspection reports the inline inspection path.
	Inspection func() punt.Stats
}

// HeapRequest changes the budget.
type HeapRequest struct {
	Max string `json:"max"` // "512MiB" or a byte count
}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		localapi.WriteJSON(w, http.StatusOK, s.Binding())
	})
	mux.HandleFunc("GET /v1/guests", func(w http.ResponseWriter, _ *http.Request) {
		localapi.WriteJSON(w, http.StatusOK, s.Guests.List())
	})
	mux.HandleFunc("POST /v1/guests", s.activate)
	mux.HandleFunc("GET /v1/guests/{id}", func(w http.ResponseWriter, r *http.Request) {
		st, err := s.Guests.Get(r.PathValue("id"))
		respond(w, http.StatusOK, st, err)
	})
	mux.HandleFunc("GET /v1/guests/{id}/policy", func(w http.ResponseWriter, r *http.Request) {
		p, err := s.Guests.Policy(r.PathValue("id"))
		respond(w, http.StatusOK, p, err)
	})
	mux.HandleFunc("PUT /v1/guests/{id}/policy", s.updatePolicy)
	mux.HandleFunc("DELETE /v1/guests/{id}", func(w http.ResponseWriter, r *http.Request) {
		err := s.Guests.Deactivate(r.PathValue("id"))
		respond(w, http.StatusOK, map[string]string{"deactivated": r.PathValue("id")}, err)
	})
	mux.HandleFunc("GET /v1/guests/{id}/stats", func(w http.ResponseWriter, r *http.Request) {
		st, err := s.Guests.Stats(r.PathValue("id"))
		respond(w, http.StatusOK, st, err)
	})
	mux.HandleFunc("GET /v1/guests/{id}/connections", func(w http.ResponseWriter, r *http.Request) {
		limit, err := intParam(r, "limit", 1000)
		if err != nil {
			localapi.WriteError(w, http.StatusBadRequest, "bad_request", err)
			return
		}
		conns, err := s.Guests.Connections(r.PathValue("id"), limit)
		if conns == nil {
			conns = []datapath.Conn{}
		}
		respond(w, http.StatusOK, conns, err)
	})
	mux.HandleFunc("GET /v1/inspection", func(w http.ResponseWriter, _ *http.Request) {
		localapi.WriteJSON(w, http.StatusOK, s.Inspection())
	})
	mux.HandleFunc("GET /v1/heap", func(w http.ResponseWriter, _ *http.Request) {
		r, err := s.Heap()
		respond(w, http.StatusOK, r, err)
	})
	mux.HandleFunc("PUT /v1/heap", func(w http.ResponseWriter, r *http.Request) {
		var req HeapRequest
		if err := readJSON(w, r, &req); err != nil {
			localapi.WriteError(w, http.StatusBadRequest, "bad_request", err)
			return
		}
		max, err := heap.ParseSize(req.Max)
		if err != nil {
			localapi.WriteError(w, http.StatusBadRequest, "bad_request", err)
			return
		}
		if err := s.SetHeap(max); err != nil {
			respond(w, 0, nil, err)
			return
		}
		rep, err := s.Heap()
		respond(w, http.StatusOK, rep, err)
	})
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		limit, err := intParam(r, "limit", 100)
		if err != nil {
			localapi.WriteError(w, http.StatusBadRequest, "bad_request", err)
			return
		}
		recs := s.Events.Recent(r.URL.Query().Get("guest"), limit)
		if recs == nil {
			recs = []events.Record{}
		}
		localapi.WriteJSON(w, http.StatusOK, recs)
	})
	return mux
}

func intParam(r *http.Request, name string, def int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s=%q: want a non-negative number", name, v)
	}
	return n, nil
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	return nil
}

func (s *Server) activate(w http.ResponseWriter, r *http.Request) {
	var req ActivateRequest
	if err := readJSON(w, r, &req); err != nil {
		localapi.WriteError(w, http.StatusBadRequest, "bad_request", err)
		return
	}
	if req.Guest == "" || req.VNIC == "" || len(req.Policy) == 0 {
		localapi.WriteError(w, http.StatusBadRequest, "bad_request", errors.New("guest, vnic and policy are required"))
		return
	}
	p, err := policy.Parse(req.Policy)
	if err != nil {
		localapi.WriteError(w, http.StatusBadRequest, "invalid_policy", err)
		return
	}
	if err := s.Guests.Activate(req.Guest, req.VNIC, p); err != nil {
		respond(w, 0, nil, err)
		return
	}
	st, err := s.Guests.Get(req.Guest)
	respond(w, http.StatusCreated, st, err)
}

func (s *Server) updatePolicy(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		localapi.WriteError(w, http.StatusBadRequest, "bad_request", err)
		return
	}
	p, err := policy.Parse(body)
	if err != nil {
		localapi.WriteError(w, http.StatusBadRequest, "invalid_policy", err)
		return
	}
	id := r.PathValue("id")
	if err := s.Guests.UpdatePolicy(id, p); err != nil {
		respond(w, 0, nil, err)
		return
	}
	st, err := s.Guests.Get(id)
	respond(w, http.StatusOK, st, err)
}

// respond writes v with status, or err mapped to its status and code.
func respond(w http.ResponseWriter, status int, v any, err error) {
	if err == nil {
		localapi.WriteJSON(w, status, v)
		return
	}
	var perr *policy.Error
	var pool *datapath.PoolFullError
	var ex *heap.ExhaustedError
	var below *heap.BelowReservedError
	switch {
	case errors.As(err, &ex):
		localapi.WriteError(w, http.StatusInsufficientStorage, "heap_exhausted", err)
	case errors.As(err, &below):
		localapi.WriteError(w, http.StatusConflict, "heap_below_reserved", err)
	case errors.As(err, &perr):
		localapi.WriteError(w, http.StatusBadRequest, "invalid_policy", err)
	case errors.Is(err, guests.ErrNotFound):
		localapi.WriteError(w, http.StatusNotFound, "guest_not_found", err)
	case errors.Is(err, guests.ErrNoVNIC):
		localapi.WriteError(w, http.StatusNotFound, "vnic_not_found", err)
	case errors.Is(err, guests.ErrAlreadyActive):
		localapi.WriteError(w, http.StatusConflict, "already_protected", err)
	case errors.Is(err, guests.ErrVNICInUse):
		localapi.WriteError(w, http.StatusConflict, "vnic_in_use", err)
	case errors.Is(err, guests.ErrNoSlot):
		localapi.WriteError(w, http.StatusServiceUnavailable, "no_guest_slot", err)
	case errors.As(err, &pool):
		localapi.WriteError(w, http.StatusInsufficientStorage, "rule_space_full", err)
	default:
		localapi.WriteError(w, http.StatusInternalServerError, "internal", err)
	}
}
