package main

import (
	"bytes"
	"testing"

	"github.com/meridian-metrics/meridian/proto"
)

func TestPrintEventShowsLatency(t *testing.T) {
	ev, err := proto.DecodeEvent([]byte(`{"type":"Snapshot","timestamp":"2026-12-03T13:00:00Z","requests_total":10,` +
		`"avg_response_time":12.5,"latency_p50_ms":10.123,"latency_p99_ms":250.5,"latency_max_ms":900}`))
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	printEvent(&out, &errOut, ev, 0)
	const want = "2026-12-03T13:00:00Z  total=10  avg=12.50ms  p50=10.12ms  p99=250.50ms  max=900.00ms\n"
	if out.String() != want {
		t.Fatalf("got  %q\nwant %q", out.String(), want)
	}
}
