package collector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/meridian-metrics/meridian/proto"
)

// Defaults for zero ScrapeConfig fields.
const (
	DefaultScrapeInterval = time.Second
	// MaxScrapeBytes bounds one scraped exposition; Envoy's, the largest
	// here, is a few MB with thousands of clusters.
	MaxScrapeBytes = 32 << 20
)

// ScrapeConfig configures a ScrapeSource.
type ScrapeConfig struct {
	// URL is the gateway's metrics endpoint. Required.
	URL string
	// Mapping names the series to read (a Profile or a mapping file).
	Mapping Mapping
	// Interval between scrapes. Default DefaultScrapeInterval.
	Interval time.Duration
	// Client scrapes. Default: a client with a 10 s timeout.
	Client *http.Client
	// Logger receives scrape failures (on change only). Default
	// slog.Default().
	Logger *slog.Logger
}

// rawReading is one scrape, reduced to what a report needs. Request and
// duration counts are the gateway's cumulative values since it started.
type rawReading struct {
	Success  uint64   `json:"success"`
	Errors   uint64   `json:"errors"`
	SumNanos uint64   `json:"sum_ns"`
	Count    uint64   `json:"count"`
	Buckets  []uint64 `json:"buckets"`
	Active   int64    `json:"-"`
}

// ScrapeSource reads a gateway's Prometheus metrics endpoint. Its counters
// are the sum of the increases it has seen since its boot, and the last
// reading is checkpointed, so a collector restart counts only what happened
// since. A reading lower than the one before (the gateway restarted and its
// counters started again from zero) is a new boot: the source signals it
// (BootResetter), keeps reporting the old boot's counters until the
// collector has published that boot's final report, and then reports the
// new readings from zero under the new boot, so totals keep counting up.
// What happened between the last scrape before a gateway restart and the
// restart itself is lost: the gateway took it with it.
//
// Concurrency: as LogSource.
type ScrapeSource struct {
	cfg ScrapeConfig
	log *slog.Logger

	mu      sync.Mutex
	acc     proto.Counters
	last    rawReading
	pending *rawReading // the latest reading after a reset, until NewBoot
	resets  chan struct{}
}

// Validate reports the first value in c that no default repairs.
func (c ScrapeConfig) Validate() error {
	switch {
	case c.URL == "":
		return errors.New("URL is required")
	case c.Interval < 0:
		return errors.New("interval must not be negative")
	}
	return c.Mapping.Validate()
}

