package datapath

import (
	"path/filepath"
	"testing"

	"github.com/palisade/palisade/hypervisor/lab"
)

func openForTest(t *testing.T) *Datapath {
	t.Helper()
	d, err := Open(Config{PinDir: filepath.Join(lab.BPFFSForTest(t), "palisade")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestLoadReusesPinnedMaps(t *testing.T) {
	dir := filepath.Join(lab.BPFFSForTest(t), "palisade")
	d1, err := Open(Config{PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := d1.CreateTables(7, 100, 100); err != nil {
		t.Fatal(err)
	}
	tcp, _, err := d1.Tables(7)
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, ConnKeySize)
	key[0] = 42
	if err := tcp.Put(key, make([]byte, ConnValueSize)); err != nil {
		t.Fatal(err)
	}
	tcp.Close()
	d1.Close()

	d2, err := Open(Config{PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	tcp, other, err := d2.Tables(7)
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	defer other.Close()
	val := make([]byte, ConnValueSize)
	if err := tcp.Lookup(key, &val); err != nil {
		t.Fatalf("connection state lost across reopen: %v", err)
	}
}
