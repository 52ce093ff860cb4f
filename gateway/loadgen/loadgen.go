// Package loadgen sends paced HTTP load at one or more targets and accounts
// for every request it sends. `meridian loadgen`, `meridian dev` and the
// integration tests use it to drive gateways with real HTTP traffic.
//
// Pacing is open-loop: request k is due at k/RPS after the start, whatever
// happened to earlier requests, and one timer loop hands due requests to a
// fixed pool of Concurrency workers. When every worker is busy the loop waits
// for one (in-flight is bounded), and then sends the overdue requests as
// workers free up.
//
// Accounting is exact: every request sent ends up in exactly one of
// Succeeded (2xx/3xx), Failed (4xx/5xx) or TransportErrors (no response, or
// the response body could not be read to the end), so Sent == Succeeded +
// Failed + TransportErrors. Responses are read to the end and closed, and
// when the run stops early the requests in flight are waited for (each is
// bounded by Timeout) before Run returns.
//
// Concurrency contract: Run may be called concurrently with different
// Configs. OnResult is called from the worker goroutines concurrently and
// must be safe for that.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// Defaults for zero Config fields.
const (
	DefaultConcurrency = 64
	DefaultTimeout     = 10 * time.Second
)

// ErrInvalidConfig is wrapped by every configuration error Run returns.
var ErrInvalidConfig = errors.New("invalid load configuration")

// Config describes a load run. Zero fields take the documented defaults.
type Config struct {
	// Targets are the URLs requested (GET), round-robin. Required.
	Targets []string
	// RPS is the request rate per second. Required, > 0.
	RPS float64
	// Duration stops sending after this long; Requests stops after exactly
	// this many requests. At least one of them is required unless Continuous
	// is set; with both, whichever comes first ends the run.
	Duration time.Duration
	Requests int
	// Continuous sends until ctx ends, for `meridian dev`. Cancelling ctx is
	// then the normal end of the run, not an error.
	Continuous bool
	// ErrorRatio is the fraction (0 to 1) of requests that ask the demo
	// upstream for an error by adding status=500 to the query. They are
	// spread evenly and deterministically over each target's requests: a
	// target's request k (counting from 1) asks for an error when
	// floor(k*ErrorRatio) > floor((k-1)*ErrorRatio), so any N requests to one
	// target include floor(N*ErrorRatio) of them. Counting per target gives
	// every target its share; counted over the round-robin sequence, every
	// error could fall on one target (with two targets and a ratio of 1/20,
	// all on the second).
	ErrorRatio float64
	// Concurrency bounds the requests in flight. Default DefaultConcurrency.
	Concurrency int
	// Client sends the requests. Default: a client with its own transport
	// keeping Concurrency idle connections per host, closed after the run.
	Client *http.Client
	// Timeout bounds each request, reading its body included. Default
	// DefaultTimeout.
	Timeout time.Duration
	// OnResult, if set, is called for every finished request with its status,
	// or 0 and the error for a transport error.
	OnResult func(status int, err error)
}

// target is a parsed target with its two prepared request URLs.
type target struct {
	ok, fail string // plain, and with status=500
}

