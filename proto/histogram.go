package proto

import (
	"math"
	"time"
)

// The high-resolution latency histogram.
//
// Its buckets are those of a Prometheus native histogram of schema 6 over
// durations in seconds: bucket k holds the durations d with
// 2^((k-1)/64) s < d ≤ 2^(k/64) s, so each bucket is 2^(1/64) ≈ 1.0109 times
// as wide as the one below it. A quantile is quoted at its bucket's
// logarithmic midpoint 2^((k-½)/64) s, which is within 2^(1/128)−1 ≈ 0.54 %
// of every duration in the bucket: the relative error of any quantile is at
// most that, well inside the 1 % Meridian promises. The layout is fixed by
// the protocol, so histograms of any instances merge exactly by adding the
// counts of equal keys, and the aggregator's Prometheus relay exports them as
// native histograms without conversion.
//
// The tracked range is 100 µs to 60 s: keys HistMinKey to HistMaxKey. A
// duration at or below HistZeroThreshold (99.3 µs, the lower edge of
// HistMinKey) counts in the zero bucket, as in Prometheus; its quantile is
// quoted as HistZeroThreshold (read "at most 0.0993 ms"). A duration above
// the top bucket's upper edge (60.6 s) is clamped into the top bucket and
// also counted in Over, so an operator can see that clamping happened.

const (
	// HistSchema is the Prometheus native-histogram schema of the layout.
	HistSchema = 6
	// HistBucketsPerOctave is 2^HistSchema: buckets per doubling.
	HistBucketsPerOctave = 1 << HistSchema
	// HistMinKey is the key of the bucket holding 100 µs, the lowest
	// tracked bucket.
	HistMinKey = -850
	// HistMaxKey is the key of the bucket holding 60 s, the highest.
	HistMaxKey = 379
	// HistSlots is the number of dense slots: the zero bucket (slot 0) and
	// every key from HistMinKey to HistMaxKey.
	HistSlots = HistMaxKey - HistMinKey + 2
	// HistMaxRelativeError bounds the relative error of every quantile of
	// durations inside the tracked range: 2^(1/128) − 1.
	HistMaxRelativeError = 0.0054299
)

var (
	// HistZeroThreshold is the zero bucket's upper edge in seconds:
	// 2^((HistMinKey−1)/64), about 99.3 µs.
	HistZeroThreshold = math.Exp2(float64(HistMinKey-1) / HistBucketsPerOctave)
	// histTop is the top bucket's upper edge in seconds, about 60.6 s.
	histTop = math.Exp2(float64(HistMaxKey) / HistBucketsPerOctave)
	// histFracBounds[j] = 2^(j/64 − 1): the upper edges, as frexp fractions,
	// of the 64 buckets of one octave (client_golang maps the same way).
	histFracBounds = func() (b [HistBucketsPerOctave]float64) {
		for j := range b {
			b[j] = math.Exp2(float64(j)/HistBucketsPerOctave - 1)
		}
		return b
	}()
)

// HistKey returns the native-histogram key of a positive duration in seconds
// (any value, not only the tracked range).
func HistKey(seconds float64) int {
	frac, exp := math.Frexp(seconds)
	// Smallest j with histFracBounds[j] >= frac; frac is in [0.5, 1), so j
	// is 0..64. Six comparisons beat math.Log2 and are exact at the edges.
	lo, hi := 0, HistBucketsPerOctave
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if histFracBounds[mid] < frac {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo + (exp-1)*HistBucketsPerOctave
}

// HistSlot maps a duration to its dense slot (0 is the zero bucket, slot i>0
// is key HistMinKey+i−1) and reports whether it was clamped from above the
// tracked range. Negative durations count in the zero bucket.
func HistSlot(d time.Duration) (slot int, over bool) {
	s := float64(d) / 1e9
	switch {
	case s <= HistZeroThreshold:
		return 0, false
	case s > histTop:
		return HistSlots - 1, true
	}
	return HistKey(s) - HistMinKey + 1, false
}

// SlotKey is the key of dense slot i > 0.
func SlotKey(slot int) int { return HistMinKey + slot - 1 }

// KeySlot is the dense slot of a tracked key.
func KeySlot(key int) int { return key - HistMinKey + 1 }

// histSlotMillis is the value, in milliseconds, quoted for a quantile that
// falls into slot i: the zero threshold for the zero bucket, the logarithmic
// midpoint of the bucket otherwise.
var histSlotMillis = func() (v [HistSlots]float64) {
	v[0] = HistZeroThreshold * 1e3
	for i := 1; i < HistSlots; i++ {
		v[i] = math.Exp2((float64(SlotKey(i))-0.5)/HistBucketsPerOctave) * 1e3
	}
	return v
}()

// SlotMillis is the value quoted for a quantile in slot i, in milliseconds.
func SlotMillis(slot int) float64 { return histSlotMillis[slot] }

// SlotUpperSeconds is the upper edge of slot i in seconds.
func SlotUpperSeconds(slot int) float64 {
	if slot == 0 {
		return HistZeroThreshold
	}
	return math.Exp2(float64(SlotKey(slot)) / HistBucketsPerOctave)
}

// QuantileRank is the 1-based rank of the q-quantile among n observations:
// the nearest-rank definition ⌈q·n⌉, clamped to 1..n. Float products such as
// 0.9×10 come out a hair above the integer; the small tolerance keeps them
// on it. It is 0 when n is 0.
func QuantileRank(q float64, n uint64) uint64 {
	if n == 0 {
		return 0
	}
	r := math.Ceil(q*float64(n) - 1e-9)
	switch {
	case r < 1 || math.IsNaN(r):
		return 1
	case r >= float64(n):
		return n
	}
	return uint64(r)
}

// LatencyQuantiles are the quantiles a snapshot carries, in the order of
// Snapshot's latency fields; 1 is the maximum.
var LatencyQuantiles = [...]float64{0.5, 0.9, 0.95, 0.99, 1}

// NumLatencyQuantiles is len(LatencyQuantiles).
const NumLatencyQuantiles = len(LatencyQuantiles)
