package leader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/meridian-metrics/meridian/broker/natsnode"
	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/integration/wait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Short leases keep the suite fast: takeover within 1s + 100ms.
const testTTL = time.Second

// member is one elector under test, on a connection of its own.
type member struct {
	e       *Elector
	nc      *nats.Conn
	cancel  context.CancelFunc
	done    chan error
	changes chan bool // every OnChange, in order
}

func connect(t *testing.T, n *natsnode.Node) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(n.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func start(t *testing.T, n *natsnode.Node, id string, mod func(*Config)) *member {
	t.Helper()
	nc := connect(t, n)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	m := &member{nc: nc, done: make(chan error, 1), changes: make(chan bool, 64)}
	cfg := Config{JS: js, ID: id, TTL: testTTL, Logger: quiet, OnChange: func(l bool) { m.changes <- l }}
	if mod != nil {
		mod(&cfg)
	}
	m.e, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() { m.done <- m.e.Run(ctx) }()
	t.Cleanup(func() { m.kill(t) })
	return m
}

// kill stops the elector without resigning, as if its process died.
func (m *member) kill(t *testing.T) {
	m.cancel()
	if err, ok := <-m.done; ok {
		if err != nil {
			t.Errorf("run %s: %v", m.e.ID(), err)
		}
		close(m.done)
	}
}

// sampler checks, every millisecond until stopped, that at most one of the
// members leads.
type sampler struct {
	stop    chan struct{}
	done    chan struct{}
	samples atomic.Int64
	mu      sync.Mutex
	bad     []string
}

func sample(ms []*member) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
			var leaders []string
			for _, m := range ms {
				if m.e.Leading() {
					leaders = append(leaders, m.e.ID())
				}
			}
			s.samples.Add(1)
			if len(leaders) > 1 {
				s.mu.Lock()
				s.bad = append(s.bad, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), leaders))
				s.mu.Unlock()
			}
		}
	}()
	return s
}

func (s *sampler) check(t *testing.T) {
	t.Helper()
	close(s.stop)
	<-s.done
	if len(s.bad) > 0 {
		t.Fatalf("two leaders at once in %d of %d samples: %v", len(s.bad), s.samples.Load(), s.bad[:min(len(s.bad), 5)])
	}
	if s.samples.Load() < 100 {
		t.Fatalf("only %d samples taken", s.samples.Load())
	}
}

func leaders(ms []*member) []*member {
	var out []*member
	for _, m := range ms {
		if m.e.Leading() {
			out = append(out, m)
		}
	}
	return out
}

func waitOneLeader(t *testing.T, ms []*member, within time.Duration) *member {
	t.Helper()
	var l []*member
	wait.For(t, within, "one leader", func() bool { l = leaders(ms); return len(l) == 1 })
	return l[0]
}

