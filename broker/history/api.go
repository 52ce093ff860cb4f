package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/meridian-metrics/meridian/broker/auth"
	"github.com/meridian-metrics/meridian/broker/service"
	"github.com/meridian-metrics/meridian/proto"
)

// API serves history over plain HTTP for tools that are not WebSocket
// clients:
//
//	GET /api/metrics/list?limit=&after=
//	GET /api/metrics/history?metric=&scope=&start=&end=&step=
//	GET /api/metrics/latest?scope=
//
// Behind an authenticating server (auth.WithGrant), only the scopes the
// request's token grants are listed, and history of any other scope is
// refused with 403. The list of scopes is paginated: at most limit
// (default and maximum MaxListScopes) names after the name after, with
// next_after set when more follow.
//
// Ranges inside the 1 s stream's retention are answered from it; older ones
// from the one-minute rollups. Bad parameters get a 400 with a JSON body
// {"error": "..."} naming the parameter and what is valid. API is safe for
// concurrent use.
type API struct {
	cfg APIConfig
	mux *http.ServeMux
}

// Defaults for zero APIConfig fields.
const (
	// DefaultAPIMaxPoints is a day at 8 s, a week at 1 min.
	DefaultAPIMaxPoints = 11000
	DefaultAPITimeout   = 10 * time.Second
)

