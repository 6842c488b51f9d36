// Package events turns the datapath's per-packet reports into what an
// operator can read: identical events within a window are folded into one
// record with a count, a bounded history is kept for the control API, and
// each folded record is logged once.
package events
