package history

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrNoLeader is an ensure that reached the stream but found its replicas
// without a leader: the stream exists and will answer once they elect one.
var ErrNoLeader = errors.New("stream has no leader yet")

// jsClusterNotAvailable is the server's "JetStream system temporarily
// unavailable" (JSClusterNotAvailErr): a clustered server that knows no
// JetStream meta leader, as while a fresh cluster elects its first one.
const jsClusterNotAvailable jetstream.ErrorCode = 10008

// Condition names what an ensure error says is missing, in words fit for a
// log line and a readiness reason. A cluster forming shows, in turn, as
// requests nobody answers (no meta leader known yet), as "temporarily
// unavailable" (the servers see each other but elect), and as a stream
// without a leader.
func Condition(err error) string {
	var api *jetstream.APIError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrNoLeader):
		return "stream has no leader yet"
	case errors.As(err, &api) && api.ErrorCode == jsClusterNotAvailable:
		return "JetStream has no meta leader yet"
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return "JetStream not enabled"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return "JetStream did not answer"
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse):
		return "no JetStream server answers"
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected):
		return "not connected to NATS"
	case errors.As(err, &api):
		return fmt.Sprintf("JetStream refused the stream (%d)", api.ErrorCode)
	}
	return "stream unusable"
}

// Transient reports whether err is JetStream being unavailable for now (a
// cluster electing, no quorum, no connection), which heals by itself and is
// worth retrying soon, rather than a refusal (a conflicting configuration,
// JetStream disabled, resource limits) that waits for an operator.
func Transient(err error) bool {
	var api *jetstream.APIError
	switch {
	case err == nil:
		return false
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return false
	case errors.As(err, &api):
		return api.ErrorCode == jsClusterNotAvailable || api.Code == 503 || api.Code == 408
	}
	return true
}

// answering checks that s has a leader, reading its info afresh when the
// ensure's own answer did not name one. A single-replica stream answers
// from its server as soon as it exists.
func answering(ctx context.Context, s jetstream.Stream, replicas int) error {
	if replicas <= 1 || hasLeader(s.CachedInfo()) {
		return nil
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("read stream info: %w", err)
	}
	if !hasLeader(info) {
		return ErrNoLeader
	}
	return nil
}

func hasLeader(info *jetstream.StreamInfo) bool {
	return info != nil && info.Cluster != nil && info.Cluster.Leader != ""
}
