package gateway

import (
	"sync/atomic"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// statusClass indexes Recorder.classes: 1xx through 5xx.
type statusClass uint8

const (
	class1xx statusClass = iota
	class2xx
	class3xx
	class4xx
	class5xx
	numClasses
)

// classNames are the Prometheus "code" label values, by statusClass.
var classNames = [numClasses]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

// classOf maps a status to its class. net/http accepts any three-digit
// status; codes outside 100–599 are not defined by HTTP, so they count with
// the server errors rather than silently as successes.
func classOf(status int) statusClass {
	if status < 100 || status > 599 {
		return class5xx
	}
	return statusClass(status/100 - 1)
}

// Recorder counts one gateway instance's HTTP requests. The zero value is
// ready to use; a Recorder must not be copied after first use.
//
// Recording is a handful of atomic adds on fixed memory: no locks, no
// allocations, so it can sit on the hot path of every request. Call Begin
// when a request starts and End exactly once when it finishes.
//
// Consistency of a reading. The counters are separate atomics, so a reading
// taken while requests complete is not one instant's snapshot. It is instead
// built so that every property a consumer relies on still holds exactly:
//
//   - Each status class is its own monotonic counter; RequestsSuccess and
//     RequestsError are sums of classes read once, and RequestsTotal and
//     DurationCount are derived from those same reads. So success + error ==
//     total in every reading, and every field grows monotonically from one
//     reading to the next. (Keeping a separate "total" counter and deriving
//     success = total - error would break this: a request caught between its
//     two increments would be read as a success and later as an error, making
//     the success counter go backwards.)
//   - End updates the histogram bucket and the duration sum before the status
//     class, and a reading loads the classes first, then the sum, then the
//     buckets. So every request included in DurationCount is also included in
//     the sum and in the buckets. A request that completes during the reading
//     itself may show up in the sum and buckets one reading before it shows up
//     in the count; the next reading includes it everywhere, and because
//     consumers work with differences between cumulative readings the skew
//     never accumulates.
type Recorder struct {
	active   atomic.Int64
	classes  [numClasses]atomic.Uint64
	sumNanos atomic.Uint64
	buckets  [proto.NumLatencyBuckets]atomic.Uint64
}

// Begin records the start of a request: it raises the in-flight gauge.
func (r *Recorder) Begin() {
	r.active.Add(1)
}

// End records a finished request with its final status and duration and
// lowers the in-flight gauge. Statuses below 400 are successes; 400 and above,
// and anything outside 100–599, are errors. A negative duration (a clock that
// went backwards) is recorded as zero.
func (r *Recorder) End(status int, d time.Duration) {
	r.Record(status, d)
	r.active.Add(-1)
}

// Record counts a finished request that was never begun here, such as one
// read from a gateway's access log: End without the in-flight gauge. The
// status and duration are treated exactly as End treats them.
func (r *Recorder) Record(status int, d time.Duration) {
	if d < 0 {
		d = 0
	}
	// The order matters; see the type's comment.
	r.buckets[proto.LatencyBucket(d)].Add(1)
	r.sumNanos.Add(uint64(d))
	r.classes[classOf(status)].Add(1)
}

// Active is the number of requests in flight: begun and not yet ended.
func (r *Recorder) Active() int64 {
	// Never negative unless End was called without Begin; clamp so a misuse
	// cannot produce a report that proto.Report.Validate rejects.
	return max(r.active.Load(), 0)
}

// reading is one pass over the Recorder's atomics, in the order the type's
// comment requires.
type reading struct {
	active   int64
	classes  [numClasses]uint64
	sumNanos uint64
	buckets  [proto.NumLatencyBuckets]uint64
}

func (r *Recorder) read(out *reading) {
	out.active = r.Active()
	for i := range r.classes {
		out.classes[i] = r.classes[i].Load()
	}
	out.sumNanos = r.sumNanos.Load()
	for i := range r.buckets {
		out.buckets[i] = r.buckets[i].Load()
	}
}

// success and errors sum the classes below and from 400.
func (rd *reading) success() uint64 {
	return rd.classes[class1xx] + rd.classes[class2xx] + rd.classes[class3xx]
}

func (rd *reading) errors() uint64 {
	return rd.classes[class4xx] + rd.classes[class5xx]
}

// Counters reads the counters as a proto.Counters, ready for a report. It is
// safe to call concurrently with Begin and End; see the type's comment for
// what a reading guarantees.
func (r *Recorder) Counters() proto.Counters {
	var rd reading
	r.read(&rd)
	success, errs := rd.success(), rd.errors()
	c := proto.Counters{
		RequestsTotal:     success + errs,
		RequestsSuccess:   success,
		RequestsError:     errs,
		DurationSumNanos:  rd.sumNanos,
		DurationCount:     success + errs,
		LatencyBuckets:    make([]uint64, proto.NumLatencyBuckets),
		ActiveConnections: rd.active,
	}
	copy(c.LatencyBuckets, rd.buckets[:])
	return c
}
