package proto

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// Subscription limits from the Kairos contract, and for Meridian's optional
// history fields.
const (
	MinIntervalSeconds     = 1
	MaxIntervalSeconds     = 60
	DefaultIntervalSeconds = 1

	DefaultHistorySeconds = 3600
	// MaxHistorySeconds is 30 days, the default rollup retention; an edge may
	// serve less if its history is configured shorter.
	MaxHistorySeconds    = 30 * 24 * 3600
	DefaultHistoryPoints = 720
	MaxHistoryPoints     = 10000
)

// Subscription is what a /ws/metrics client asked for. A connection starts
// with DefaultSubscription; each valid subscription message replaces it whole.
//
// The Kairos fields are metrics, interval_seconds and include_history.
// Meridian adds optional fields that old clients never send: region or
// instance (the scope; default the whole cluster), history_seconds and
// history_points (the window and resolution of include_history), since
// (RFC 3339: replay the snapshots after that time before live ones) and
// strict_metrics (snapshots carry exactly the named metrics).
type Subscription struct {
	// Metrics is what the client named: the TimeSeries sent with
	// include_history, and the extras added to its snapshots. Missing, null
	// or empty means GuideMetrics.
	Metrics         MetricSet
	IntervalSeconds int
	IncludeHistory  bool
	// StrictMetrics makes snapshots carry Metrics alone, without the rest
	// of GuideMetrics. No guide client sends it.
	StrictMetrics bool

	Scope          Scope
	HistorySeconds int
	HistoryPoints  int
	Since          time.Time // zero: no replay
}

// DefaultSubscription is in force right after the upgrade: the guide's
// metrics, every second, no history, the whole cluster.
func DefaultSubscription() Subscription {
	return Subscription{
		Metrics: GuideMetrics, IntervalSeconds: DefaultIntervalSeconds,
		HistorySeconds: DefaultHistorySeconds, HistoryPoints: DefaultHistoryPoints,
	}
}

// SnapshotMetrics is the set of metrics this subscription's Snapshot events
// carry: GuideMetrics plus the extras named in Metrics, or with StrictMetrics
// exactly Metrics. It is never empty.
func (s *Subscription) SnapshotMetrics() MetricSet {
	if s.StrictMetrics && s.Metrics != 0 {
		return s.Metrics
	}
	return s.Metrics | GuideMetrics
}

// maxSubscriptionMetrics bounds the metrics array so that a hostile client
// cannot make the decoder walk a huge list.
const maxSubscriptionMetrics = 64

// ParseSubscription decodes and validates a subscription message. Missing or
// null fields take their defaults; "metrics": [] means GuideMetrics; unknown
// fields are ignored so that newer clients keep working. Every error wraps
// ErrInvalidSubscription and its text names the field and the valid values,
// ready to be sent to the client in an Error event.
func ParseSubscription(data []byte) (Subscription, error) {
	sub := DefaultSubscription()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		return sub, subErr("the message must be a JSON object such as " +
			`{"metrics":["requests_total"],"interval_seconds":1,"include_history":false}`)
	}
	if raw, ok := fields["metrics"]; ok && !isNull(raw) {
		var names []any
		if err := json.Unmarshal(raw, &names); err != nil {
			return sub, subErr("metrics must be an array of metric names; valid names: " + validMetricsText)
		}
		if len(names) > maxSubscriptionMetrics {
			return sub, subErr(fmt.Sprintf("metrics lists %d names; at most %d are accepted", len(names), maxSubscriptionMetrics))
		}
		var set MetricSet
		var unknown []string
		for _, n := range names {
			s, ok := n.(string)
			if !ok {
				return sub, subErr("metrics must contain only strings; valid names: " + validMetricsText)
			}
			m, ok := ParseMetric(s)
			if !ok {
				unknown = append(unknown, fmt.Sprintf("%q", s))
				continue
			}
			set = set.With(m)
		}
		if len(unknown) > 0 {
			return sub, subErr(fmt.Sprintf("unknown metric %s; valid names: %s", strings.Join(unknown, ", "), validMetricsText))
		}
		if set != 0 {
			sub.Metrics = set
		}
	}
	var err error
	if sub.IntervalSeconds, err = intField(fields, "interval_seconds", DefaultIntervalSeconds, MinIntervalSeconds, MaxIntervalSeconds); err != nil {
		return sub, err
	}
	if sub.IncludeHistory, err = boolField(fields, "include_history"); err != nil {
		return sub, err
	}
	if sub.StrictMetrics, err = boolField(fields, "strict_metrics"); err != nil {
		return sub, err
	}
	if sub.HistorySeconds, err = intField(fields, "history_seconds", DefaultHistorySeconds, 1, MaxHistorySeconds); err != nil {
		return sub, err
	}
	if sub.HistoryPoints, err = intField(fields, "history_points", DefaultHistoryPoints, 1, MaxHistoryPoints); err != nil {
		return sub, err
	}
	region, err := stringField(fields, "region")
	if err != nil {
		return sub, err
	}
	instance, err := stringField(fields, "instance")
	if err != nil {
		return sub, err
	}
	if sub.Scope, err = ScopeOf(region, instance); err != nil {
		return sub, subErr(err.Error())
	}
	since, err := stringField(fields, "since")
	if err != nil {
		return sub, err
	}
	if since != "" {
		if sub.Since, err = ParseSince(since); err != nil {
			return sub, subErr(err.Error())
		}
	}
	return sub, nil
}

