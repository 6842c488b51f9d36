// Package inspectd is slowpathd's live inspection service: it takes a
// binding's PUNT_BATCH frames, runs every held packet through the engine
// chain (one flow's packets in order on one worker, flows in parallel), and
// answers each with exactly one VERDICT_BATCH record. Alerts go to the EVE
// file and, rate-limited, to the fast path as EVENT_BATCH records; queued
// work of a lost binding is dropped, since the fast path fails those packets
// itself.
package inspectd
