// Package slowpath is the appliance half of Palisade: slowpathd, its binding
// to the host's fast path, and the deep-inspection engines behind it.
package slowpath
