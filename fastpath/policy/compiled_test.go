package policy_test

import (
	"math/rand/v2"
	"testing"

	"github.com/palisade/palisade/fastpath/policy"
	"github.com/palisade/palisade/fastpath/policy/policytest"
)

func TestCompiledAgreesWithReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	checked := 0
	for round := 0; round < 300; round++ {
		p := policytest.RandomPolicy(rng, 1+rng.IntN(200))
		c, err := policy.Compile(p)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 200; i++ {
			pkt := policytest.RandomPacket(rng)
			want := p.Evaluate(pkt)
			got := c.Classify(pkt, p.DefaultAction)
			if got != want {
				t.Fatalf("round %d packet %+v:\n compiled %+v\nreference %+v", round, pkt, got, want)
			}
			checked++
		}
	}
	t.Logf("%d packets classified identically", checked)
}
