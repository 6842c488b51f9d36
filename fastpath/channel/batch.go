package channel

import (
	"fmt"
)

// Direction is where a packet was going on the guest's vNIC.
type Direction uint8

const (
	FromGuest Direction = 1 // leaving the guest (TC ingress on the host-side vNIC)
	ToGuest   Direction = 2 // entering the guest (TC egress on the host-side vNIC)
)

func (d Direction) String() string {
	switch d {
	case FromGuest:
		return "from-guest"
	case ToGuest:
		return "to-guest"
	}
	return fmt.Sprintf("direction(%d)", uint8(d))
}

// Punt flags.
const (
	PuntTapCopy uint8 = 1 << 0 // the packet was already delivered (tap mode): verdicts only report
)

// maxBatch bounds the record count of one batch frame.
const maxBatch = 4096

// PuntRecord is one held packet sent for inspection. Data is the whole L2
// frame as seen on the vNIC; after decoding it aliases the frame payload.
type PuntRecord struct {
	Guest     uint32
	Direction Direction
	Flags     uint8
	FlowID    uint64
	PacketID  uint64
	Data      []byte
}

const puntRecordHeader = 4 + 1 + 1 + 8 + 8 + 4

// PuntRecordSize is the encoded size of r, for batching to a frame budget.
func PuntRecordSize(r PuntRecord) int { return puntRecordHeader + len(r.Data) }

// AppendPuntBatch encodes recs as one PUNT_BATCH payload.
func AppendPuntBatch(b []byte, recs []PuntRecord) ([]byte, error) {
	if len(recs) > maxBatch {
		return b, fmt.Errorf("PUNT_BATCH of %d records exceeds %d", len(recs), maxBatch)
	}
	b = appendU16(b, uint16(len(recs)))
	for _, r := range recs {
		if r.Direction != FromGuest && r.Direction != ToGuest {
			return b, fmt.Errorf("PUNT_BATCH packet %d: invalid %s", r.PacketID, r.Direction)
		}
		b = appendU32(b, r.Guest)
		b = append(b, byte(r.Direction), r.Flags)
		b = appendU64(b, r.FlowID)
		b = appendU64(b, r.PacketID)
		b = appendU32(b, uint32(len(r.Data)))
		b = append(b, r.Data...)
	}
	return b, nil
}

// DecodePuntBatch calls fn for every record of a PUNT_BATCH payload. It
// validates the whole payload before the first call, so a malformed batch
// delivers nothing.
func DecodePuntBatch(p []byte, fn func(PuntRecord) error) error {
	if err := walkPuntBatch(p, nil); err != nil {
		return err
	}
	return walkPuntBatch(p, fn)
}

func walkPuntBatch(p []byte, fn func(PuntRecord) error) error {
	r := newWireReader("PUNT_BATCH", p)
	n := int(r.u16("count"))
	if n > maxBatch {
		return protoErr("PUNT_BATCH: %d records exceeds %d", n, maxBatch)
	}
	for i := 0; i < n && r.err == nil; i++ {
		var rec PuntRecord
		rec.Guest = r.u32("guest")
		rec.Direction = Direction(r.u8("direction"))
		rec.Flags = r.u8("flags")
		rec.FlowID = r.u64("flow id")
		rec.PacketID = r.u64("packet id")
		rec.Data = r.take(int(r.u32("length")), "packet data")
		if r.err != nil {
			break
		}
		if rec.Direction != FromGuest && rec.Direction != ToGuest {
			return protoErr("PUNT_BATCH record %d: invalid %s", i, rec.Direction)
		}
		if fn != nil {
			if err := fn(rec); err != nil {
				return err
			}
		}
	}
	return r.done()
}

// Action is a verdict on one held packet.
type Action uint8

const (
	ActionAllow  Action = 1 // deliver the packet unchanged
	ActionDrop   Action = 2 // discard it silently
	ActionReject Action = 3 // discard it and answer the sender (TCP RST / ICMP unreachable)
)