func TestFailover(t *testing.T) {
	for _, n := range []int{2, 3} {
		for _, how := range []string{"kill", "resign", "network-loss"} {
			t.Run(fmt.Sprintf("%d-electors-%s", n, how), func(t *testing.T) {
				t.Parallel()
				node, _ := natstest.StartTest(t)
				var ms []*member
				for i := range n {
					ms = append(ms, start(t, node, fmt.Sprintf("e%d", i), nil))
				}
				s := sample(ms)
				old := waitOneLeader(t, ms, 5*time.Second)
				// Let a few renewals pass, so that takeover is timed from a
				// renewal, not from the acquisition.
				found := time.Now()
				wait.For(t, 5*time.Second, "renewals", func() bool {
					return time.Since(found) > 3*old.e.cfg.Renew && old.e.Leading()
				})
				killed := time.Now()
				switch how {
				case "kill":
					old.kill(t)
				case "resign":
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					if err := old.e.Resign(ctx); err != nil {
						t.Fatal(err)
					}
					if old.e.Leading() {
						t.Fatal("still leading after Resign")
					}
					if err := <-old.done; err != nil {
						t.Fatalf("Run after Resign returned %v", err)
					}
					close(old.done)
				case "network-loss":
					old.nc.Close()
				}
				var rest []*member
				for _, m := range ms {
					if m != old {
						rest = append(rest, m)
					}
				}
				next := waitOneLeader(t, rest, 5*time.Second)
				took := time.Since(killed)
				t.Logf("%s: %s took over from %s after %v", how, next.e.ID(), old.e.ID(), took.Round(time.Millisecond))
				limit := testTTL + next.e.cfg.Poll + 300*time.Millisecond // slack for -race on a busy machine
				if how == "resign" {
					limit = next.e.cfg.Poll + 300*time.Millisecond
				}
				if took > limit {
					t.Errorf("takeover took %v, want at most %v", took, limit)
				}
				if how == "network-loss" {
					// The cut-off leader noticed on its own and told OnChange.
					wait.For(t, 5*time.Second, "old leader to step down", func() bool { return len(old.changes) == 2 })
				}
				// Let the new leader renew a few times with the sampler on.
				deadline := time.Now().Add(2 * testTTL)
				wait.For(t, 5*time.Second, "new leader to keep the lease", func() bool {
					return time.Now().After(deadline) && next.e.Leading()
				})
				s.check(t)
				for _, m := range ms {
					checkAlternates(t, m)
				}
			})
		}
	}
}

// checkAlternates checks that OnChange alternated true, false, true...
func checkAlternates(t *testing.T, m *member) {
	t.Helper()
	want := true
	for {
		select {
		case got := <-m.changes:
			if got != want {
				t.Errorf("%s: OnChange(%v), want %v", m.e.ID(), got, want)
			}
			want = !want
		default:
			return
		}
	}
}

func TestResignAndRestart(t *testing.T) {
	t.Parallel()
	node, nc := natstest.StartTest(t)
	m := start(t, node, "solo", nil)
	waitOneLeader(t, []*member{m}, 5*time.Second)
	if got := <-m.changes; !got {
		t.Fatal("first OnChange was false")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 2 { // idempotent
		if err := m.e.Resign(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := <-m.changes; got {
		t.Fatal("no OnChange(false) on Resign")
	}
	if err := <-m.done; err != nil {
		t.Fatal(err)
	}
	close(m.done)
	if err := m.e.Run(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Resign = %v, want ErrClosed", err)
	}
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, DefaultKey); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("lease after Resign: %v, want ErrKeyNotFound", err)
	}

	// A killed elector's lease is still released by a later Resign.
	k := start(t, node, "killed", nil)
	waitOneLeader(t, []*member{k}, 5*time.Second)
	k.kill(t)
	if _, err := kv.Get(ctx, DefaultKey); err != nil {
		t.Fatalf("lease of a killed elector: %v", err)
	}
	if err := k.e.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, DefaultKey); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("lease after late Resign: %v, want ErrKeyNotFound", err)
	}
	// A second concurrent Run is refused.
	r := start(t, node, "runner", nil)
	waitOneLeader(t, []*member{r}, 5*time.Second)
	if err := r.e.Run(ctx); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Run = %v, want ErrRunning", err)
	}
}

func TestLeaseTakenAwayStepsDown(t *testing.T) {
	t.Parallel()
	node, nc := natstest.StartTest(t)
	m := start(t, node, "victim", nil)
	waitOneLeader(t, []*member{m}, 5*time.Second)
	<-m.changes
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	// An operator (or a misbehaving client) overwrites the lease.
	if _, err := kv.Put(ctx, DefaultKey, []byte("intruder x")); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-m.changes:
		if got {
			t.Fatal("OnChange(true) while the lease was taken")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no step-down after the lease was overwritten")
	}
	// It waits the intruder's TTL out and takes the lease back.
	wait.For(t, 5*time.Second, "lease taken back", m.e.Leading)
}

