package main

import (
	"encoding/json"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/palisade/palisade/fastpath/channel"
)

// fastPathEvents is slowpathd's binding handler: it logs what the fast
// path reports over the binding, above all guests it could not protect
// (seed 000: "slowpath event received: 1(out of memory, guest protection
// failed)"), and hands punts to live inspection.
type fastPathEvents struct {
	log   logrus.FieldLogger
	punts channel.Handler
}

func (h *fastPathEvents) Bound(s *channel.Session, r channel.Result) { h.punts.Bound(s, r) }
func (h *fastPathEvents) Unbound(reason error)                       { h.punts.Unbound(reason) }

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
		return h.punts.HandleFrame(f)
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