func (cfg *Config) validate() ([]target, error) {
	bad := func(format string, args ...any) ([]target, error) {
		return nil, fmt.Errorf("loadgen: "+format+": %w", append(args, ErrInvalidConfig)...)
	}
	if len(cfg.Targets) == 0 {
		return bad("no targets; give at least one http:// or https:// URL")
	}
	if math.IsNaN(cfg.RPS) || math.IsInf(cfg.RPS, 0) || cfg.RPS <= 0 {
		return bad("rps %v must be a positive number", cfg.RPS)
	}
	if cfg.Duration < 0 {
		return bad("duration %s is negative", cfg.Duration)
	}
	if cfg.Requests < 0 {
		return bad("requests %d is negative", cfg.Requests)
	}
	if cfg.Duration == 0 && cfg.Requests == 0 && !cfg.Continuous {
		return bad("no end: set a duration, a number of requests, or continuous")
	}
	if math.IsNaN(cfg.ErrorRatio) || cfg.ErrorRatio < 0 || cfg.ErrorRatio > 1 {
		return bad("error ratio %v must be between 0 and 1", cfg.ErrorRatio)
	}
	if cfg.Concurrency < 0 {
		return bad("concurrency %d is negative", cfg.Concurrency)
	}
	if cfg.Timeout < 0 {
		return bad("timeout %s is negative", cfg.Timeout)
	}
	targets := make([]target, len(cfg.Targets))
	for i, raw := range cfg.Targets {
		u, err := url.Parse(raw)
		if err != nil {
			return bad("target %d: %v", i+1, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			return bad("target %d %q: want an absolute http:// or https:// URL", i+1, raw)
		}
		targets[i].ok = u.String()
		q := u.Query()
		q.Set("status", "500")
		u.RawQuery = q.Encode()
		targets[i].fail = u.String()
	}
	return targets, nil
}

// Run sends the configured load and returns its accounting. It returns an
// error wrapping ErrInvalidConfig for a bad Config, without sending anything.
// If ctx ends before the configured end (never the case with Continuous), Run
// stops sending, waits for the requests in flight, and returns the exact
// Result of what was sent together with an error wrapping ctx's cause.
func Run(ctx context.Context, cfg Config) (Result, error) {
	targets, err := cfg.validate()
	if err != nil {
		return Result{}, err
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	workers := cfg.Concurrency
	if cfg.Requests > 0 && cfg.Requests < workers {
		workers = cfg.Requests
	}
	client := cfg.Client
	if client == nil {
		tr := &http.Transport{
			DialContext:         (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        workers * len(targets),
			MaxIdleConnsPerHost: workers,
			IdleConnTimeout:     30 * time.Second,
			ForceAttemptHTTP2:   true,
		}
		defer tr.CloseIdleConnections()
		client = &http.Client{Transport: tr}
	}

	r := &runner{
		cfg:     cfg,
		client:  client,
		targets: targets,
		// In-flight requests run to completion (bounded by Timeout) even
		// after ctx ends, so that every request sent is accounted for.
		reqCtx:  context.WithoutCancel(ctx),
		jobs:    make(chan job),
		results: make([]Result, workers),
	}
	start := time.Now()
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() { r.work(&r.results[i]) })
	}
	sent := r.pace(ctx, start)
	close(r.jobs)
	wg.Wait()

	res := Result{ByStatus: make(map[int]uint64), Elapsed: time.Since(start)}
	for i := range r.results {
		res.merge(&r.results[i])
	}
	if ctx.Err() != nil && !cfg.Continuous && !r.finished(sent, time.Since(start)) {
		return res, fmt.Errorf("loadgen: stopped after %d requests: %w", res.Sent, context.Cause(ctx))
	}
	return res, nil
}

type job struct {
	url string
}

type runner struct {
	cfg     Config
	client  *http.Client
	targets []target
	reqCtx  context.Context
	jobs    chan job
	results []Result // one per worker, merged at the end
}

// finished reports whether the configured end has been reached after sent
// requests.
func (r *runner) finished(sent int, elapsed time.Duration) bool {
	return r.cfg.Requests > 0 && sent >= r.cfg.Requests ||
		r.cfg.Duration > 0 && elapsed >= r.cfg.Duration
}

// pace hands out requests at their due times until the configured end or
// ctx ends, and returns how many it handed out. It is the only timer.
func (r *runner) pace(ctx context.Context, start time.Time) int {
	period := float64(time.Second) / r.cfg.RPS
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for k := 0; ; k++ {
		if r.cfg.Requests > 0 && k >= r.cfg.Requests {
			return k
		}
		due := time.Duration(float64(k) * period)
		if r.cfg.Duration > 0 && due >= r.cfg.Duration {
			return k
		}
		if wait := due - time.Since(start); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return k
			}
		}
		if ctx.Err() != nil {
			return k
		}
		select {
		case r.jobs <- job{url: r.url(k)}:
		case <-ctx.Done():
			return k
		}
	}
}

// url is request k's URL: round-robin over the targets, with the error
// requests spread over each target's own sequence by ErrorRatio.
func (r *runner) url(k int) string {
	t := &r.targets[k%len(r.targets)]
	n := float64(k/len(r.targets) + 1)
	if math.Floor(n*r.cfg.ErrorRatio) > math.Floor((n-1)*r.cfg.ErrorRatio) {
		return t.fail
	}
	return t.ok
}

func (r *runner) work(res *Result) {
	res.ByStatus = make(map[int]uint64)
	for j := range r.jobs {
		status, err := r.do(j.url)
		res.Sent++
		switch {
		case err != nil:
			res.TransportErrors++
		case status < 400:
			res.Succeeded++
			res.ByStatus[status]++
		default:
			res.Failed++
			res.ByStatus[status]++
		}
		if r.cfg.OnResult != nil {
			r.cfg.OnResult(status, err)
		}
	}
}

// do sends one request and reads its response to the end. A response whose
// body cannot be read completely is a transport error: the exchange failed.
func (r *runner) do(u string) (int, error) {
	ctx, cancel := context.WithTimeout(r.reqCtx, r.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, fmt.Errorf("build request: %w", err)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	if cerr := resp.Body.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("read response body: %w", err)
	}
	return resp.StatusCode, nil
}
