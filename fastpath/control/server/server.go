package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/fastpath/control/api"
	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/fastpath/events"
	"github.com/palisade/palisade/fastpath/guests"
	"github.com/palisade/palisade/fastpath/heap"
	"github.com/palisade/palisade/fastpath/policy"
	"github.com/palisade/palisade/hypervisor/localapi"
)

// maxBody bounds a request: a 16,384-rule policy is a few megabytes.
const maxBody = 32 << 20

// Server serves the API.
type Server struct {
	Guests  *guests.Manager
	Events  *events.Aggregator
	Binding func() channel.BindingStatus
	// Heap reports the budget; PUT /v1/heap changes it through Guests,
	// which keeps the value across restarts.
	Heap func() (api.HeapReport, error)
	// Inspection reports the inline inspection path.
	Inspection func() api.InspectionStats
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
		respond(w, http.StatusOK, api.Deactivated{Guest: r.PathValue("id")}, err)
	})
	mux.HandleFunc("GET /v1/guests/{id}/stats", func(w http.ResponseWriter, r *http.Request) {
		st, err := s.Guests.Stats(r.PathValue("id"))
		respond(w, http.StatusOK, st, err)
	})
	mux.HandleFunc("GET /v1/guests/{id}/connections", func(w http.ResponseWriter, r *http.Request) {
		limit, err := intParam(r, "limit", 1000)
		if err != nil {
			writeError(w, api.ErrBadRequest, err)
			return
		}
		conns, err := s.Guests.Connections(r.PathValue("id"), limit)
		if conns == nil {
			conns = []api.Conn{}
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
	mux.HandleFunc("PUT /v1/heap", s.setHeap)
	mux.HandleFunc("GET /v1/events", func(w http.ResponseWriter, r *http.Request) {
		limit, err := intParam(r, "limit", 100)
		if err != nil {
			writeError(w, api.ErrBadRequest, err)
			return
		}
		recs := s.Events.Recent(r.URL.Query().Get("guest"), limit)
		if recs == nil {
			recs = []api.Event{}
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

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("request body: %w", err)
	}
	return body, nil
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	return nil
}

func (s *Server) activate(w http.ResponseWriter, r *http.Request) {
	var req api.ActivateRequest
	if err := readJSON(w, r, &req); err != nil {
		writeError(w, api.ErrBadRequest, err)
		return
	}
	if req.Guest == "" || req.VNIC == "" || len(req.Policy) == 0 {
		writeError(w, api.ErrBadRequest, errors.New("guest, vnic and policy are required"))
		return
	}
	p, err := policy.Parse(req.Policy)
	if err != nil {
		writeError(w, api.ErrInvalidPolicy, err)
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
	body, err := readBody(w, r)
	if err != nil {
		writeError(w, api.ErrBadRequest, err)
		return
	}
	p, err := policy.Parse(body)
	if err != nil {
		writeError(w, api.ErrInvalidPolicy, err)
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

func (s *Server) setHeap(w http.ResponseWriter, r *http.Request) {
	var req api.HeapRequest
	if err := readJSON(w, r, &req); err != nil {
		writeError(w, api.ErrBadRequest, err)
		return
	}
	max, err := api.ParseSize(req.Max)
	if err != nil {
		writeError(w, api.ErrBadRequest, err)
		return
	}
	if err := s.Guests.SetHeapMax(max); err != nil {
		respond(w, 0, nil, err)
		return
	}
	rep, err := s.Heap()
	respond(w, http.StatusOK, rep, err)
}

// respond writes v with status, or err with its code.
func respond(w http.ResponseWriter, status int, v any, err error) {
	if err != nil {
		writeError(w, codeOf(err), err)
		return
	}
	localapi.WriteJSON(w, status, v)
}

func writeError(w http.ResponseWriter, code api.Code, err error) {
	localapi.WriteError(w, code.Status(), string(code), err)
}

// codeOf maps the daemon's errors to the API's codes: the one place where
// they meet.
func codeOf(err error) api.Code {
	var perr *policy.Error
	var pool *datapath.PoolFullError
	var ex *heap.ExhaustedError
	var below *heap.BelowReservedError
	switch {
	case errors.As(err, &ex):
		return api.ErrHeapExhausted
	case errors.As(err, &below):
		return api.ErrHeapBelowReserved
	case errors.As(err, &perr):
		return api.ErrInvalidPolicy
	case errors.Is(err, guests.ErrNotFound):
		return api.ErrGuestNotFound
	case errors.Is(err, guests.ErrNoVNIC):
		return api.ErrVNICNotFound
	case errors.Is(err, guests.ErrAlreadyActive):
		return api.ErrAlreadyProtected
	case errors.Is(err, guests.ErrVNICInUse):
		return api.ErrVNICInUse
	case errors.Is(err, guests.ErrNoSlot):
		return api.ErrNoGuestSlot
	case errors.As(err, &pool):
		return api.ErrRuleSpaceFull
	}
	return api.ErrInternal
}
