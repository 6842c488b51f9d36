package heap

import (
	"testing"

	"github.com/palisade/palisade/fastpath/datapath"
	"github.com/palisade/palisade/hypervisor/lab"
)

// TestCostModelPredictsTheKernel creates connection tables of many sizes and
// checks that the measured model gives exactly what the kernel reports.
func TestCostModelPredictsTheKernel(t *testing.T) {
	lab.NeedRoot(t, "to create BPF maps")
	c, err := Measure()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("entry %d B, bucket %d B, table fixed %d B, vNIC entry %d B, trie entries %v B",
		c.EntryBytes, c.BucketBytes, c.TableFixed, c.VNICEntryBytes, c.DimEntryBytes)
	if c.EntryBytes < uint64(datapath.ConnKeySize+datapath.ConnValueSize) {
		t.Fatalf("entry cost %d is below key+value size", c.EntryBytes)
	}
	for _, n := range []uint32{1, 100, 1000, 5000, 10000, 65536, 100000} {
		found, err := probeTable(datapath.TableCapacity(n))
		if err != nil {
			t.Fatal(err)
		}
		if want := c.Table(n); want != found {
			t.Errorf("table for %d connections: model %d B, kernel %d B", n, want, found)
		}
	}
}
