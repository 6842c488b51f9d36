package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

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

// logEvent logs one event with its JSON body's fields. A body that does not
// decode is logged as it came, with the error: the event itself is never
// dropped.
func (h *fastPathEvents) logEvent(r channel.EventRecord) {
	fields := logrus.Fields{"kind": r.Kind.String()}
	body, err := bodyFields(r.Body)
	if err != nil {
		fields["body"] = string(r.Body)
		fields[logrus.ErrorKey] = fmt.Sprintf("undecodable event body: %v", err)
	}
	for k, v := range body {
		fields[k] = v
	}
	if r.Kind == channel.EventGuestProtectionFailed {
		h.log.WithFields(fields).Error(fmt.Sprintf("slowpath event received: %d(out of memory, guest protection failed)", r.Kind))
		return
	}
	h.log.WithFields(fields).Info("slowpath event received")
}

// bodyFields decodes an event's JSON object into log fields. Its numbers
// keep their kind: a byte count is logged as the integer it is, not as the
// float64 that decoding into map[string]any makes of every number
// (free_bytes=4.126144e+06), which also rounds integers past 2^53.
func bodyFields(body []byte) (logrus.Fields, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	fields := make(logrus.Fields, len(m))
	for k, v := range m {
		fields[k] = plainNumbers(v)
	}
	return fields, nil
}

// plainNumbers turns the json.Numbers in v into int64, uint64 or float64,
// whichever holds the number exactly (in that order of preference).
func plainNumbers(v any) any {
	switch v := v.(type) {
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i
		}
		if u, err := strconv.ParseUint(v.String(), 10, 64); err == nil {
			return u
		}
		if f, err := v.Float64(); err == nil {
			return f
		}
		return v // out of float64's range: the digits as they came
	case map[string]any:
		for k, e := range v {
			v[k] = plainNumbers(e)
		}
	case []any:
		for i, e := range v {
			v[i] = plainNumbers(e)
		}
	}
	return v
}
