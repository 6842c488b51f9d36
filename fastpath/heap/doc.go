// Package heap is fastpathd's memory budget: it measures from the kernel
// what each kind of datapath structure really costs, computes what a guest
// will use before anything is created for it, and admits or refuses the
// guest against the budget, so running out fails one activation cleanly
// instead of random guests.
package heap
