package engine

import (
	"testing"

	"github.com/palisade/palisade/fastpath/channel"
)

type fixed Verdict

func (f fixed) Name() string            { return "fixed" }
func (f fixed) Inspect(*Packet) Verdict { return Verdict(f) }
func (f fixed) FlowEnd(uint32, uint64)  {}

func TestChainMergesVerdicts(t *testing.T) {
	allowOffload := fixed{Action: channel.ActionAllow, Flow: channel.FlowOffload}
	allowKeep := fixed{Action: channel.ActionAllow, Flow: channel.FlowKeepInspecting}
	drop := fixed{Action: channel.ActionDrop, Flow: channel.FlowBlock}
	reject := fixed{Action: channel.ActionReject, Flow: channel.FlowKeepInspecting}
	cases := []struct {
		name  string
		chain Chain
		want  Verdict
	}{
		{"empty allows", Chain{}, Allow},
		{"all offload", Chain{allowOffload, allowOffload}, Verdict{Action: channel.ActionAllow, Flow: channel.FlowOffload}},
		{"one still inspecting", Chain{allowOffload, allowKeep}, Verdict{Action: channel.ActionAllow, Flow: channel.FlowKeepInspecting}},
		{"drop blocks", Chain{allowOffload, drop}, Verdict{Action: channel.ActionDrop, Flow: channel.FlowBlock}},
		{"reject beats drop", Chain{drop, reject}, Verdict{Action: channel.ActionReject, Flow: channel.FlowBlock}},
	}
	for _, c := range cases {
		if got := c.chain.Inspect(&Packet{}); got.Action != c.want.Action || got.Flow != c.want.Flow {
			t.Errorf("%s: got %s/%s, want %s/%s", c.name, got.Action, got.Flow, c.want.Action, c.want.Flow)
		}
	}
	page := fixed{Action: channel.ActionReject, Flow: channel.FlowBlock, Reply: []byte("403")}
	if got := (Chain{reject, page}).Inspect(&Packet{}); string(got.Reply) != "403" {
		t.Errorf("block page lost behind an equally severe reject: %+v", got)
	}
}