// APIConfig configures the API. Zero fields take defaults.
type APIConfig struct {
	// JetStream reads the history and rollup streams. Required.
	JetStream jetstream.JetStream
	// MaxPoints bounds the points of one answer. Default
	// DefaultAPIMaxPoints.
	MaxPoints int
	// Timeout bounds one request's stream reads. Default DefaultAPITimeout.
	Timeout time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Validate reports the first value in cfg that no default repairs. (NewAPI
// also checks that JetStream is set.)
func (c APIConfig) Validate() error {
	return service.First(
		service.NonNegative("MaxPoints", c.MaxPoints),
		service.NonNegative("Timeout", c.Timeout),
	)
}

// withDefaults fills zero fields; call it after Validate.
func (c APIConfig) withDefaults() APIConfig {
	if c.MaxPoints == 0 {
		c.MaxPoints = DefaultAPIMaxPoints
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultAPITimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// NewAPI returns the API handler.
func NewAPI(cfg APIConfig) (*API, error) {
	if cfg.JetStream == nil {
		return nil, errors.New("new history api: JetStream is required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new history api: %w", err)
	}
	cfg = cfg.withDefaults()
	a := &API{cfg: cfg, mux: http.NewServeMux()}
	a.mux.HandleFunc("GET /api/metrics/list", a.list)
	a.mux.HandleFunc("GET /api/metrics/history", a.history)
	a.mux.HandleFunc("GET /api/metrics/latest", a.latest)
	return a, nil
}

func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// MetricInfo describes one metric in /api/metrics/list.
type MetricInfo struct {
	Name        string `json:"name"`
	Kind        string `json:"kind"` // counter, gauge or ratio
	Unit        string `json:"unit"`
	Description string `json:"description"`
}

// metricDescriptions explain each metric in /api/metrics/list; names,
// kinds and units come from proto.
var metricDescriptions = [proto.NumMetrics]string{
	proto.RequestsTotal:     "Requests served by the scope's gateways since the cluster started; never decreases.",
	proto.RequestsSuccess:   "Requests answered with a status below 400.",
	proto.RequestsError:     "Requests answered with 400 or above, upstream failures (502/504) and cancelled requests (499).",
	proto.ActiveConnections: "Requests in flight on live gateway instances.",
	proto.AvgResponseTime:   "Σduration/Σcount of the requests completed in the aggregator's sliding window (per bucket in history).",
	proto.SuccessRate:       "requests_success / requests_total × 100 of the cumulative totals; 100 with no requests.",
}

// MaxListScopes bounds the scopes of one /api/metrics/list answer.
const MaxListScopes = 1000

var metricInfo = func() []MetricInfo {
	out := make([]MetricInfo, proto.NumMetrics)
	for m := range proto.Metric(proto.NumMetrics) {
		out[m] = MetricInfo{Name: m.String(), Kind: m.Kind().String(), Unit: m.Unit(), Description: metricDescriptions[m]}
	}
	return out
}()

type listResponse struct {
	Metrics   []MetricInfo      `json:"metrics"`
	Aliases   map[string]string `json:"aliases"`
	Scopes    []string          `json:"scopes"`
	NextAfter string            `json:"next_after,omitempty"`
	History   historyInfo       `json:"history"`
}

type historyInfo struct {
	ResolutionSeconds       int   `json:"resolution_seconds"`
	RetentionSeconds        int64 `json:"retention_seconds"`
	RollupResolutionSeconds int   `json:"rollup_resolution_seconds"`
	RollupRetentionSeconds  int64 `json:"rollup_retention_seconds"`
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	limit, after := MaxListScopes, r.URL.Query().Get("after")
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > MaxListScopes {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit: want a whole number from 1 to %d", MaxListScopes))
			return
		}
		limit = n
	}
	grant := auth.GrantFrom(r.Context())
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.Timeout)
	defer cancel()
	resp := listResponse{
		Metrics: metricInfo,
		Aliases: map[string]string{"response_time_avg": "avg_response_time"},
		Scopes:  []string{"cluster"},
		History: historyInfo{ResolutionSeconds: 1, RollupResolutionSeconds: 60},
	}
	fine, err := a.streamInfo(ctx, proto.HistoryStream, proto.SnapshotSubjectAll)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	// Instances have 1 s snapshots only while someone follows them, but
	// rollups always: a scope with either has history.
	seen := map[string]bool{"cluster": true}
	addScopes := func(info *jetstream.StreamInfo, prefix string) {
		for subj := range info.State.Subjects {
			if sc := strings.TrimPrefix(subj, prefix+"."); !seen[sc] {
				seen[sc] = true
				resp.Scopes = append(resp.Scopes, sc)
			}
		}
	}
	if fine != nil {
		resp.History.RetentionSeconds = int64(fine.Config.MaxAge / time.Second)
		addScopes(fine, proto.SnapshotSubjectPrefix)
	}
	if roll, err := a.streamInfo(ctx, proto.RollupStream, proto.RollupSubjectAll); err == nil && roll != nil {
		resp.History.RollupRetentionSeconds = int64(roll.Config.MaxAge / time.Second)
		addScopes(roll, proto.RollupSubjectPrefix)
	}
	slices.Sort(resp.Scopes[1:])
	resp.Scopes = slices.DeleteFunc(resp.Scopes, func(s string) bool {
		sc, err := proto.ParseScope(s)
		return err != nil || !grant.Allows(sc)
	})
	if after != "" {
		resp.Scopes = pageAfter(resp.Scopes, after)
	}
	if len(resp.Scopes) > limit {
		resp.Scopes = resp.Scopes[:limit]
		resp.NextAfter = resp.Scopes[limit-1]
	}
	writeJSON(w, http.StatusOK, resp)
}

// pageAfter is the part of scopes ("cluster" first when present, then the
// rest sorted) that follows the name after.
func pageAfter(scopes []string, after string) []string {
	i := 0
	if len(scopes) > 0 && scopes[0] == "cluster" {
		i = 1
	}
	if after == "cluster" {
		return scopes[i:]
	}
	j, found := slices.BinarySearch(scopes[i:], after)
	if found {
		j++
	}
	return scopes[i+j:]
}

// streamInfo returns nil, nil when the stream does not exist yet.
func (a *API) streamInfo(ctx context.Context, name, subjects string) (*jetstream.StreamInfo, error) {
	s, err := a.cfg.JetStream.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", name, err)
	}
	var opts []jetstream.StreamInfoOpt
	if subjects != "" {
		opts = append(opts, jetstream.WithSubjectFilter(subjects))
	}
	info, err := s.Info(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", name, err)
	}
	return info, nil
}

type historyResponse struct {
	Metric      string        `json:"metric"`
	Scope       string        `json:"scope"`
	Start       time.Time     `json:"start"`
	End         time.Time     `json:"end"`
	StepSeconds int64         `json:"step_seconds"`
	Source      string        `json:"source"` // "1s" or "1m" (rollups)
	DataPoints  []proto.Point `json:"data_points"`
}

func (a *API) history(w http.ResponseWriter, r *http.Request) {
	q, err := a.parseHistoryQuery(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if g := auth.GrantFrom(r.Context()); !g.Allows(q.scope) {
		writeError(w, http.StatusForbidden, fmt.Sprintf("scope %s is outside this token's scopes (%s)", q.scope, g))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.Timeout)
	defer cancel()

	stream, subject, source := proto.HistoryStream, proto.SnapshotSubject(q.scope), "1s"
	if fine, err := a.streamInfo(ctx, proto.HistoryStream, ""); err == nil && fine != nil &&
		q.start.Before(a.cfg.Now().Add(-fine.Config.MaxAge)) {
		// Older than the 1 s history keeps: answer from the rollups.
		stream, subject, source = proto.RollupStream, proto.RollupSubject(q.scope), "1m"
		q.step = max(q.step, time.Minute)
	}
	// One snapshot per second (or minute) at most in the range, plus the
	// one before it that per-bucket means start from.
	per := time.Second
	if source == "1m" {
		per = time.Minute
	}
	limit := int(q.end.Sub(q.start)/per) + 2
	snaps, err := LoadRange(ctx, a.cfg.JetStream, stream, subject, q.start.Add(-q.step), q.end, limit)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, historyResponse{
		Metric: q.metric.String(), Scope: q.scope.String(), Start: q.start, End: q.end,
		StepSeconds: int64(q.step / time.Second), Source: source,
		DataPoints: SeriesStep(snaps, q.metric, q.start, q.end, q.step),
	})
}

type historyQuery struct {
	metric     proto.Metric
	scope      proto.Scope
	start, end time.Time
	step       time.Duration
}

func (a *API) parseHistoryQuery(r *http.Request) (historyQuery, error) {
	v := r.URL.Query()
	var q historyQuery
	var err error
	name := v.Get("metric")
	m, ok := proto.ParseMetric(name)
	if !ok {
		return q, fmt.Errorf("metric %q is unknown; valid: %s (alias response_time_avg)", name, strings.Join(proto.MetricNames(), ", "))
	}
	q.metric = m
	if q.scope, err = scopeParam(v); err != nil {
		return q, err
	}
	now := a.cfg.Now().UTC()
	q.end = now
	if e := v.Get("end"); e != "" {
		t, err := parseTime(e)
		if err != nil {
			return q, fmt.Errorf("end %q: %v", e, err)
		}
		q.end = t
	}
	q.start = q.end.Add(-time.Hour)
	if s := v.Get("start"); s != "" {
		t, err := parseTime(s)
		if err != nil {
			return q, fmt.Errorf("start %q: %v", s, err)
		}
		q.start = t
	}
	if !q.start.Before(q.end) {
		return q, fmt.Errorf("start %s must be before end %s", q.start.Format(time.RFC3339), q.end.Format(time.RFC3339))
	}
	q.step = StepFor(q.end.Sub(q.start), proto.DefaultHistoryPoints)
	if s := v.Get("step"); s != "" {
		d, err := parseStep(s)
		if err != nil {
			return q, fmt.Errorf("step %q: %v", s, err)
		}
		q.step = d
	}
	if n := int64(q.end.Sub(q.start) / q.step); n > int64(a.cfg.MaxPoints) {
		return q, fmt.Errorf("step %s over %s gives %d points; at most %d are served (use a larger step)",
			q.step, q.end.Sub(q.start), n, a.cfg.MaxPoints)
	}
	return q, nil
}

// scopeParam reads the scope of a request: scope=cluster|region.<r>|
// instance.<i>, or region= / instance=; none means the cluster.
func scopeParam(v url.Values) (proto.Scope, error) {
	if sc := v.Get("scope"); sc != "" {
		s, err := proto.ParseScope(sc)
		if err != nil {
			return s, fmt.Errorf("scope %q: want cluster, region.<name> or instance.<name>", sc)
		}
		return s, nil
	}
	return proto.ScopeOf(v.Get("region"), v.Get("instance"))
}

// parseTime accepts RFC 3339 or Unix seconds (Prometheus' API does the same).
func parseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f >= 0 && f <= maxUnixSeconds {
		// Whole seconds and the fraction apart: f*1e9 in one int64
		// overflows after 2262 (end=99999999999 came out in 1677).
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
	}
	return time.Time{}, errors.New("want an RFC 3339 time such as 2024-11-07T10:30:00Z or Unix seconds up to 253402300799 (year 9999)")
}

// maxUnixSeconds is 9999-12-31T23:59:59Z, the last time JSON can carry.
const maxUnixSeconds = 253402300799

// parseStep accepts a Go duration ("5s", "1m") or whole seconds ("5").
func parseStep(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		n, nerr := strconv.Atoi(s)
		if nerr != nil {
			return 0, errors.New("want a duration such as 5s or 1m, or whole seconds")
		}
		d = time.Duration(n) * time.Second
	}
	if d < time.Second || d%time.Second != 0 {
		return 0, errors.New("must be a whole number of seconds, at least 1s")
	}
	return d, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
