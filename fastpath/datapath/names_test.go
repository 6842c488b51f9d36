package datapath

import (
	"testing"
	"unsafe"
)

// The Go names and sizes must follow the C: a counter added there and not
// here would shift every name after it.
func TestNamesAndSizesFollowTheC(t *testing.T) {
	if len(counterNames) != int(dpCounterC_COUNT) {
		t.Errorf("%d counter names, the C has %d counters", len(counterNames), dpCounterC_COUNT)
	}
	if len(dropReasonNames) != int(dpDropReasonDR_COUNT) {
		t.Errorf("%d drop reason names, the C has %d", len(dropReasonNames), dpDropReasonDR_COUNT)
	}
	if s := unsafe.Sizeof(dpConnKey{}); s != ConnKeySize {
		t.Errorf("conn key is %d bytes, ConnKeySize says %d", s, ConnKeySize)
	}
	if s := unsafe.Sizeof(dpConnVal{}); s != ConnValueSize {
		t.Errorf("conn value is %d bytes, ConnValueSize says %d", s, ConnValueSize)
	}
	if s := unsafe.Sizeof(dpDimVal{}); s != DimValueSize {
		t.Errorf("dim value is %d bytes, DimValueSize says %d", s, DimValueSize)
	}
	if s := unsafe.Sizeof(dpPuntMeta{}); s != PuntMetaSize {
		t.Errorf("punt metadata is %d bytes, PuntMetaSize says %d", s, PuntMetaSize)
	}
}
