package collector_test

import (
	"fmt"
	"os"
	"strings"

	"github.com/meridian-metrics/meridian/collector"
)

// An nginx access log in the combined format with $request_time appended:
// each line is one request with its status and exact duration.
func ExampleNewLineParser() {
	p, err := collector.NewLineParser(collector.LogFormat{Name: collector.FormatNginxCombined})
	if err != nil {
		fmt.Println(err)
		return
	}
	e, err := p.ParseLine([]byte(`127.0.0.1 - - [03/Dec/2026:13:00:00 +0000] "GET /api HTTP/1.1" 502 157 "-" "curl/8.5" 0.031`))
	fmt.Println(e.Status, e.Duration, err)
	_, err = p.ParseLine([]byte("nginx: [warn] not an access log line"))
	fmt.Println(err != nil)
	// Output:
	// 502 31ms <nil>
	// true
}

// A mapping file for an exporter without a built-in profile: which series
// counts requests, which label holds the status, which histogram is latency.
func ExampleLoadMapping() {
	f, _ := os.CreateTemp("", "mapping-*.json")
	defer os.Remove(f.Name())
	f.WriteString(`{"requests": "myproxy_requests_total", "status_label": "status",
	  "latency": "myproxy_request_seconds", "active": "myproxy_in_flight"}`)
	f.Close()
	m, err := collector.LoadMapping(f.Name())
	fmt.Println(m.Requests, m.StatusLabel, err)
	_, err = collector.LoadMapping(os.DevNull)
	fmt.Println(strings.Contains(err.Error(), "read mapping"))
	// Output:
	// myproxy_requests_total status <nil>
	// true
}
