package proto

// Kind is what a metric measures, which decides how it is downsampled into
// a history point or a one-minute rollup (see history.Downsample) and how
// /api/metrics/list describes it.
type Kind uint8

// The kinds. KindUnknown is the zero value: every Metric must declare one.
const (
	KindUnknown Kind = iota
	// KindCounter is cumulative and never decreases: a bucket takes its
	// last value.
	KindCounter
	// KindGauge is a level at an instant: a bucket takes the mean.
	KindGauge
	// KindRatio is a quotient of cumulative sums: avg_response_time
	// (Σduration/Σcount) and success_rate (success/total). A bucket computes
	// it from the sums, never by averaging the quotients.
	KindRatio
)

var kindNames = [...]string{"unknown", "counter", "gauge", "ratio"}

// String is the kind's name in /api/metrics/list.
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// metricKinds and metricUnits are indexed by Metric; a test checks that
// every metric has both.
var (
	metricKinds = [NumMetrics]Kind{
		RequestsTotal:     KindCounter,
		RequestsSuccess:   KindCounter,
		RequestsError:     KindCounter,
		ActiveConnections: KindGauge,
		AvgResponseTime:   KindRatio,
		SuccessRate:       KindRatio,
	}
	metricUnits = [NumMetrics]string{
		RequestsTotal:     "requests",
		RequestsSuccess:   "requests",
		RequestsError:     "requests",
		ActiveConnections: "requests",
		AvgResponseTime:   "milliseconds",
		SuccessRate:       "percent",
	}
)

// Kind is the metric's kind; KindUnknown for an unknown metric.
func (m Metric) Kind() Kind {
	if int(m) < NumMetrics {
		return metricKinds[m]
	}
	return KindUnknown
}

// Unit is the unit of the metric's values.
func (m Metric) Unit() string {
	if int(m) < NumMetrics {
		return metricUnits[m]
	}
	return ""
}
