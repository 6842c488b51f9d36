package punt

import "github.com/palisade/palisade/fastpath/channel"

type counters struct {
	held, sent, batches, tapCopies, malformed        uint64
	reinjected, rejected, answers, droppedByVerdict  uint64
	offloads, blocks, late, writeErrors, congestions uint64
	tapVerdicts, tapWouldDrop                        uint64
	flowDecisionErrors, malformedEvents              uint64
	verdicts                                         [4]uint64 // by channel.Action
	failOpen, failClosed                             map[string]uint64
}

// Stats are the engine's counters, for `fastpathd inspection`.
type Stats struct {
	Held             uint64            `json:"held"`
	Sent             uint64            `json:"sent_to_slow_path"`
	Batches          uint64            `json:"punt_batches"`
	TapCopies        uint64            `json:"tap_copies"`
	Reinjected       uint64            `json:"reinjected"`
	Rejected         uint64            `json:"rejected"`
	RejectsAnswered  uint64            `json:"rejects_answered"`
	DroppedByVerdict uint64            `json:"dropped_by_verdict"`
	Verdicts         map[string]uint64 `json:"verdicts"`
	Offloads         uint64            `json:"flows_offloaded"`
	Blocks           uint64            `json:"flows_blocked"`
	Late             uint64            `json:"late_verdicts"`
	TapVerdicts      uint64            `json:"tap_verdicts"`
	TapWouldDrop     uint64            `json:"tap_would_drop"`
	FailOpen         map[string]uint64 `json:"fail_open"`   // passed uninspected, by why
	FailClosed       map[string]uint64 `json:"fail_closed"` // dropped uninspected, by why
	Pending          int               `json:"pending"`
	PendingBytes     int               `json:"pending_bytes"`
	Malformed        uint64            `json:"malformed"`
	WriteErrors      uint64            `json:"write_errors"`
	Congestions      uint64            `json:"congestions"` // times a guest reached its bound and the datapath shed
	// Offload or block decisions the datapath could not be told (the flow
	// stays punted until one of its packets tries again).
	FlowDecisionErrors uint64 `json:"flow_decision_errors"`
	MalformedEvents    uint64 `json:"malformed_events"` // slow-path events not understood
	Bound              bool   `json:"slow_path_bound"`
}

// Stats snapshots the counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := &e.c
	st := Stats{Held: c.held, Sent: c.sent, Batches: c.batches, TapCopies: c.tapCopies, Reinjected: c.reinjected,
		Rejected: c.rejected, RejectsAnswered: c.answers, DroppedByVerdict: c.droppedByVerdict, Offloads: c.offloads,
		Blocks: c.blocks, Late: c.late, TapVerdicts: c.tapVerdicts, TapWouldDrop: c.tapWouldDrop,
		Pending: len(e.byID), PendingBytes: e.totalBytes, Malformed: c.malformed, WriteErrors: c.writeErrors, Congestions: c.congestions,
		FlowDecisionErrors: c.flowDecisionErrors, MalformedEvents: c.malformedEvents,
		Bound: e.sess.Load() != nil, Verdicts: map[string]uint64{}, FailOpen: map[string]uint64{}, FailClosed: map[string]uint64{}}
	for a := channel.ActionAllow; a <= channel.ActionReject; a++ {
		st.Verdicts[a.String()] = c.verdicts[a]
	}
	for k, v := range c.failOpen {
		st.FailOpen[k] = v
	}
	for k, v := range c.failClosed {
		st.FailClosed[k] = v
	}
	return st
}
