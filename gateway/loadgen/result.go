package loadgen

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Result accounts for every request of a run:
// Sent == Succeeded + Failed + TransportErrors.
type Result struct {
	Sent            uint64
	Succeeded       uint64 // answered 2xx or 3xx (1xx cannot be final for a GET)
	Failed          uint64 // answered 4xx or 5xx
	TransportErrors uint64 // no complete response
	// ByStatus counts responses by status; it sums to Succeeded + Failed.
	ByStatus map[int]uint64
	// Elapsed is from the first request's due time to the last response.
	Elapsed time.Duration
}

func (r *Result) merge(o *Result) {
	r.Sent += o.Sent
	r.Succeeded += o.Succeeded
	r.Failed += o.Failed
	r.TransportErrors += o.TransportErrors
	for s, n := range o.ByStatus {
		r.ByStatus[s] += n
	}
}

// String is a one-line account of the run, e.g.
//
//	sent 100 requests in 1.002s: 90 got 2xx/3xx, 10 got 4xx/5xx, 0 transport errors (200: 90, 500: 10)
func (r Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "sent %d requests in %s: %d got 2xx/3xx, %d got 4xx/5xx, %d transport errors",
		r.Sent, r.Elapsed.Round(time.Millisecond), r.Succeeded, r.Failed, r.TransportErrors)
	if len(r.ByStatus) > 0 {
		codes := make([]int, 0, len(r.ByStatus))
		for c := range r.ByStatus {
			codes = append(codes, c)
		}
		slices.Sort(codes)
		b.WriteString(" (")
		for i, c := range codes {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(strconv.Itoa(c))
			b.WriteString(": ")
			b.WriteString(strconv.FormatUint(r.ByStatus[c], 10))
		}
		b.WriteString(")")
	}
	return b.String()
}