func (a Action) String() string {
	switch a {
	case ActionAllow:
		return "allow"
	case ActionDrop:
		return "drop"
	case ActionReject:
		return "reject"
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// FlowDecision changes how the kernel treats the rest of a flow.
type FlowDecision uint8

const (
	FlowKeepInspecting FlowDecision = 0
	FlowOffload        FlowDecision = 1 // the rest of the flow bypasses inspection in the kernel
	FlowBlock          FlowDecision = 2 // the rest of the flow is dropped in the kernel
)

func (d FlowDecision) String() string {
	switch d {
	case FlowKeepInspecting:
		return "inspect"
	case FlowOffload:
		return "offload"
	case FlowBlock:
		return "block"
	}
	return fmt.Sprintf("flow-decision(%d)", uint8(d))
}

// VerdictRecord answers one PuntRecord.
type VerdictRecord struct {
	Guest    uint32
	FlowID   uint64
	PacketID uint64
	Action   Action
	Flow     FlowDecision
	// Reply, with ActionReject, is the L3 packet to send the sender instead
	// of the default TCP reset or ICMP unreachable (a web-reputation block
	// page). At most maxReply bytes.
	Reply []byte
}

const (
	verdictRecordHeader = 4 + 8 + 8 + 1 + 1 + 2
	maxReply            = 16 << 10
)

// AppendVerdictBatch encodes recs as one VERDICT_BATCH payload.
func AppendVerdictBatch(b []byte, recs []VerdictRecord) ([]byte, error) {
	if len(recs) > maxBatch {
		return b, fmt.Errorf("VERDICT_BATCH of %d records exceeds %d", len(recs), maxBatch)
	}
	b = appendU16(b, uint16(len(recs)))
	for _, r := range recs {
		if len(r.Reply) > maxReply {
			return b, fmt.Errorf("VERDICT_BATCH packet %d: reply of %d bytes exceeds %d", r.PacketID, len(r.Reply), maxReply)
		}
		b = appendU32(b, r.Guest)
		b = appendU64(b, r.FlowID)
		b = appendU64(b, r.PacketID)
		b = append(b, byte(r.Action), byte(r.Flow))
		b = appendU16(b, uint16(len(r.Reply)))
		b = append(b, r.Reply...)
	}
	return b, nil
}

// DecodeVerdictBatch decodes a VERDICT_BATCH payload, validating every
// record before returning any. Replies alias p.
func DecodeVerdictBatch(p []byte, out []VerdictRecord) ([]VerdictRecord, error) {
	r := newWireReader("VERDICT_BATCH", p)
	n := int(r.u16("count"))
	if n > maxBatch {
		return out, protoErr("VERDICT_BATCH: %d records exceeds %d", n, maxBatch)
	}
	start := len(out)
	for i := 0; i < n && r.err == nil; i++ {
		v := VerdictRecord{Guest: r.u32("guest"), FlowID: r.u64("flow id"), PacketID: r.u64("packet id"),
			Action: Action(r.u8("action")), Flow: FlowDecision(r.u8("flow decision"))}
		size := int(r.u16("reply length"))
		if r.err == nil && size > maxReply {
			return out[:start], protoErr("VERDICT_BATCH record %d: reply of %d bytes exceeds %d", i, size, maxReply)
		}
		if size > 0 {
			v.Reply = r.take(size, "reply")
		}
		if r.err != nil {
			break
		}
		if v.Action < ActionAllow || v.Action > ActionReject {
			return out[:start], protoErr("VERDICT_BATCH record %d: invalid %s", i, v.Action)
		}
		if v.Flow > FlowBlock {
			return out[:start], protoErr("VERDICT_BATCH record %d: invalid %s", i, v.Flow)
		}
		if len(v.Reply) > 0 && v.Action != ActionReject {
			return out[:start], protoErr("VERDICT_BATCH record %d: a reply with %s", i, v.Action)
		}
		out = append(out, v)
	}
	if err := r.done(); err != nil {
		return out[:start], err
	}
	return out, nil
}

// EventKind says what an event's JSON body is.
type EventKind uint16

const (
	EventAlert                 EventKind = 1 // an IPS or web-reputation alert, as an EVE JSON record
	EventGuestProtectionFailed EventKind = 2 // a guest could not be protected (e.g. out of memory)
	EventEngineStatus          EventKind = 3 // an inspection engine changed state
	maxEventBody                         = 64 << 10
)

func (k EventKind) String() string {
	switch k {
	case EventAlert:
		return "alert"
	case EventGuestProtectionFailed:
		return "guest-protection-failed"
	case EventEngineStatus:
		return "engine-status"
	}
	return fmt.Sprintf("event(%d)", uint16(k))
}

// EventRecord is one event. Body is JSON; its schema depends on Kind and is
// in docs/protocol.md.
type EventRecord struct {
	Kind     EventKind
	Guest    uint32
	UnixNano int64
	Body     []byte
}

// AppendEventBatch encodes recs as one EVENT_BATCH payload.
func AppendEventBatch(b []byte, recs []EventRecord) ([]byte, error) {
	if len(recs) > maxBatch {
		return b, fmt.Errorf("EVENT_BATCH of %d records exceeds %d", len(recs), maxBatch)
	}
	b = appendU16(b, uint16(len(recs)))
	for _, r := range recs {
		if len(r.Body) > maxEventBody {
			return b, fmt.Errorf("EVENT_BATCH %s body of %d bytes exceeds %d", r.Kind, len(r.Body), maxEventBody)
		}
		b = appendU16(b, uint16(r.Kind))
		b = appendU32(b, r.Guest)
		b = appendU64(b, uint64(r.UnixNano))
		b = appendU32(b, uint32(len(r.Body)))
		b = append(b, r.Body...)
	}
	return b, nil
}

// DecodeEventBatch decodes an EVENT_BATCH payload. Bodies alias p.
func DecodeEventBatch(p []byte, out []EventRecord) ([]EventRecord, error) {
	r := newWireReader("EVENT_BATCH", p)
	n := int(r.u16("count"))
	if n > maxBatch {
		return out, protoErr("EVENT_BATCH: %d records exceeds %d", n, maxBatch)
	}
	for i := 0; i < n && r.err == nil; i++ {
		e := EventRecord{Kind: EventKind(r.u16("kind")), Guest: r.u32("guest"), UnixNano: int64(r.u64("time"))}
		size := int(r.u32("body length"))
		if r.err == nil && size > maxEventBody {
			return out, protoErr("EVENT_BATCH record %d: body of %d bytes exceeds %d", i, size, maxEventBody)
		}
		e.Body = r.take(size, "body")
		if r.err == nil {
			out = append(out, e)
		}
	}
	return out, r.done()
}
