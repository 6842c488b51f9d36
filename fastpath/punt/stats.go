package punt

import (
	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/fastpath/control/api"
)

type counters struct {
	held, sent, batches, tapCopies, malformed        uint64
	reinjected, rejected, answers, droppedByVerdict  uint64
	offloads, blocks, late, writeErrors, congestions uint64
	tapVerdicts, tapWouldDrop                        uint64
	flowDecisionErrors, malformedEvents              uint64
	verdicts                                         [4]uint64 // by channel.Action
	failOpen, failClosed                             map[string]uint64
}

// Stats are the engine's counters, for `fastpathd inspection`. Their shape
// is the control API's (defined once, in fastpath/control/api).
type Stats = api.InspectionStats

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
