package collector

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
)

// Mapping names the series of a gateway's Prometheus exposition that count its
// requests. Either Requests with StatusLabel (one family, labelled with the
// status code or class), or Success and Errors (two unlabelled counters).
//
// A family named in Requests may be a counter or a histogram (its per-status
// sample counts are used, as for Caddy 2.6, whose only per-status series is
// its duration histogram).
type Mapping struct {
	// Requests is the family counting requests by StatusLabel. The label's
	// values may be a code ("404"), a class ("4xx") or a class digit ("4",
	// Envoy); anything else ("other") counts as an error.
	Requests    string `json:"requests,omitempty"`
	StatusLabel string `json:"status_label,omitempty"`
	// Success and Errors are counters of successful and failed requests.
	Success string `json:"success,omitempty"`
	Errors  string `json:"errors,omitempty"`
	// Match keeps only series whose labels have these values (e.g. HAProxy's
	// proxy="fe", to leave out its stats frontend).
	Match map[string]string `json:"match,omitempty"`
	// Latency is a histogram of request durations in LatencyUnit: its sum,
	// count and buckets become the report's (buckets re-bucketed, see
	// rebucket).
	Latency     string `json:"latency,omitempty"`
	LatencyUnit string `json:"latency_unit,omitempty"` // s (default) or ms
	// AverageLatency is a gauge holding the mean duration since the gateway
	// started, in LatencyUnit, for sources with no histogram (Kairos): the
	// sum is rebuilt as mean × requests, so avg_response_time is right but
	// there are no percentiles.
	AverageLatency string `json:"average_latency,omitempty"`
	// Active is a gauge of requests or sessions in flight.
	Active string `json:"active,omitempty"`
}

// Validate checks that the mapping names a way to count requests.
func (m *Mapping) Validate() error {
	switch {
	case m.Requests != "" && (m.Success != "" || m.Errors != ""):
		return fmt.Errorf("mapping: requests and success/errors are alternatives")
	case m.Requests != "" && m.StatusLabel == "":
		return fmt.Errorf("mapping: requests %q needs status_label", m.Requests)
	case m.Requests == "" && (m.Success == "" || m.Errors == ""):
		return fmt.Errorf("mapping: name requests (with status_label) or both success and errors")
	case m.Latency != "" && m.AverageLatency != "":
		return fmt.Errorf("mapping: latency and average_latency are alternatives")
	}
	switch m.LatencyUnit {
	case "", "s", "ms":
	default:
		return fmt.Errorf("mapping: latency_unit %q: want s or ms", m.LatencyUnit)
	}
	return nil
}

// LoadMapping reads a JSON mapping file.
func LoadMapping(path string) (Mapping, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Mapping{}, fmt.Errorf("read mapping: %w", err)
	}
	var m Mapping
	if err := json.Unmarshal(data, &m); err != nil {
		return Mapping{}, fmt.Errorf("read mapping %s: %w", path, err)
	}
	if err := m.Validate(); err != nil {
		return Mapping{}, fmt.Errorf("read mapping %s: %w", path, err)
	}
	return m, nil
}

// profiles are the built-in mappings, from each project's documented metric
// names (the fixtures under testdata/ say where each name comes from).
var profiles = map[string]Mapping{
	// Caddy 2 admin endpoint /metrics (:2019): per-code counts exist only on
	// the duration histogram (Prometheus default buckets: exact conversion).
	"caddy": {
		Requests: "caddy_http_request_duration_seconds", StatusLabel: "code",
		Latency: "caddy_http_request_duration_seconds", Active: "caddy_http_requests_in_flight",
	},
	// HAProxy's built-in exporter (http-request use-service
	// prometheus-exporter): responses by class per frontend. It has only
	// moving averages of times (last 1024 requests), not cumulative ones, so
	// no latency: use the access log or syslog source for latency. Add
	// --scrape-match proxy=<frontend> to leave out other frontends.
	"haproxy": {
		Requests: "haproxy_frontend_http_responses_total", StatusLabel: "code",
		Active: "haproxy_frontend_current_sessions",
	},
	// Envoy admin /stats/prometheus: downstream requests by class digit per
	// HTTP connection manager, latency histogram in milliseconds. Add
	// --scrape-match envoy_http_conn_manager_prefix=<prefix> to leave out
	// the admin listener.
	"envoy": {
		Requests: "envoy_http_downstream_rq_xx", StatusLabel: "envoy_response_code_class",
		Latency: "envoy_http_downstream_rq_time", LatencyUnit: "ms", Active: "envoy_http_downstream_rq_active",
	},
	// Traefik v2/v3 Prometheus metrics, entry-point level. Add
	// --scrape-match entrypoint=<name> to leave out the traefik entry point.
	"traefik": {
		Requests: "traefik_entrypoint_requests_total", StatusLabel: "code",
		Latency: "traefik_entrypoint_request_duration_seconds", Active: "traefik_entrypoint_open_connections",
	},
	// The Kairos gateway's /metrics: success/error counters (it counts 3xx
	// as errors) and a mean response time in milliseconds; its
	// kairos_response_time_bucket series is not a valid histogram (its +Inf
	// bucket is not cumulative), so only the mean is used.
	"kairos": {
		Success: "kairos_requests_success_total", Errors: "kairos_requests_error_total",
		AverageLatency: "kairos_response_time_avg", LatencyUnit: "ms", Active: "kairos_active_connections",
	},
}

// Profile returns the built-in mapping for a gateway.
func Profile(name string) (Mapping, bool) {
	m, ok := profiles[name]
	if ok && m.Match != nil {
		m.Match = maps.Clone(m.Match)
	}
	return m, ok
}

// ProfileNames lists the built-in profiles, sorted.
func ProfileNames() []string { return slices.Sorted(maps.Keys(profiles)) }
