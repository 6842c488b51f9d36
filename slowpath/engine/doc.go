// Package engine defines how the slow path's inspection engines judge punted
// packets: the Packet they see, the Verdict they return, and the Chain that
// runs several engines and keeps the most severe verdict. The fast path's
// hold-and-reinject machinery and the offline pcap mode both drive engines
// only through this interface.
package engine
