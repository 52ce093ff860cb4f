package leader

import (
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/wait"
)

// Every elector learns who holds the lease: the holder itself at once, the
// followers within Poll, and after a failover the new holder.
func TestHolderFollowsTheLease(t *testing.T) {
	node, _ := natstest.StartTest(t)
	a := start(t, node, "a", nil)
	first := waitOneLeader(t, []*member{a}, 5*time.Second)
	if first.e.Holder() != "a" {
		t.Fatalf("leader's Holder() = %q", first.e.Holder())
	}
	b := start(t, node, "b", nil)
	wait.For(t, 5*time.Second, "follower to see the holder", func() bool { return b.e.Holder() == "a" })
	a.kill(t)
	wait.For(t, 5*time.Second, "b to take over", b.e.Leading)
	if b.e.Holder() != "b" {
		t.Fatalf("new leader's Holder() = %q", b.e.Holder())
	}
}
