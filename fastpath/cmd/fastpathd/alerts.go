package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/palisade/palisade/fastpath/bindserver"
	"github.com/palisade/palisade/fastpath/channel"
	"github.com/palisade/palisade/fastpath/events"
	"github.com/palisade/palisade/fastpath/heap"
)

// noteAlert is the inspection engine's Events: each of the slow path's
// alerts becomes an event. One whose body cannot be read is still noted (the
// guest had an alert), and its error goes back to the engine, which counts
// and logs it.
func noteAlert(note func(events.Record), name events.Namer) func(channel.EventRecord) error {
	return func(r channel.EventRecord) error {
		rec, err := alertRecord(name, r)
		note(rec)
		return err
	}
}

// eveAlert is what an event needs of an EVE JSON alert record.
type eveAlert struct {
	Proto    string `json:"proto"`
	SrcIP    string `json:"src_ip"`
	DestIP   string `json:"dest_ip"`
	DestPort uint16 `json:"dest_port"`
	Alert    struct {
		Action    string `json:"action"`
		SID       uint32 `json:"signature_id"`
		Signature string `json:"signature"`
	} `json:"alert"`
}

var ipProtocols = map[string]uint8{"ICMP": 1, "TCP": 6, "UDP": 17, "IPV6-ICMP": 58}

// alertRecord turns a slow-path alert (an EVE JSON record) into an event;
// a body that is not one gives the event with what the frame says (guest,
// kind, time) and an error.
func alertRecord(name events.Namer, r channel.EventRecord) (events.Record, error) {
	t := time.Unix(0, r.UnixNano)
	rec := events.Record{Guest: name(r.Guest), Kind: r.Kind.String(), Count: 1, First: t, Last: t}
	var eve eveAlert
	if err := json.Unmarshal(r.Body, &eve); err != nil {
		rec.Message = "malformed alert (see fastpathd's log)"
		return rec, fmt.Errorf("%s for guest %s: EVE JSON: %w", r.Kind, rec.Guest, err)
	}
	rec.RuleID, rec.Proto, rec.Src, rec.Dst, rec.Dport = eve.Alert.SID, ipProtocols[eve.Proto], eve.SrcIP, eve.DestIP, eve.DestPort
	rec.Message = fmt.Sprintf("%s: %s", eve.Alert.Action, eve.Alert.Signature)
	return rec, nil
}

// refusalQueue bounds the refused guests waiting to be reported: one comes
// per refused activation or policy change, and reportRefusals takes them as
// long as fastpathd runs.
const refusalQueue = 64

// queueRefusal is the guest manager's OnProtectionFailed. The manager exists
// before the events and the binding a refusal is reported to, so refusals
// wait in q until reportRefusals takes them; the manager is never held up.
func queueRefusal(q chan<- *heap.ExhaustedError, log logrus.FieldLogger) func(*heap.ExhaustedError) {
	return func(ex *heap.ExhaustedError) {
		select {
		case q <- ex:
		default:
			// The manager has logged the refusal itself; only the
			// report is lost.
			log.WithField("guest", ex.Guest).Warn("guest protection failure not reported to the events and the slow path: too many at once")
		}
	}
}

// reportRefusals notes every refused guest in the events and tells the slow
// path, until ctx ends.
func reportRefusals(ctx context.Context, q <-chan *heap.ExhaustedError, note func(events.Record),
	publish func(...channel.EventRecord) error, log logrus.FieldLogger) {
	for {
		select {
		case <-ctx.Done():
			return
		case ex := <-q:
			reportRefusal(ex, note, publish, log)
		}
	}
}

// refusalBody is a guest-protection-failed event's body on the binding.
type refusalBody struct {
	Guest     string `json:"guest"`
	NeedBytes uint64 `json:"need_bytes"`
	FreeBytes uint64 `json:"free_bytes"`
	MaxBytes  uint64 `json:"max_bytes"`
	Message   string `json:"message"`
}

func reportRefusal(ex *heap.ExhaustedError, note func(events.Record), publish func(...channel.EventRecord) error, log logrus.FieldLogger) {
	now := time.Now()
	note(events.Record{Guest: ex.Guest, Kind: "guest_protection_failed", Message: ex.Error(), Count: 1, First: now, Last: now})
	body, err := json.Marshal(refusalBody{Guest: ex.Guest, NeedBytes: ex.Need, FreeBytes: ex.Free, MaxBytes: ex.Max,
		Message: "out of memory, guest protection failed"})
	if err == nil {
		err = publish(channel.EventRecord{Kind: channel.EventGuestProtectionFailed, UnixNano: now.UnixNano(), Body: body})
	}
	// A slow path without the events capability is logged once per
	// binding by the server itself.
	if err != nil && !errors.Is(err, bindserver.ErrNoEvents) {
		log.WithError(err).WithField("guest", ex.Guest).Warn("could not tell the slow path that guest protection failed")
	}
}
