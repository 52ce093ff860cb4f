package proto

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
)

// Subscription limits from the Kairos contract.
const (
	MinIntervalSeconds     = 1
	MaxIntervalSeconds     = 60
	DefaultIntervalSeconds = 1
)

// Subscription is what a /ws/metrics client asked for. A connection starts
// with DefaultSubscription; each valid subscription message replaces it whole.
type Subscription struct {
	Metrics         MetricSet
	IntervalSeconds int
	IncludeHistory  bool
}

// DefaultSubscription is in force right after the upgrade: all metrics, every
// second, no history.
func DefaultSubscription() Subscription {
	return Subscription{Metrics: AllMetrics, IntervalSeconds: DefaultIntervalSeconds}
}

// maxSubscriptionMetrics bounds the metrics array so that a hostile client
// cannot make the decoder walk a huge list.
const maxSubscriptionMetrics = 64

// ParseSubscription decodes and validates a subscription message. Missing or
// null fields take their defaults; "metrics": [] means all metrics; unknown
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
	if raw, ok := fields["interval_seconds"]; ok && !isNull(raw) {
		var v any
		_ = json.Unmarshal(raw, &v) // raw is valid JSON: it came out of a valid object
		f, isNum := v.(float64)
		if !isNum || f != math.Trunc(f) || f < MinIntervalSeconds || f > MaxIntervalSeconds {
			return sub, subErr(fmt.Sprintf("interval_seconds must be an integer from %d to %d, got %s",
				MinIntervalSeconds, MaxIntervalSeconds, truncate(string(raw), 32)))
		}
		sub.IntervalSeconds = int(f)
	}
	if raw, ok := fields["include_history"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &sub.IncludeHistory); err != nil {
			return sub, subErr(fmt.Sprintf("include_history must be true or false, got %s", truncate(string(raw), 32)))
		}
	}
	return sub, nil
}

func subErr(msg string) error {
	return fmt.Errorf("%w: %s", ErrInvalidSubscription, msg)
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
