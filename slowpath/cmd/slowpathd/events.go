package main

import (
	"encoding/json"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/palisade/palisade/fastpath/channel"
)

// fastPathEvents logs what the fast path reports over the binding, above
// all guests it could not protect (seed 000: "slowpath event received:
// 1(out of memory, guest protection failed)").
type fastPathEvents struct {
	log logrus.FieldLogger
}

func (h *fastPathEvents) Bound(*channel.Session, channel.Result) {}
func (h *fastPathEvents) Unbound(error)                          {}

func (h *fastPathEvents) HandleFrame(f channel.Frame) error {
	switch f.Type {
	case channel.TypeEventBatch:
		recs, err := channel.DecodeEventBatch(f.Payload, nil)
		if err != nil {
			return err
		}
		for _, r := range recs {
			h.logEvent(r)
		}
	case channel.TypePuntBatch:
		// Validated so a malformed batch still ends the session; the
		// inspection path consumes punts once it is wired in.
		return channel.DecodePuntBatch(f.Payload, func(channel.PuntRecord) error { return nil })
	}
	return nil
}

func (h *fastPathEvents) logEvent(r channel.EventRecord) {
	var body map[string]any
	_ = json.Unmarshal(r.Body, &body)
	fields := logrus.Fields{"kind": r.Kind.String()}
	for k, v := range body {
		fields[k] = v
	}
	if r.Kind == channel.EventGuestProtectionFailed {
		h.log.WithFields(fields).Error(fmt.Sprintf("slowpath event received: %d(out of memory, guest protection failed)", r.Kind))
		return
	}
	h.log.WithFields(fields).Info("slowpath event received")
}
