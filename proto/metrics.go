package proto

import (
	"math/bits"
	"strings"
)

// Metric is one of the snapshot metrics: the Kairos guide's six, then
// Meridian's additions.
type Metric uint8

// The metrics in wire order: a Snapshot event lists its fields in this order.
// The guide's six come first; metrics Meridian adds go after SuccessRate (see
// GuideMetrics).
const (
	RequestsTotal Metric = iota
	RequestsSuccess
	RequestsError
	ActiveConnections
	AvgResponseTime
	SuccessRate
	numMetrics
)

// NumMetrics is the number of metrics the protocol knows.
const NumMetrics = int(numMetrics)

var metricNames = [NumMetrics]string{
	"requests_total",
	"requests_success",
	"requests_error",
	"active_connections",
	"avg_response_time",
	"success_rate",
}

// metricAliases are accepted in subscriptions. The Kairos guide's own examples
// subscribe to response_time_avg (its history key) while the snapshot field is
// avg_response_time; both must select the same metric.
var metricAliases = map[string]Metric{
	"response_time_avg": AvgResponseTime,
}

// String is the metric's wire name.
func (m Metric) String() string {
	if int(m) < NumMetrics {
		return metricNames[m]
	}
	return "unknown"
}

// ParseMetric resolves a wire name or alias.
func ParseMetric(name string) (Metric, bool) {
	for i, n := range metricNames {
		if n == name {
			return Metric(i), true
		}
	}
	m, ok := metricAliases[name]
	return m, ok
}

// MetricNames lists the canonical metric names in wire order.
func MetricNames() []string {
	out := make([]string, NumMetrics)
	copy(out, metricNames[:])
	return out
}

// validMetricsText is the list quoted in error messages.
var validMetricsText = strings.Join(metricNames[:], ", ") + " (alias: response_time_avg)"

// MetricSet is a set of metrics as a bit mask. Distinct sets are few (at most
// 2^NumMetrics), which lets an edge encode a snapshot once per set.
type MetricSet uint32

// AllMetrics selects every metric the protocol knows.
const AllMetrics MetricSet = 1<<NumMetrics - 1

// GuideMetrics is the Kairos guide's six metrics. Every Snapshot event carries
// them whatever the subscription names, because the guide defines a Snapshot
// as carrying every KPI and its clients read fields they did not subscribe to.
// A metric outside GuideMetrics is a Meridian extra: it is sent only to
// clients that name it. The subscription's strict_metrics extension is the
// one way to get fewer (see Subscription.SnapshotMetrics).
const GuideMetrics MetricSet = 1<<(SuccessRate+1) - 1

// With returns s plus m.
func (s MetricSet) With(m Metric) MetricSet { return s | 1<<m }

// Has reports whether m is in s.
func (s MetricSet) Has(m Metric) bool { return s&(1<<m) != 0 }

// Len is the number of metrics in s.
func (s MetricSet) Len() int { return bits.OnesCount32(uint32(s & AllMetrics)) }

// Metrics lists the members of s in wire order.
func (s MetricSet) Metrics() []Metric {
	out := make([]Metric, 0, s.Len())
	for m := Metric(0); m < numMetrics; m++ {
		if s.Has(m) {
			out = append(out, m)
		}
	}
	return out
}

// SetOf builds a set.
func SetOf(ms ...Metric) MetricSet {
	var s MetricSet
	for _, m := range ms {
		s = s.With(m)
	}
	return s
}
