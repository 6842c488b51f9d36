// Package wait is how every Palisade test waits: for a condition, polled,
// with one generous limit that only a broken system reaches. Tests never
// sleep and then assert, and never bound how long something took: a slow
// machine makes them slower, not red.
package wait