// withDefaults fills zero fields; call it after Validate.
func (c ScrapeConfig) withDefaults() ScrapeConfig {
	if c.Interval == 0 {
		c.Interval = DefaultScrapeInterval
	}
	if c.Client == nil {
		c.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// NewScrapeSource validates cfg and builds a ScrapeSource.
func NewScrapeSource(cfg ScrapeConfig) (*ScrapeSource, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new scrape source: %w", err)
	}
	cfg = cfg.withDefaults()
	return &ScrapeSource{
		cfg:    cfg,
		log:    cfg.Logger.With("source", "scrape", "url", cfg.URL),
		acc:    proto.Counters{LatencyBuckets: make([]uint64, proto.NumLatencyBuckets)},
		last:   rawReading{Buckets: make([]uint64, proto.NumLatencyBuckets)},
		resets: make(chan struct{}, 1),
	}, nil
}

// Restore resumes the counters and the last reading of a checkpoint.
func (s *ScrapeSource) Restore(counters proto.Counters, state json.RawMessage) error {
	var last rawReading
	if err := json.Unmarshal(state, &last); err != nil {
		return fmt.Errorf("restore scrape state: %w", err)
	}
	if len(last.Buckets) != proto.NumLatencyBuckets {
		return fmt.Errorf("restore scrape state: %d buckets, want %d", len(last.Buckets), proto.NumLatencyBuckets)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.acc, s.last = counters, last
	return nil
}

// Read returns the counters and the last reading they include.
func (s *ScrapeSource) Read() (proto.Counters, json.RawMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.acc
	c.LatencyBuckets = append([]uint64(nil), s.acc.LatencyBuckets...)
	c.ActiveConnections = s.last.Active
	state, _ := json.Marshal(s.last) // plain struct: cannot fail
	return c, state
}

// Run scrapes every Interval until ctx ends.
func (s *ScrapeSource) Run(ctx context.Context) error {
	ticker := time.NewTicker(s.cfg.Interval)
	defer ticker.Stop()
	var lastErr string
	for {
		err := s.ScrapeOnce(ctx)
		switch {
		case err != nil && ctx.Err() == nil && err.Error() != lastErr:
			s.log.Warn("scraping the gateway", "err", err)
			lastErr = err.Error()
		case err == nil && lastErr != "":
			s.log.Info("scraping the gateway recovered")
			lastErr = ""
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// ScrapeOnce scrapes the endpoint and counts what changed since the last
// reading.
func (s *ScrapeSource) ScrapeOnce(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.cfg.URL, nil)
	if err != nil {
		return fmt.Errorf("scrape %s: %w", s.cfg.URL, err)
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return fmt.Errorf("scrape: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("scrape %s: status %d", s.cfg.URL, resp.StatusCode)
	}
	r, err := ParseExposition(io.LimitReader(resp.Body, MaxScrapeBytes), s.cfg.Mapping)
	if err != nil {
		return err
	}
	s.apply(r)
	return nil
}

// Resets signals a counter reset in the gateway (see BootResetter).
func (s *ScrapeSource) Resets() <-chan struct{} { return s.resets }

// NewBoot starts the new boot a reset announced: the counters become the
// latest reading since the gateway's restart.
func (s *ScrapeSource) NewBoot() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending == nil {
		return
	}
	s.acc = proto.Counters{LatencyBuckets: make([]uint64, proto.NumLatencyBuckets)}
	s.last = rawReading{Buckets: make([]uint64, proto.NumLatencyBuckets)}
	r := *s.pending
	s.pending = nil
	s.add(r)
}

// apply adds the increase from the last reading to the counters; a reading
// lower than the last (a gateway restart) waits for NewBoot.
func (s *ScrapeSource) apply(r rawReading) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending != nil {
		// Waiting for the new boot: keep the latest reading, unless it
		// went back again, which nothing can count better than from zero.
		s.pending = &r
		return
	}
	if r.lowerThan(&s.last) {
		s.log.Info("the gateway's counters went back: it restarted")
		s.pending = &r
		select {
		case s.resets <- struct{}{}:
		default:
		}
		return
	}
	s.add(r)
}

// lowerThan reports whether any counter of r is below l's.
func (r *rawReading) lowerThan(l *rawReading) bool {
	if r.Success < l.Success || r.Errors < l.Errors || r.Count < l.Count {
		return true
	}
	for i := range r.Buckets {
		if r.Buckets[i] < l.Buckets[i] {
			return true
		}
	}
	return false
}

// add counts the increase from the last reading to r, which is not lower.
func (s *ScrapeSource) add(r rawReading) {
	l := &s.last
	ds, de := r.Success-l.Success, r.Errors-l.Errors
	s.acc.RequestsSuccess += ds
	s.acc.RequestsError += de
	s.acc.RequestsTotal += ds + de
	s.acc.DurationCount += r.Count - l.Count
	if r.SumNanos > l.SumNanos {
		s.acc.DurationSumNanos += r.SumNanos - l.SumNanos
	} else {
		// A mean-derived or float sum rounded down: never move backwards.
		r.SumNanos = l.SumNanos
	}
	for i := range r.Buckets {
		s.acc.LatencyBuckets[i] += r.Buckets[i] - l.Buckets[i]
	}
	*l = r
}

// ParseExposition reads a Prometheus text exposition and reduces it to the
// counts m names.
func ParseExposition(in io.Reader, m Mapping) (rawReading, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(in)
	if err != nil {
		return rawReading{}, fmt.Errorf("parse exposition: %w", err)
	}
	r := rawReading{Buckets: make([]uint64, proto.NumLatencyBuckets)}
	unit := time.Second
	if m.LatencyUnit == "ms" {
		unit = time.Millisecond
	}
	if m.Requests != "" {
		fam, ok := fams[m.Requests]
		if !ok {
			return rawReading{}, fmt.Errorf("parse exposition: no %s series", m.Requests)
		}
		for _, mt := range matching(fam, m.Match) {
			n := sampleCount(fam.GetType(), mt)
			if successClass(label(mt, m.StatusLabel)) {
				r.Success += n
			} else {
				r.Errors += n
			}
		}
	} else {
		for _, f := range []struct {
			name string
			dst  *uint64
		}{{m.Success, &r.Success}, {m.Errors, &r.Errors}} {
			fam, ok := fams[f.name]
			if !ok {
				return rawReading{}, fmt.Errorf("parse exposition: no %s series", f.name)
			}
			for _, mt := range matching(fam, m.Match) {
				*f.dst += sampleCount(fam.GetType(), mt)
			}
		}
	}
	switch {
	case m.Latency != "":
		fam, ok := fams[m.Latency]
		if !ok {
			break // no request yet: the histogram appears with the first one
		}
		if fam.GetType() != dto.MetricType_HISTOGRAM {
			return rawReading{}, fmt.Errorf("parse exposition: %s is a %s, not a histogram", m.Latency, fam.GetType())
		}
		var sum float64
		for _, mt := range matching(fam, m.Match) {
			h := mt.GetHistogram()
			sum += h.GetSampleSum()
			r.Count += h.GetSampleCount()
			upper := make([]time.Duration, 0, len(h.GetBucket()))
			cum := make([]uint64, 0, len(h.GetBucket()))
			for _, b := range h.GetBucket() {
				upper = append(upper, boundToDuration(b.GetUpperBound(), unit))
				cum = append(cum, b.GetCumulativeCount())
			}
			for i, n := range rebucket(upper, cum, h.GetSampleCount()) {
				r.Buckets[i] += n
			}
		}
		r.SumNanos = floatToNanos(sum, unit)
	case m.AverageLatency != "":
		fam, ok := fams[m.AverageLatency]
		if !ok {
			return rawReading{}, fmt.Errorf("parse exposition: no %s series", m.AverageLatency)
		}
		var mean float64
		for _, mt := range matching(fam, m.Match) {
			mean = gaugeValue(mt)
		}
		r.Count = r.Success + r.Errors
		r.SumNanos = floatToNanos(mean*float64(r.Count), unit)
	}
	if m.Active != "" {
		if fam, ok := fams[m.Active]; ok {
			var act float64
			for _, mt := range matching(fam, m.Match) {
				act += gaugeValue(mt)
			}
			r.Active = int64(max(math.Round(act), 0))
		}
	}
	return r, nil
}

func matching(fam *dto.MetricFamily, match map[string]string) []*dto.Metric {
	var out []*dto.Metric
	for _, mt := range fam.GetMetric() {
		ok := true
		for k, v := range match {
			if label(mt, k) != v {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, mt)
		}
	}
	return out
}

func label(mt *dto.Metric, name string) string {
	for _, l := range mt.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// successClass reports whether a status label value is below 400: a code
// ("302"), a class ("3xx") or a class digit ("3"). Anything else ("other",
// "-") is an error, as the gateway counts statuses outside 100–599.
func successClass(v string) bool {
	if v == "" || v[0] < '1' || v[0] > '3' {
		return false
	}
	switch {
	case len(v) == 1:
		return true
	case len(v) == 3 && (v[1:] == "xx" || v[1] >= '0' && v[1] <= '9' && v[2] >= '0' && v[2] <= '9'):
		return true
	}
	return false
}

// sampleCount is a counter's value or a histogram's or summary's count.
func sampleCount(t dto.MetricType, mt *dto.Metric) uint64 {
	var v float64
	switch t {
	case dto.MetricType_HISTOGRAM:
		return mt.GetHistogram().GetSampleCount()
	case dto.MetricType_SUMMARY:
		return mt.GetSummary().GetSampleCount()
	case dto.MetricType_COUNTER:
		v = mt.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		v = mt.GetGauge().GetValue()
	default:
		v = mt.GetUntyped().GetValue()
	}
	if !(v > 0) || math.IsInf(v, 0) || v >= 1<<63 {
		return 0
	}
	return uint64(math.Round(v))
}

func gaugeValue(mt *dto.Metric) float64 {
	var v float64
	switch {
	case mt.Gauge != nil:
		v = mt.GetGauge().GetValue()
	case mt.Untyped != nil:
		v = mt.GetUntyped().GetValue()
	case mt.Counter != nil:
		v = mt.GetCounter().GetValue()
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

func floatToNanos(v float64, unit time.Duration) uint64 {
	f := v * float64(unit)
	if !(f > 0) || f >= 1<<63 {
		return 0
	}
	return uint64(math.Round(f))
}
