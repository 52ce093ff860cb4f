package history

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/proto"
)

// latestResponse is a scope's newest stored snapshot under the guide's
// metric names, plus the live instance count, which Snapshot events do not
// carry and the dashboard's per-region table shows.
type latestResponse struct {
	Scope             string    `json:"scope"`
	Timestamp         time.Time `json:"timestamp"`
	RequestsTotal     uint64    `json:"requests_total"`
	RequestsSuccess   uint64    `json:"requests_success"`
	RequestsError     uint64    `json:"requests_error"`
	ActiveConnections int64     `json:"active_connections"`
	AvgResponseTime   float64   `json:"avg_response_time"`
	SuccessRate       float64   `json:"success_rate"`
	Instances         int       `json:"instances"`
}

// latest serves GET /api/metrics/latest?scope=: the scope's newest snapshot
// in the history stream (one stream read), 404 when it has none.
func (a *API) latest(w http.ResponseWriter, r *http.Request) {
	scope, err := scopeParam(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.Timeout)
	defer cancel()
	s, err := a.lastSnapshot(ctx, scope)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrMsgNotFound):
		writeError(w, http.StatusNotFound, fmt.Sprintf("scope %s has no snapshots", scope))
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, latestResponse{
		Scope: scope.String(), Timestamp: s.Time,
		RequestsTotal: s.RequestsTotal, RequestsSuccess: s.RequestsSuccess, RequestsError: s.RequestsError,
		ActiveConnections: s.ActiveConnections, AvgResponseTime: s.AvgResponseTimeMs, SuccessRate: s.SuccessRate,
		Instances: s.Instances,
	})
}

func (a *API) lastSnapshot(ctx context.Context, scope proto.Scope) (proto.Snapshot, error) {
	subject := proto.SnapshotSubject(scope)
	st, err := a.cfg.JetStream.Stream(ctx, proto.HistoryStream)
	if err != nil {
		return proto.Snapshot{}, fmt.Errorf("read newest snapshot of %s: %w", scope, err)
	}
	msg, err := st.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		return proto.Snapshot{}, fmt.Errorf("read newest snapshot of %s: %w", scope, err)
	}
	s, err := proto.DecodeSnapshot(msg.Data)
	if err != nil {
		return proto.Snapshot{}, fmt.Errorf("read newest snapshot of %s: %w", scope, err)
	}
	return s, nil
}
