package proto

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// SnapshotVersion is the version of Snapshot this build writes.
const SnapshotVersion = 1

// Snapshot is the merged view of one scope at one second, published by the
// leading aggregator on SnapshotSubject(Scope) and kept in HistoryStream.
//
// Request counters are cumulative across the cluster's life: gateway restarts
// add to them instead of resetting them, so they never decrease.
type Snapshot struct {
	Version int       `json:"v"`
	Scope   Scope     `json:"scope"`
	Time    time.Time `json:"time"` // the aggregator tick, a whole UTC second

	RequestsTotal     uint64 `json:"requests_total"`
	RequestsSuccess   uint64 `json:"requests_success"`
	RequestsError     uint64 `json:"requests_error"`
	ActiveConnections int64  `json:"active_connections"` // sum over live instances
	// AvgResponseTimeMs is Σduration/Σcount over the aggregator's sliding
	// window, in milliseconds; 0 when the window saw no requests.
	AvgResponseTimeMs float64 `json:"avg_response_time_ms"`
	// SuccessRate is RequestsSuccess/RequestsTotal×100; 100 when no request
	// was ever counted (nothing has failed).
	SuccessRate float64 `json:"success_rate"`

	// Cumulative response-time sum and count, so that history can compute
	// Σduration/Σcount for any bucket of time. The sum is kept modulo 2^64
	// (it wraps after months of heavy traffic): readers take unsigned
	// differences, which stay right across a wrap.
	DurationSumNanos uint64 `json:"duration_sum_ns"`
	DurationCount    uint64 `json:"duration_count"`
	// Instances is the number of live (recently reporting) instances.
	Instances int `json:"instances"`

	// LatencyMs are the LatencyQuantiles (p50, p90, p95, p99, max) of the
	// requests in the same sliding window as AvgResponseTimeMs, read from
	// the merged high-resolution histogram of every instance of the scope
	// (never an average of percentiles), in milliseconds; all 0 when the
	// window saw no request with a histogram. Snapshots of builds before
	// them decode with zeros.
	LatencyMs [NumLatencyQuantiles]float64 `json:"latency_ms"`
	// LatencyHistogram holds the requests reported to the aggregator during
	// this tick (since the scope's previous snapshot), so that history can
	// merge any bucket of time exactly. Nil when there were none.
	LatencyHistogram *Histogram `json:"latency_hist,omitempty"`
}

// SuccessRateOf is the success-rate rule shared by the aggregator and history.
func SuccessRateOf(success, total uint64) float64 {
	if total == 0 {
		return 100
	}
	return float64(success) / float64(total) * 100
}

// Value returns metric m of the snapshot as a number.
func (s *Snapshot) Value(m Metric) float64 {
	switch m {
	case RequestsTotal:
		return float64(s.RequestsTotal)
	case RequestsSuccess:
		return float64(s.RequestsSuccess)
	case RequestsError:
		return float64(s.RequestsError)
	case ActiveConnections:
		return float64(s.ActiveConnections)
	case AvgResponseTime:
		return s.AvgResponseTimeMs
	case SuccessRate:
		return s.SuccessRate
	case LatencyP50, LatencyP90, LatencyP95, LatencyP99, LatencyMax:
		return s.LatencyMs[m-LatencyP50]
	}
	return math.NaN()
}

// maxSnapshotSize bounds what DecodeSnapshot accepts: ~500 bytes plus the
// tick's histogram (see maxReportSize).
const maxSnapshotSize = 64 << 10

// Encode returns the snapshot's wire form.
func (s *Snapshot) Encode() ([]byte, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(s)
}

// DecodeSnapshot parses and validates a snapshot.
func DecodeSnapshot(data []byte) (Snapshot, error) {
	s, err := decodeVersioned[Snapshot]("snapshot", data, maxSnapshotSize, SnapshotVersion)
	if err == nil && s.LatencyHistogram != nil && !s.LatencyHistogram.Supported() {
		s.LatencyHistogram = nil
	}
	return s, err
}

// Validate checks the snapshot's invariants.
func (s *Snapshot) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("invalid snapshot: "+format+": %w", append(args, ErrMalformed)...)
	}
	if s.Version != SnapshotVersion {
		return fmt.Errorf("invalid snapshot: version %d: %w", s.Version, ErrUnsupportedVersion)
	}
	if s.Time.IsZero() {
		return bad("time is missing")
	}
	if s.RequestsSuccess+s.RequestsError != s.RequestsTotal || s.RequestsSuccess > s.RequestsTotal {
		return bad("requests_success %d + requests_error %d != requests_total %d",
			s.RequestsSuccess, s.RequestsError, s.RequestsTotal)
	}
	if s.ActiveConnections < 0 || s.Instances < 0 {
		return bad("negative gauge")
	}
	for _, f := range [...]float64{s.AvgResponseTimeMs, s.SuccessRate} {
		if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
			return bad("non-finite or negative rate")
		}
	}
	if s.SuccessRate > 100 {
		return bad("success_rate %v above 100", s.SuccessRate)
	}
	for _, f := range s.LatencyMs {
		if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
			return bad("non-finite or negative latency")
		}
	}
	if s.LatencyHistogram.Supported() {
		if err := s.LatencyHistogram.Validate(); err != nil {
			return bad("latency_hist: %v", err)
		}
	}
	return nil
}
