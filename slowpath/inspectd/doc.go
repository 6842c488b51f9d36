// Package inspectd is slowpathd's live inspection service: the slow-path
// half of inline inspection. It takes the PUNT_BATCH frames of a binding,
// runs every held packet through the engine chain (packets of one flow in
// order and never concurrently, different flows in parallel on a fixed set
// of workers), and answers each with exactly one record of a VERDICT_BATCH.
// Alerts the engines raise are appended to the EVE file and sent to the
// fast path as EVENT_BATCH records, rate-limited.
//
// The service is a bindclient.Handler for punts: Bound and Unbound follow
// the binding, HandleFrame takes PUNT_BATCH frames (other types are left to
// the caller). Engine state outlives a binding; queued work of a dead binding
// is dropped (the fast path fails those packets itself).
package inspectd
