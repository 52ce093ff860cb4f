package proto

import "testing"

func BenchmarkParseSubscription(b *testing.B) {
	msg := []byte(`{"metrics":["requests_total","active_connections","response_time_avg"],"interval_seconds":2,"include_history":false}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseSubscription(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendSnapshotEvent(b *testing.B) {
	s := sampleSnapshot()
	for _, tc := range []struct {
		name string
		set  MetricSet
	}{{"all", AllMetrics}, {"one", SetOf(RequestsTotal)}} {
		b.Run(tc.name, func(b *testing.B) {
			buf := make([]byte, 0, 512)
			b.ReportAllocs()
			for b.Loop() {
				buf = AppendSnapshotEvent(buf[:0], &s, tc.set)
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}
