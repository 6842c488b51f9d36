package engine

import (
	"testing"
	"time"

	"github.com/palisade/palisade/fastpath/channel"
)

func TestOffloadAfterCountsBothDirections(t *testing.T) {
	e := NewOffloadAfter(4)
	now := time.Now()
	for i := 1; i <= 6; i++ {
		dir := channel.FromGuest
		if i%2 == 0 {
			dir = channel.ToGuest
		}
		v := e.Inspect(&Packet{Guest: 7, FlowID: 42, Direction: dir, Time: now})
		want := channel.FlowKeepInspecting
		if i >= 4 {
			want = channel.FlowOffload
		}
		if v.Action != channel.ActionAllow || v.Flow != want {
			t.Fatalf("packet %d: %s/%s, want allow/%s", i, v.Action, v.Flow, want)
		}
	}
	// Another guest's flow with the same id is its own flow.
	if v := e.Inspect(&Packet{Guest: 8, FlowID: 42, Time: now}); v.Flow != channel.FlowKeepInspecting {
		t.Fatalf("guest 8: %s", v.Flow)
	}
	e.FlowEnd(7, 42)
	if v := e.Inspect(&Packet{Guest: 7, FlowID: 42, Time: now}); v.Flow != channel.FlowKeepInspecting {
		t.Fatalf("after FlowEnd: %s", v.Flow)
	}
}

func TestOffloadAfterZeroNeverOffloads(t *testing.T) {
	e := NewOffloadAfter(0)
	for i := 0; i < 100; i++ {
		if v := e.Inspect(&Packet{Guest: 1, FlowID: 9}); v.Action != channel.ActionAllow || v.Flow != channel.FlowKeepInspecting {
			t.Fatalf("packet %d: %+v", i, v)
		}
	}
	if e.Len() != 0 {
		t.Fatalf("%d flows kept with N=0", e.Len())
	}
	one := NewOffloadAfter(1)
	if v := one.Inspect(&Packet{Guest: 1, FlowID: 9}); v.Flow != channel.FlowOffload {
		t.Fatalf("N=1: first packet %s", v.Flow)
	}
}

func TestOffloadAfterForgetsIdleFlows(t *testing.T) {
	e := NewOffloadAfter(16)
	t0 := time.Now()
	e.Inspect(&Packet{Guest: 1, FlowID: 1, Time: t0})
	e.Inspect(&Packet{Guest: 1, FlowID: 1 + offloadShards, Time: t0}) // same shard
	if e.Len() != 2 {
		t.Fatalf("%d flows", e.Len())
	}
	e.Inspect(&Packet{Guest: 1, FlowID: 1 + offloadShards, Time: t0.Add(offloadIdle / 2)})
	e.Inspect(&Packet{Guest: 1, FlowID: 1 + 2*offloadShards, Time: t0.Add(offloadIdle + time.Minute)})
	if e.Len() != 2 {
		t.Fatalf("%d flows after the sweep, want 2 (the idle one forgotten)", e.Len())
	}
}

func TestOffloadAfterInAChain(t *testing.T) {
	// An engine still interested keeps the flow inspected past N.
	c := Chain{fixed{Action: channel.ActionAllow, Flow: channel.FlowKeepInspecting}, NewOffloadAfter(1)}
	if v := c.Inspect(&Packet{Guest: 1, FlowID: 5}); v.Flow != channel.FlowKeepInspecting {
		t.Fatalf("chain offloaded over an interested engine: %s", v.Flow)
	}
	c = Chain{NewDropMarker("X"), NewOffloadAfter(2)}
	if v := c.Inspect(&Packet{Guest: 1, FlowID: 5}); v.Flow != channel.FlowKeepInspecting {
		t.Fatalf("first packet: %s", v.Flow)
	}
	if v := c.Inspect(&Packet{Guest: 1, FlowID: 5}); v.Flow != channel.FlowOffload {
		t.Fatalf("second packet: %s", v.Flow)
	}
}
