package api

import (
	"time"

	"github.com/palisade/palisade/fastpath/policy"
)

// HeapReport is the memory budget (GET and PUT /v1/heap).
type HeapReport struct {
	Max         uint64        `json:"max_bytes"`
	Reserved    uint64        `json:"reserved_bytes"`
	Free        uint64        `json:"free_bytes"`
	Base        uint64        `json:"datapath_base_bytes"`
	Reserve     uint64        `json:"migration_reserve_bytes"`
	Guests      []Reservation `json:"guests"`
	Failures    uint64        `json:"failed_reservations"`
	LastFailure *HeapFailure  `json:"last_failure,omitempty"`
	// KernelReserved is the part of Reserved the kernel accounts for;
	// KernelMeasured is what the kernel reports in use for all of the
	// datapath's maps. They agree when the accounting is right.
	KernelReserved uint64    `json:"kernel_reserved_bytes"`
	KernelMeasured uint64    `json:"kernel_measured_bytes"`
	Costs          HeapCosts `json:"costs"`
}

// Reservation is what one guest uses of the budget.
type Reservation struct {
	Guest       string `json:"guest"`
	TCPTable    uint64 `json:"tcp_table_bytes"`
	UDPTable    uint64 `json:"udp_table_bytes"`
	Rules       uint64 `json:"rule_bytes"`
	PuntBuffers uint64 `json:"punt_buffer_bytes"`
	VNICEntry   uint64 `json:"vnic_entry_bytes"`
	TrieEntries int    `json:"trie_entries"`
	MaxTCP      uint32 `json:"max_tcp_connections"`
	MaxUDP      uint32 `json:"max_udp_connections"`
	Total       uint64 `json:"total_bytes"`
	KernelShare uint64 `json:"kernel_bytes"` // the part the kernel accounts for (all but punt buffers)
}

// HeapFailure records a refused reservation.
type HeapFailure struct {
	Guest string    `json:"guest"`
	Need  uint64    `json:"need_bytes"`
	Free  uint64    `json:"free_bytes"`
	At    time.Time `json:"at"`
}

// HeapCosts are what the kernel charges for the datapath's structures, as
// fastpathd measured them at start.
type HeapCosts struct {
	// A connection table of capacity n costs
	// TableFixed + n*EntryBytes + pow2(n)*BucketBytes: the kernel's hash
	// map has one bucket per power of two at or above its capacity.
	TableFixed  uint64 `json:"table_fixed_bytes"`
	EntryBytes  uint64 `json:"entry_bytes"`
	BucketBytes uint64 `json:"bucket_bytes"`
	// Classification-trie entries cost DimEntryBytes[dim] each.
	DimEntryBytes [policy.NumDims]uint64 `json:"dim_entry_bytes"`
	// A protected vNIC's configuration entry.
	VNICEntryBytes uint64 `json:"vnic_entry_bytes"`
	// Userspace: each guest that sends flows to the slow path may hold
	// PuntQueue packets of up to PuntPacketBytes in fastpathd.
	PuntQueue       uint64 `json:"punt_queue_packets"`
	PuntPacketBytes uint64 `json:"punt_packet_bytes"`
}
