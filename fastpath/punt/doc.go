// Package punt is fastpathd's half of inline inspection: it takes the
// packets the datapath holds for deep inspection off the punt device, sends
// them to the slow path in batches, and on each verdict writes the packet
// back to where it was taken from, drops it, or answers its sender, in the
// order the flow sent them. When no verdict can be had, the guest's
// fail-open or fail-closed policy decides; nothing is held forever and
// nothing is delivered twice.
package punt
