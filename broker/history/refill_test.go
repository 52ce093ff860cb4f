package history

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/proto"
)

// TestRefilledSecondsLoadInTimeOrder: seconds refilled after a JetStream
// outage are stored after newer live ones. The stream files them under the
// snapshot subject, and LoadRange returns them in time order, once per
// second, also for a range that ends before the live seconds stored first.
func TestRefilledSecondsLoadInTimeOrder(t *testing.T) {
	ctx, js := startStream(t)
	now := time.Now().UTC().Truncate(time.Second)
	at := func(i int) proto.Snapshot {
		s := snap(0, uint64(100+i), 0, 0, 0, 0)
		s.Time = now.Add(time.Duration(i) * time.Second)
		return s
	}
	put := func(subject string, i int, withID bool) *jetstream.PubAck {
		t.Helper()
		s := at(i)
		data, err := s.Encode()
		if err != nil {
			t.Fatal(err)
		}
		var opts []jetstream.PublishOpt
		if withID {
			opts = append(opts, jetstream.WithMsgID(s.Scope.String()+"@"+strconv.FormatInt(s.Time.Unix(), 10)))
		}
		ack, err := js.Publish(ctx, subject, data, opts...)
		if err != nil {
			t.Fatalf("publish second %d on %s: %v", i, subject, err)
		}
		return ack
	}
	live, refill := proto.SnapshotSubject(proto.ClusterScope()), proto.RefillSubject(proto.ClusterScope())
	// Live: -40 … -1 but for the outage -30 … -21.
	for i := -40; i < 0; i++ {
		if i < -30 || i >= -20 {
			put(live, i, true)
		}
	}
	// Refill, oldest first, starting with one that the stream stored live
	// already (same message id: a duplicate) and one repeated past the
	// duplicate window (no id here: stored twice).
	if ack := put(refill, -31, true); !ack.Duplicate {
		t.Fatalf("refilling a second stored live must be a duplicate: %+v", ack)
	}
	for i := -30; i < -20; i++ {
		put(refill, i, true)
	}
	put(refill, -25, false)

	got, err := Load(ctx, js, proto.ClusterScope(), now.Add(-40*time.Second), 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 40 {
		t.Fatalf("load after refill: %d snapshots, want 40 (one per second)", len(got))
	}
	for i, s := range got {
		if want := now.Add(time.Duration(i-40) * time.Second); !s.Time.Equal(want) || s.RequestsTotal != uint64(60+i) {
			t.Fatalf("snapshot %d: %s total %d, want %s total %d", i, s.Time, s.RequestsTotal, want, 60+i)
		}
	}
	// A range inside the gap, ending long before the live seconds stored
	// before the refill.
	got, err = LoadRange(ctx, js, proto.HistoryStream, live, now.Add(-28*time.Second), now.Add(-26*time.Second), 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || !got[0].Time.Equal(now.Add(-28*time.Second)) || !got[2].Time.Equal(now.Add(-26*time.Second)) {
		t.Fatalf("range inside the refilled gap: %v", times(got))
	}
	// The newest max of an out-of-order read are the newest by time.
	got, err = LoadRange(ctx, js, proto.HistoryStream, live, now.Add(-40*time.Second), now.Add(-21*time.Second), 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || !got[2].Time.Equal(now.Add(-21*time.Second)) {
		t.Fatalf("newest 3 up to -21 s: %v", got)
	}
}
