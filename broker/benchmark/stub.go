package benchmark

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/proto"
)

// stub stands in for the leading aggregator: it publishes one valid cluster
// snapshot per whole second on proto.SnapshotSubject(cluster), the counters
// growing like a busy cluster's.
type stub struct {
	nc  *nats.Conn
	log *slog.Logger
	now func() time.Time
}

// stubSnapshot is the snapshot of second at after seq seconds of traffic.
func stubSnapshot(at time.Time, seq uint64) proto.Snapshot {
	total := 1_000_000 + seq*1000
	errs := total / 50
	return proto.Snapshot{
		Version:           proto.SnapshotVersion,
		Scope:             proto.ClusterScope(),
		Time:              at.UTC().Truncate(time.Second),
		RequestsTotal:     total,
		RequestsSuccess:   total - errs,
		RequestsError:     errs,
		ActiveConnections: 42,
		AvgResponseTimeMs: 12.345,
		SuccessRate:       proto.SuccessRateOf(total-errs, total),
		DurationSumNanos:  total * 12_345_000,
		DurationCount:     total,
		Instances:         3,
	}
}

// run publishes at once and then at every whole second until ctx ends.
func (s *stub) run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for seq := uint64(0); ; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := s.now()
		if err := s.publish(stubSnapshot(now, seq)); err != nil {
			s.log.Warn("publish stub snapshot", "err", err)
		}
		t.Reset(now.Truncate(time.Second).Add(time.Second).Sub(s.now()))
	}
}

func (s *stub) publish(snap proto.Snapshot) error {
	data, err := snap.Encode()
	if err != nil {
		return fmt.Errorf("encode snapshot: %w", err)
	}
	if err := s.nc.Publish(proto.SnapshotSubject(snap.Scope), data); err != nil {
		return fmt.Errorf("publish snapshot: %w", err)
	}
	return nil
}