// ScopeOf builds the scope named by optional region and instance values (a
// subscription's fields or /ws/metrics query parameters): neither is the
// cluster; naming both is an error.
func ScopeOf(region, instance string) (Scope, error) {
	switch {
	case region != "" && instance != "":
		return Scope{}, fmt.Errorf("name a region or an instance, not both (got region %q and instance %q)", region, instance)
	case region != "":
		if err := ValidateToken("region", region); err != nil {
			return Scope{}, err
		}
		return RegionScope(region), nil
	case instance != "":
		if err := ValidateToken("instance", instance); err != nil {
			return Scope{}, err
		}
		return InstanceScope(instance), nil
	}
	return ClusterScope(), nil
}

// intField reads an optional integer field within [lo, hi].
func intField(fields map[string]json.RawMessage, name string, def, lo, hi int) (int, error) {
	raw, ok := fields[name]
	if !ok || isNull(raw) {
		return def, nil
	}
	var v any
	_ = json.Unmarshal(raw, &v)
	f, isNum := v.(float64)
	if !isNum || f != math.Trunc(f) || f < float64(lo) || f > float64(hi) {
		return def, subErr(fmt.Sprintf("%s must be an integer from %d to %d, got %s", name, lo, hi, truncate(string(raw), 32)))
	}
	return int(f), nil
}

// boolField reads an optional boolean field (default false).
func boolField(fields map[string]json.RawMessage, name string) (bool, error) {
	raw, ok := fields[name]
	if !ok || isNull(raw) {
		return false, nil
	}
	var b bool
	if err := json.Unmarshal(raw, &b); err != nil {
		return false, subErr(fmt.Sprintf("%s must be true or false, got %s", name, truncate(string(raw), 32)))
	}
	return b, nil
}

// stringField reads an optional string field.
func stringField(fields map[string]json.RawMessage, name string) (string, error) {
	raw, ok := fields[name]
	if !ok || isNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", subErr(fmt.Sprintf("%s must be a string, got %s", name, truncate(string(raw), 32)))
	}
	return s, nil
}

func subErr(msg string) error {
	return fmt.Errorf("%w: %s", ErrInvalidSubscription, msg)
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Not inside a multi-byte character.
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// Bounds of a since time: replays read nothing older than the Unix epoch,
// and a time must survive JSON (years 0–9999 in UTC) and JetStream's
// start-time option.
var (
	minSince = time.Unix(0, 0).UTC()
	maxSince = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// ParseSince parses a since value (a subscription field or an upgrade URL
// parameter): RFC 3339, from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
func ParseSince(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("since must be an RFC 3339 time such as 2024-11-07T10:30:00Z, got %q", truncate(s, 40))
	}
	if t.Before(minSince) || t.After(maxSince) {
		return time.Time{}, fmt.Errorf("since %q is out of range: give a time from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z", truncate(s, 40))
	}
	return t, nil
}