func TestLostRenewalAnswerKeepsLeading(t *testing.T) {
	t.Parallel()
	node, nc := natstest.StartTest(t)
	m := start(t, node, "keeper", nil)
	waitOneLeader(t, []*member{m}, 5*time.Second)
	<-m.changes
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	// A renewal stored whose answer never arrived looks like this: our own
	// token at a revision the elector does not know.
	e, err := kv.Get(ctx, DefaultKey)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := kv.Update(ctx, DefaultKey, m.e.token, e.Revision())
	if err != nil {
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "a renewal past the injected revision", func() bool {
		e, err := kv.Get(ctx, DefaultKey)
		return err == nil && e.Revision() > rev
	})
	if !m.e.Leading() || len(m.changes) != 0 {
		t.Fatalf("leading %v, changes %d: the elector gave up a lease that was still its own", m.e.Leading(), len(m.changes))
	}
}

func TestTTLMismatch(t *testing.T) {
	t.Parallel()
	node, nc := natstest.StartTest(t)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "L", TTL: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []Config{
		{JS: js, Bucket: "L", TTL: testTTL, Logger: quiet},
		{KV: kv, TTL: testTTL, Logger: quiet},
	} {
		e, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Run(ctx); !errors.Is(err, ErrTTLMismatch) {
			t.Fatalf("Run = %v, want ErrTTLMismatch", err)
		}
	}
	// The same bucket with the right TTL works through Config.KV.
	m := start(t, node, "kv", func(c *Config) { c.JS, c.KV, c.TTL = nil, kv, 3*time.Second })
	waitOneLeader(t, []*member{m}, 5*time.Second)
}

func TestElectorWaitsForJetStream(t *testing.T) {
	t.Parallel()
	n, err := natsnode.New(natsnode.Config{Port: -1, DisableJetStream: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Shutdown(context.Background()) })
	m := start(t, n, "patient", nil)
	// Run keeps retrying instead of failing, and never leads.
	deadline := time.Now().Add(3 * openBackoffMin)
	wait.For(t, 5*time.Second, "retries", func() bool { return time.Now().After(deadline) })
	if m.e.Leading() {
		t.Fatal("leading without JetStream")
	}
	select {
	case err := <-m.done:
		t.Fatalf("Run returned %v without JetStream", err)
	default:
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	_, nc := natstest.StartTest(t)
	js, _ := jetstream.New(nc)
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{JS: js}, true},
		{"no jetstream", Config{}, false},
		{"ttl too short", Config{JS: js, TTL: 50 * time.Millisecond}, false},
		{"renew not below deadline", Config{JS: js, TTL: time.Second, Renew: 600 * time.Millisecond}, false},
		{"deadline not below ttl", Config{JS: js, TTL: time.Second, RenewDeadline: time.Second}, false},
		{"poll not below ttl", Config{JS: js, TTL: time.Second, Poll: time.Second}, false},
		{"negative renew", Config{JS: js, Renew: -time.Second}, false},
		{"bad key", Config{JS: js, Key: "a..b"}, false},
		{"bad key char", Config{JS: js, Key: "a b"}, false},
		{"custom", Config{JS: js, Key: "agg.lease", TTL: 4 * time.Second, Renew: time.Second, RenewDeadline: 3 * time.Second, Poll: time.Second}, true},
	} {
		e, err := New(tc.cfg)
		if (err == nil) != tc.ok {
			t.Errorf("%s: New error %v, want ok=%v", tc.name, err, tc.ok)
		}
		if err == nil && (e.cfg.Renew >= e.cfg.RenewDeadline || e.cfg.RenewDeadline >= e.cfg.TTL || e.ID() == "") {
			t.Errorf("%s: defaults broke the invariants: %+v", tc.name, e.cfg)
		}
	}
	if a, b := DefaultID(), DefaultID(); a == b {
		t.Errorf("DefaultID repeated %q", a)
	}
}
