package proto_test

import (
	"fmt"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

func ExampleParseSubscription() {
	sub, err := proto.ParseSubscription([]byte(`{"metrics":["requests_total","response_time_avg"],"interval_seconds":2}`))
	fmt.Println(sub.Metrics.Metrics(), sub.IntervalSeconds, sub.IncludeHistory, err)

	_, err = proto.ParseSubscription([]byte(`{"interval_seconds":0}`))
	fmt.Println(err)
	// Output:
	// [requests_total avg_response_time] 2 false <nil>
	// invalid subscription: interval_seconds must be an integer from 1 to 60, got 0
}

func ExampleAppendSnapshotEvent() {
	s := proto.Snapshot{
		Version: proto.SnapshotVersion, Time: time.Date(2024, 11, 7, 10, 30, 2, 0, time.UTC),
		RequestsTotal: 1550, RequestsSuccess: 1523, RequestsError: 27, ActiveConnections: 16,
		AvgResponseTimeMs: 44.8, SuccessRate: proto.SuccessRateOf(1523, 1550),
	}
	fmt.Println(string(proto.AppendSnapshotEvent(nil, &s, proto.GuideMetrics)))
	fmt.Println(string(proto.AppendSnapshotEvent(nil, &s, proto.SetOf(proto.RequestsTotal))))
	// Output:
	// {"type":"Snapshot","timestamp":"2024-11-07T10:30:02Z","requests_total":1550,"requests_success":1523,"requests_error":27,"active_connections":16,"avg_response_time":44.8,"success_rate":98.258}
	// {"type":"Snapshot","timestamp":"2024-11-07T10:30:02Z","requests_total":1550}
}

// A guide client that names two metrics still gets the guide's six in every
// Snapshot; strict_metrics asks for exactly the named ones.
func ExampleSubscription_SnapshotMetrics() {
	for _, msg := range []string{
		`{"metrics":["requests_total","active_connections"],"interval_seconds":2}`,
		`{"metrics":["requests_total","active_connections"],"strict_metrics":true}`,
	} {
		sub, _ := proto.ParseSubscription([]byte(msg))
		fmt.Println(sub.SnapshotMetrics().Metrics())
	}
	// Output:
	// [requests_total requests_success requests_error active_connections avg_response_time success_rate]
	// [requests_total active_connections]
}
