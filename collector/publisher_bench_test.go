package collector

import (
	"testing"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
)

// BenchmarkPublish measures building, encoding and publishing one report
// on a real connection. Reports go out once per interval per instance, so
// this is about headroom, not the hot path; the allocations are
// encoding/json's.
func BenchmarkPublish(b *testing.B) {
	_, nc := natstest.StartTest(b)
	src := newSource()
	src.add(1000, 10)
	p, err := New(Config{NATS: nc, Region: "eu", Instance: "gw-1", Source: src.read, Logger: quiet()})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := p.publish(false); err != nil {
			b.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
}
