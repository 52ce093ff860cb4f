package gateway

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

func TestRecorderClassifiesStatuses(t *testing.T) {
	tests := []struct {
		status  int
		class   statusClass
		success bool
	}{
		{100, class1xx, true},
		{101, class1xx, true},
		{200, class2xx, true},
		{204, class2xx, true},
		{302, class3xx, true},
		{399, class3xx, true},
		{400, class4xx, false},
		{499, class4xx, false},
		{500, class5xx, false},
		{599, class5xx, false},
		// Not HTTP statuses: never successes.
		{0, class5xx, false},
		{99, class5xx, false},
		{600, class5xx, false},
		{999, class5xx, false},
	}
	for _, tt := range tests {
		var r Recorder
		r.Begin()
		r.End(tt.status, time.Millisecond)
		var rd reading
		r.read(&rd)
		for c := range numClasses {
			want := uint64(0)
			if c == tt.class {
				want = 1
			}
			if rd.classes[c] != want {
				t.Errorf("status %d: class %s = %d, want %d", tt.status, classNames[c], rd.classes[c], want)
			}
		}
		c := r.Counters()
		if got := c.RequestsSuccess == 1; got != tt.success {
			t.Errorf("status %d: success = %v, want %v (counters %+v)", tt.status, got, tt.success, c)
		}
		if c.RequestsTotal != 1 || c.DurationCount != 1 || c.RequestsSuccess+c.RequestsError != 1 {
			t.Errorf("status %d: counters %+v, want exactly one request", tt.status, c)
		}
	}
}

func TestRecorderBucketsAndSum(t *testing.T) {
	var r Recorder
	durations := []time.Duration{
		0,
		5 * time.Millisecond,   // bound of bucket 0 is inclusive
		5*time.Millisecond + 1, // bucket 1
		10 * time.Second,       // last finite bucket
		10*time.Second + 1,     // +Inf
		time.Hour,              // +Inf
		-3 * time.Millisecond,  // clock went backwards: recorded as 0
	}
	var wantSum uint64
	want := make([]uint64, proto.NumLatencyBuckets)
	for _, d := range durations {
		r.Begin()
		r.End(200, d)
		d = max(d, 0)
		wantSum += uint64(d)
		want[proto.LatencyBucket(d)]++
	}
	c := r.Counters()
	if c.DurationSumNanos != wantSum {
		t.Errorf("duration sum = %d, want %d", c.DurationSumNanos, wantSum)
	}
	if c.DurationCount != uint64(len(durations)) {
		t.Errorf("duration count = %d, want %d", c.DurationCount, len(durations))
	}
	for i := range want {
		if c.LatencyBuckets[i] != want[i] {
			t.Errorf("bucket %d = %d, want %d (all %v)", i, c.LatencyBuckets[i], want[i], c.LatencyBuckets)
		}
	}
	if want[0] != 3 || want[proto.NumLatencyBuckets-1] != 2 {
		t.Fatalf("test table no longer exercises the edge buckets: %v", want)
	}
}

func TestRecorderActive(t *testing.T) {
	var r Recorder
	r.Begin()
	r.Begin()
	if got := r.Active(); got != 2 {
		t.Fatalf("active = %d, want 2", got)
	}
	r.End(200, 0)
	if got := r.Counters().ActiveConnections; got != 1 {
		t.Fatalf("active connections = %d, want 1", got)
	}
	r.End(200, 0)
	// A stray End (a caller bug) must not produce a negative gauge, which a
	// report may not carry.
	r.End(200, 0)
	if got := r.Active(); got != 0 {
		t.Fatalf("active after stray End = %d, want 0", got)
	}
}

// TestRecorderRecordLeavesActiveAlone checks that a request counted after
// the fact (a log line) counts like End but never moves the in-flight gauge.
func TestRecorderRecordLeavesActiveAlone(t *testing.T) {
	var r Recorder
	r.Begin()
	r.Record(503, 30*time.Millisecond)
	r.Record(200, -time.Second)
	c := r.Counters()
	if c.ActiveConnections != 1 {
		t.Fatalf("active connections = %d after Record, want the 1 begun", c.ActiveConnections)
	}
	if c.RequestsTotal != 2 || c.RequestsError != 1 || c.RequestsSuccess != 1 {
		t.Fatalf("counters = %+v, want 1 success and 1 error", c)
	}
	if c.DurationSumNanos != uint64(30*time.Millisecond) || c.LatencyBuckets[0] != 1 || c.LatencyBuckets[proto.LatencyBucket(30*time.Millisecond)] != 1 {
		t.Fatalf("sum %d, buckets %v: want 30ms in the 25–50ms bucket and 0 in the first", c.DurationSumNanos, c.LatencyBuckets)
	}
}

// TestRecorderReadingsUnderRace reads the counters while writers record, and
// checks that every reading is a valid report and that every field only
// grows: the properties the type's comment promises.
func TestRecorderReadingsUnderRace(t *testing.T) {
	var r Recorder
	const writers, perWriter = 4, 5000
	statuses := []int{200, 404, 302, 503, 499, 201}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				r.Begin()
				r.End(statuses[(w+i)%len(statuses)], time.Duration(i)*time.Microsecond)
			}
		})
	}
	done := make(chan struct{})
	var readErr error
	var readings int
	go func() {
		defer close(done)
		var prev proto.Counters
		prev.LatencyBuckets = make([]uint64, proto.NumLatencyBuckets)
		for i := 0; ; i++ {
			c := r.Counters()
			readings++
			rep := proto.Report{Version: proto.ReportVersion, Instance: "i", Region: "r", BootID: "b",
				Seq: 1, Time: time.Unix(1, 0), Interval: time.Second, Counters: c}
			if err := rep.Validate(); err != nil {
				readErr = err
				return
			}
			var bucketSum uint64
			for j, b := range c.LatencyBuckets {
				bucketSum += b
				if b < prev.LatencyBuckets[j] {
					readErr = fmt.Errorf("bucket %d went back from %d to %d", j, prev.LatencyBuckets[j], b)
					return
				}
			}
			if bucketSum < c.DurationCount {
				readErr = fmt.Errorf("buckets hold %d observations but count is %d", bucketSum, c.DurationCount)
				return
			}
			if c.RequestsSuccess < prev.RequestsSuccess || c.RequestsError < prev.RequestsError ||
				c.RequestsTotal < prev.RequestsTotal || c.DurationSumNanos < prev.DurationSumNanos {
				readErr = fmt.Errorf("counters went back: %+v after %+v", c, prev)
				return
			}
			prev = c
			if c.RequestsTotal == writers*perWriter {
				return
			}
		}
	}()
	wg.Wait()
	<-done
	if readErr != nil {
		t.Fatalf("after %d readings: %v", readings, readErr)
	}
	c := r.Counters()
	if c.RequestsTotal != writers*perWriter || c.ActiveConnections != 0 {
		t.Fatalf("final counters %+v, want total %d and nothing active", c, writers*perWriter)
	}
}
