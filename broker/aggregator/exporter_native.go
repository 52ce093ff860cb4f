package aggregator

import (
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meridian-metrics/meridian/proto"
)

// hiresHistogram is a const histogram carrying both the classic buckets
// (for every Prometheus and every query written against them) and the
// instance's high-resolution histogram as a native histogram of schema 6,
// whose buckets are exactly Meridian's: no conversion, no added error.
// client_golang's const constructors make one or the other, so this writes
// the protobuf form itself. Prometheus reads the native part only over the
// protobuf exposition format and with native histograms enabled; the text
// format carries the classic buckets alone.
type hiresHistogram struct {
	desc   *prometheus.Desc
	labels []*dto.LabelPair
	h      *dto.Histogram
}

func newHiresHistogram(desc *prometheus.Desc, count uint64, sum float64, classic map[float64]uint64, h *proto.Histogram, labelValues []string) prometheus.Metric {
	out := &dto.Histogram{
		SampleCount:   &count,
		SampleSum:     &sum,
		Schema:        ptr(int32(proto.HistSchema)),
		ZeroThreshold: ptr(proto.HistZeroThreshold),
		ZeroCount:     ptr(uint64(0)),
	}
	for _, ub := range slices.Sorted(maps.Keys(classic)) {
		out.Bucket = append(out.Bucket, &dto.Bucket{UpperBound: ptr(ub), CumulativeCount: ptr(classic[ub])})
	}
	bs := h.Buckets
	if len(bs) > 0 && bs[0].Slot == 0 {
		out.ZeroCount = ptr(bs[0].Count)
		bs = bs[1:]
	}
	var prevKey int
	var prevCount int64
	for i, b := range bs {
		key := proto.SlotKey(int(b.Slot))
		switch {
		case i == 0:
			out.PositiveSpan = append(out.PositiveSpan, &dto.BucketSpan{Offset: ptr(int32(key)), Length: ptr(uint32(1))})
		case key == prevKey+1:
			*out.PositiveSpan[len(out.PositiveSpan)-1].Length++
		default:
			out.PositiveSpan = append(out.PositiveSpan, &dto.BucketSpan{Offset: ptr(int32(key - prevKey - 1)), Length: ptr(uint32(1))})
		}
		// Native buckets travel as differences from the previous bucket.
		out.PositiveDelta = append(out.PositiveDelta, int64(b.Count)-prevCount)
		prevKey, prevCount = key, int64(b.Count)
	}
	if len(out.PositiveSpan) == 0 && *out.ZeroCount == 0 {
		// A native histogram with no observations still needs a span to be
		// told apart from a classic one.
		out.PositiveSpan = []*dto.BucketSpan{{Offset: ptr(int32(0)), Length: ptr(uint32(0))}}
	}
	return &hiresHistogram{desc: desc, labels: prometheus.MakeLabelPairs(desc, labelValues), h: out}
}

func (m *hiresHistogram) Desc() *prometheus.Desc { return m.desc }

func (m *hiresHistogram) Write(out *dto.Metric) error {
	out.Label = m.labels
	out.Histogram = m.h
	return nil
}

func ptr[T any](v T) *T { return &v }
