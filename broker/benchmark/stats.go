package benchmark

import (
	"math"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// dist summarises a set of durations, in milliseconds.
type dist struct {
	N    int     `json:"n"`
	Min  float64 `json:"min_ms"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p999_ms"`
	Max  float64 `json:"max_ms"`
}

// distOf summarises vs (nanoseconds), sorting it in place. Quantiles are
// nearest-rank: the smallest value with at least q of the set at or below
// it, so p99 of 100 values is the 99th.
func distOf(vs []int64) dist {
	if len(vs) == 0 {
		return dist{}
	}
	slices.Sort(vs)
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(vs)))) - 1
		return ms(vs[min(max(i, 0), len(vs)-1)])
	}
	return dist{
		N: len(vs), Min: ms(vs[0]), Max: ms(vs[len(vs)-1]),
		P50: q(0.50), P90: q(0.90), P99: q(0.99), P999: q(0.999),
	}
}

func ms(ns int64) float64 { return float64(ns) / 1e6 }

// histData is a Prometheus histogram: cumulative counts per upper bound
// (+Inf implicit, as Count).
type histData struct {
	Bounds     []float64 `json:"bounds"`
	Cumulative []uint64  `json:"cumulative"`
	Count      uint64    `json:"count"`
}

func histOf(h *dto.Histogram) *histData {
	d := &histData{Count: h.GetSampleCount()}
	for _, b := range h.GetBucket() {
		d.Bounds = append(d.Bounds, b.GetUpperBound())
		d.Cumulative = append(d.Cumulative, b.GetCumulativeCount())
	}
	return d
}

// quantileBetween estimates quantile q of the observations made between
// two readings of the same histogram, interpolating linearly within the
// bucket (as histogram_quantile does). Values in the +Inf bucket are
// reported as the largest bound. ok is false without observations.
func quantileBetween(from, to *histData, q float64) (v float64, ok bool) {
	if from == nil || to == nil || len(from.Bounds) != len(to.Bounds) {
		return 0, false
	}
	total := float64(to.Count - from.Count)
	if total == 0 {
		return 0, false
	}
	rank, lower, prev := q*total, 0.0, 0.0
	for i, bound := range to.Bounds {
		cum := float64(to.Cumulative[i] - from.Cumulative[i])
		if cum >= rank {
			if in := cum - prev; in > 0 {
				return lower + (bound-lower)*(rank-prev)/in, true
			}
			return bound, true
		}
		lower, prev = bound, cum
	}
	return lower, true
}

// dueTicks counts the ticks t0 + k·interval, k ≥ 1, within [from, to].
func dueTicks(t0, interval, from, to int64) int64 {
	if interval <= 0 || to < from {
		return 0
	}
	lo := int64(1)
	if d := from - t0; d > 0 {
		lo = max(lo, (d+interval-1)/interval)
	}
	d := to - t0
	if d < 0 {
		return 0
	}
	hi := d / interval
	if hi < lo {
		return 0
	}
	return hi - lo + 1
}

// machineCPU is the machine's CPU time so far, all processes and the
// kernel's interrupt work, from /proc/stat.
type machineCPU struct {
	Busy  time.Duration // everything but idle, iowait and steal
	Steal time.Duration // wanted to run, but the hypervisor ran another guest
}

func (a machineCPU) sub(b machineCPU) machineCPU {
	return machineCPU{Busy: a.Busy - b.Busy, Steal: a.Steal - b.Steal}
}
