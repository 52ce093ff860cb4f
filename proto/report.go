package proto

import (
	"encoding/json"
	"fmt"
	"time"
)

// ReportVersion is the version of Report this build writes.
const ReportVersion = 1

// Counters are one gateway instance's figures since it booted. Everything but
// ActiveConnections is cumulative and only ever grows within one boot.
type Counters struct {
	RequestsTotal   uint64 `json:"requests_total"`
	RequestsSuccess uint64 `json:"requests_success"` // status < 400
	RequestsError   uint64 `json:"requests_error"`   // status >= 400, upstream failures, cancellations
	// DurationSumNanos and DurationCount are the response-time sum and count,
	// kept apart so that means merge as Σsum/Σcount. The sum wraps modulo
	// 2^64; readers use unsigned differences and never treat its wrap as a
	// counter reset.
	DurationSumNanos uint64 `json:"duration_sum_ns"`
	DurationCount    uint64 `json:"duration_count"`
	// LatencyBuckets holds per-bucket (not cumulative) counts for the buckets
	// of LatencyBounds; it has NumLatencyBuckets entries.
	LatencyBuckets []uint64 `json:"latency_buckets"`
	// LatencyHistogram is the high-resolution histogram of the same
	// durations (see Histogram), cumulative like the buckets. Reports of
	// builds before it have none; an aggregator then has no percentiles for
	// that instance but counts everything else. Older aggregators ignore it
	// (unknown fields are ignored) and keep using LatencyBuckets, which is
	// why both travel.
	LatencyHistogram *Histogram `json:"latency_hist,omitempty"`
	// ActiveConnections is a gauge: requests in flight when the report was made.
	ActiveConnections int64 `json:"active_connections"`
}

// Report is what a gateway instance publishes on ReportSubject every publish
// interval, and once more (Final) when it shuts down gracefully.
type Report struct {
	Version  int    `json:"v"`
	Instance string `json:"instance"`
	Region   string `json:"region"`
	// BootID changes every time the instance starts: a new BootID tells the
	// aggregator that the counters restarted from zero.
	BootID string `json:"boot_id"`
	// Seq grows by one per report within a boot; equal or lower sequence
	// numbers are duplicates or reordered messages.
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`       // when the counters were read
	StartTime time.Time `json:"start_time"` // when this boot started
	// Interval is the instance's publish interval, so aggregators can judge
	// staleness per instance.
	Interval time.Duration `json:"interval_ns"`
	// Final is set on the last report of a graceful shutdown.
	Final bool `json:"final,omitempty"`
	Counters
}

// maxReportSize bounds what DecodeReport accepts. A report is ~450 bytes
// plus its histogram: ~1 KB for a realistic spread, and under 32 KB with
// every one of the 1230 buckets holding a 20-digit count.
const maxReportSize = 64 << 10

// Encode returns the report's wire form.
func (r *Report) Encode() ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(r)
}

// DecodeReport parses and validates a report. Reports arrive by the hundred
// thousand a second, so the usual form is read by parseReportFast in one
// pass; anything else by encoding/json, with the same result.
func DecodeReport(data []byte) (Report, error) { return decodeReport(data, nil) }

// ReportDecoder decodes reports like DecodeReport, reusing one histogram's
// buckets for every report it reads in the usual form: a decoded
// LatencyHistogram may then point to the decoder's, valid until the next
// Decode. For a consumer that takes what it keeps out of each report before
// it reads the next. A ReportDecoder is not safe for concurrent use; the
// zero value is ready.
type ReportDecoder struct{ hist Histogram }

// Decode is DecodeReport with the decoder's histogram.
func (d *ReportDecoder) Decode(data []byte) (Report, error) { return decodeReport(data, &d.hist) }

func decodeReport(data []byte, hist *Histogram) (Report, error) {
	var r Report
	var err error
	switch {
	case len(data) > maxReportSize:
		err = fmt.Errorf("decode report: %d bytes exceeds %d: %w", len(data), maxReportSize, ErrMalformed)
	case parseReportInto(data, &r, hist):
		if r.Version != ReportVersion {
			err = fmt.Errorf("decode report: version %d (this build reads %d): %w", r.Version, ReportVersion, ErrUnsupportedVersion)
		} else {
			err = r.Validate()
		}
	default:
		r, err = decodeVersioned[Report]("report", data, maxReportSize, ReportVersion)
	}
	if err != nil {
		return Report{}, err
	}
	if r.LatencyHistogram != nil && !r.LatencyHistogram.Supported() {
		r.LatencyHistogram = nil // a newer encoding: count the report without it
	}
	return r, nil
}

// decodeVersioned is the decoding every versioned NATS message shares: a
// size bound, the version checked before the body is trusted, then the body
// and its own invariants.
func decodeVersioned[T any, PT interface {
	*T
	Validate() error
}](kind string, data []byte, maxSize, version int) (T, error) {
	var zero T
	if len(data) > maxSize {
		return zero, fmt.Errorf("decode %s: %d bytes exceeds %d: %w", kind, len(data), maxSize, ErrMalformed)
	}
	var head struct {
		Version int `json:"v"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return zero, fmt.Errorf("decode %s: %v: %w", kind, err, ErrMalformed)
	}
	if head.Version != version {
		return zero, fmt.Errorf("decode %s: version %d (this build reads %d): %w", kind, head.Version, version, ErrUnsupportedVersion)
	}
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		return zero, fmt.Errorf("decode %s: %v: %w", kind, err, ErrMalformed)
	}
	if err := PT(&v).Validate(); err != nil {
		return zero, err
	}
	return v, nil
}

// Validate checks the report's invariants.
func (r *Report) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("invalid report: "+format+": %w", append(args, ErrMalformed)...)
	}
	if r.Version != ReportVersion {
		return fmt.Errorf("invalid report: version %d: %w", r.Version, ErrUnsupportedVersion)
	}
	if err := ValidateToken("instance", r.Instance); err != nil {
		return bad("%v", err)
	}
	if err := ValidateToken("region", r.Region); err != nil {
		return bad("%v", err)
	}
	if r.BootID == "" || len(r.BootID) > 128 {
		return bad("boot_id must be 1 to 128 characters")
	}
	if r.Seq == 0 {
		return bad("seq must start at 1")
	}
	if r.Time.IsZero() {
		return bad("time is missing")
	}
	if r.Interval <= 0 {
		return bad("interval_ns must be positive")
	}
	if r.RequestsSuccess+r.RequestsError != r.RequestsTotal || r.RequestsSuccess > r.RequestsTotal {
		return bad("requests_success %d + requests_error %d != requests_total %d",
			r.RequestsSuccess, r.RequestsError, r.RequestsTotal)
	}
	if r.ActiveConnections < 0 {
		return bad("active_connections %d is negative", r.ActiveConnections)
	}
	if len(r.LatencyBuckets) != NumLatencyBuckets {
		return bad("latency_buckets has %d entries, want %d", len(r.LatencyBuckets), NumLatencyBuckets)
	}
	if r.LatencyHistogram.Supported() {
		if err := r.LatencyHistogram.Validate(); err != nil {
			return bad("latency_hist: %v", err)
		}
	}
	return nil
}
