// Package inspecttest is a fast path for tests of live inspection: a real
// bindserver whose handler sends PUNT_BATCH frames and collects the
// VERDICT_BATCH and EVENT_BATCH frames a slow path answers with.
package inspecttest
