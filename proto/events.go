package proto

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// Kairos event types, the "type" field of every server message.
const (
	EventSnapshot   = "Snapshot"
	EventTimeSeries = "TimeSeries"
	EventError      = "Error"
	EventHeartbeat  = "Heartbeat"
)

// Point is one history sample of a metric.
type Point struct {
	Time  time.Time `json:"timestamp"`
	Value float64   `json:"value"`
}

// The Append* encoders write Kairos events without reflection or allocation
// beyond growing dst, so that an edge can encode once per tick and metric set
// into a reused buffer.

// AppendSnapshotEvent appends a Snapshot event carrying only the metrics in set.
func AppendSnapshotEvent(dst []byte, s *Snapshot, set MetricSet) []byte {
	dst = append(dst, `{"type":"Snapshot","timestamp":"`...)
	dst = AppendTimestamp(dst, s.Time)
	dst = append(dst, '"')
	for m := Metric(0); m < numMetrics; m++ {
		if !set.Has(m) {
			continue
		}
		dst = append(dst, `,"`...)
		dst = append(dst, metricNames[m]...)
		dst = append(dst, `":`...)
		switch m {
		case RequestsTotal:
			dst = strconv.AppendUint(dst, s.RequestsTotal, 10)
		case RequestsSuccess:
			dst = strconv.AppendUint(dst, s.RequestsSuccess, 10)
		case RequestsError:
			dst = strconv.AppendUint(dst, s.RequestsError, 10)
		case ActiveConnections:
			dst = strconv.AppendInt(dst, s.ActiveConnections, 10)
		case LatencyP50, LatencyP90, LatencyP95, LatencyP99, LatencyMax:
			// Four decimals (0.1 µs): three would add up to 0.5 % of error
			// at the bottom of the 0.1 ms range, on top of the histogram's.
			dst = appendFloatPrec(dst, s.Value(m), 1e4)
		default:
			dst = appendFloat(dst, s.Value(m))
		}
	}
	return append(dst, '}')
}

// AppendTimeSeriesEvent appends a TimeSeries event for one metric.
func AppendTimeSeriesEvent(dst []byte, metric Metric, points []Point) []byte {
	dst = append(dst, `{"type":"TimeSeries","metric_name":"`...)
	dst = append(dst, metric.String()...)
	dst = append(dst, `","data_points":[`...)
	scale := 1000.0
	if metric >= LatencyP50 && metric <= LatencyMax {
		scale = 1e4 // as in Snapshot events
	}
	for i := range points {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"timestamp":"`...)
		dst = AppendTimestamp(dst, points[i].Time)
		dst = append(dst, `","value":`...)
		dst = appendFloatPrec(dst, points[i].Value, scale)
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}

// AppendErrorEvent appends an Error event.
func AppendErrorEvent(dst []byte, message string) []byte {
	dst = append(dst, `{"type":"Error","message":`...)
	dst = appendJSONString(dst, message)
	return append(dst, '}')
}

// AppendHeartbeatEvent appends a Heartbeat event.
func AppendHeartbeatEvent(dst []byte, t time.Time) []byte {
	dst = append(dst, `{"type":"Heartbeat","timestamp":"`...)
	dst = AppendTimestamp(dst, t)
	return append(dst, `"}`...)
}

// AppendTimestamp appends t as RFC 3339 in UTC ("Z"), with a fraction only
// when t has one.
func AppendTimestamp(dst []byte, t time.Time) []byte {
	return t.UTC().AppendFormat(dst, time.RFC3339Nano)
}

// appendFloat writes finite numbers rounded to 3 decimals (plenty for
// milliseconds and percentages, and short on the wire); JSON has no NaN or
// Inf, so those become 0.
func appendFloat(dst []byte, v float64) []byte { return appendFloatPrec(dst, v, 1000) }

// appendFloatPrec is appendFloat rounding to 1/scale.
func appendFloatPrec(dst []byte, v, scale float64) []byte {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return append(dst, '0')
	}
	return strconv.AppendFloat(dst, math.Round(v*scale)/scale, 'f', -1, 64)
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, `\ufffd`...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

// Event is a decoded server message, for clients (meridian watch, tests).
type Event struct {
	Type      string
	Timestamp time.Time
	// Values holds the metrics present in a Snapshot event, by wire name.
	Values map[string]float64
	// MetricName and DataPoints are set for TimeSeries events.
	MetricName string
	DataPoints []Point
	// Message is set for Error events.
	Message string
}

// DecodeEvent parses one server message.
func DecodeEvent(data []byte) (Event, error) {
	var ev Event
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return ev, fmt.Errorf("decode event: %v: %w", err, ErrMalformed)
	}
	if err := json.Unmarshal(fields["type"], &ev.Type); err != nil {
		return ev, fmt.Errorf("decode event: type is missing or not a string: %w", ErrMalformed)
	}
	if raw, ok := fields["timestamp"]; ok {
		if err := json.Unmarshal(raw, &ev.Timestamp); err != nil {
			return ev, fmt.Errorf("decode event: timestamp: %v: %w", err, ErrMalformed)
		}
	}
	switch ev.Type {
	case EventSnapshot:
		ev.Values = make(map[string]float64, NumMetrics)
		for _, name := range metricNames {
			raw, ok := fields[name]
			if !ok {
				continue
			}
			var v float64
			if err := json.Unmarshal(raw, &v); err != nil {
				return ev, fmt.Errorf("decode event: %s: %v: %w", name, err, ErrMalformed)
			}
			ev.Values[name] = v
		}
	case EventTimeSeries:
		if err := json.Unmarshal(fields["metric_name"], &ev.MetricName); err != nil {
			return ev, fmt.Errorf("decode event: metric_name: %w", ErrMalformed)
		}
		if err := json.Unmarshal(fields["data_points"], &ev.DataPoints); err != nil {
			return ev, fmt.Errorf("decode event: data_points: %v: %w", err, ErrMalformed)
		}
	case EventError:
		if err := json.Unmarshal(fields["message"], &ev.Message); err != nil {
			return ev, fmt.Errorf("decode event: message: %w", ErrMalformed)
		}
	case EventHeartbeat:
	default:
		return ev, fmt.Errorf("decode event: unknown type %q: %w", ev.Type, ErrMalformed)
	}
	return ev, nil
}
