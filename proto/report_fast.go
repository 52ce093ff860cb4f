package proto

import "time"

// parseReportFast reads a report in the form gateways write it — one object
// of Report's own keys, each at most once, holding plain ASCII strings
// without escapes, integers, RFC 3339 times, true/false, an array of
// integers and a histogram — without reflection and in one pass, about ten
// times faster than encoding/json, which an aggregator at 100 000 reports a
// second cannot afford. Anything else (unknown or repeated keys, null,
// escapes, non-ASCII, floats, overflow, a time or histogram encoding/json
// would reject) makes it return false, and DecodeReport decodes with
// encoding/json instead: the accepted language, every error and every
// result stay encoding/json's. FuzzDecodeReportFast checks that both agree
// whenever this succeeds.
func parseReportFast(data []byte, r *Report) bool { return parseReportInto(data, r, nil) }

// parseReportInto is parseReportFast decoding the histogram into hist,
// reusing its buckets' array, when hist is not nil.
func parseReportInto(data []byte, r *Report, hist *Histogram) bool {
	p := fastJSON{b: data}
	if !p.eat('{') {
		return false
	}
	if p.eat('}') {
		return p.end()
	}
	var seen uint32
	for {
		key, ok := p.rawKey()
		if !ok || !p.eat(':') {
			return false
		}
		bit, ok := reportKeys[string(key)] // no allocation: the map index converts in place
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		if !p.reportValue(bit, r, hist) {
			return false
		}
		if p.eat(',') {
			continue
		}
		return p.eat('}') && p.end()
	}
}

// The keys of Report, one bit each.
const (
	rkV uint32 = 1 << iota
	rkInstance
	rkRegion
	rkBootID
	rkSeq
	rkTime
	rkStartTime
	rkInterval
	rkFinal
	rkTotal
	rkSuccess
	rkError
	rkDurSum
	rkDurCount
	rkBuckets
	rkHist
	rkActive
)

var reportKeys = map[string]uint32{
	"v": rkV, "instance": rkInstance, "region": rkRegion, "boot_id": rkBootID, "seq": rkSeq,
	"time": rkTime, "start_time": rkStartTime, "interval_ns": rkInterval, "final": rkFinal,
	"requests_total": rkTotal, "requests_success": rkSuccess, "requests_error": rkError,
	"duration_sum_ns": rkDurSum, "duration_count": rkDurCount, "latency_buckets": rkBuckets,
	"latency_hist": rkHist, "active_connections": rkActive,
}

func (p *fastJSON) reportValue(key uint32, r *Report, hist *Histogram) bool {
	var ok bool
	switch key {
	case rkV:
		var n int64
		n, ok = p.int()
		r.Version = int(n)
		return ok && n == int64(int(n))
	case rkInstance:
		r.Instance, ok = p.str()
	case rkRegion:
		r.Region, ok = p.str()
	case rkBootID:
		r.BootID, ok = p.str()
	case rkSeq:
		r.Seq, ok = p.uint()
	case rkTime:
		ok = p.time(&r.Time)
	case rkStartTime:
		ok = p.time(&r.StartTime)
	case rkInterval:
		var n int64
		n, ok = p.int()
		r.Interval = time.Duration(n)
	case rkFinal:
		r.Final, ok = p.bool()
	case rkTotal:
		r.RequestsTotal, ok = p.uint()
	case rkSuccess:
		r.RequestsSuccess, ok = p.uint()
	case rkError:
		r.RequestsError, ok = p.uint()
	case rkDurSum:
		r.DurationSumNanos, ok = p.uint()
	case rkDurCount:
		r.DurationCount, ok = p.uint()
	case rkActive:
		r.ActiveConnections, ok = p.int()
	case rkBuckets:
		r.LatencyBuckets = make([]uint64, 0, NumLatencyBuckets)
		ok = p.array(func() bool {
			n, ok := p.uint()
			r.LatencyBuckets = append(r.LatencyBuckets, n)
			return ok
		})
	case rkHist:
		raw, found := p.object()
		if !found {
			return false
		}
		h, buf := hist, []HistBucket(nil)
		if h == nil {
			h = new(Histogram)
		} else {
			buf = h.Buckets
		}
		if h.unmarshal(raw, buf) != nil {
			return false
		}
		r.LatencyHistogram, ok = h, true
	}
	return ok
}

// rawKey reads an object key of plain ASCII letters and underscores and
// returns its bytes, which alias the input.
func (p *fastJSON) rawKey() ([]byte, bool) {
	if !p.eat('"') {
		return nil, false
	}
	start := p.i
	for p.i < len(p.b) && (p.b[p.i] >= 'a' && p.b[p.i] <= 'z' || p.b[p.i] == '_') {
		p.i++
	}
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return nil, false
	}
	p.i++
	return p.b[start : p.i-1], true
}

// str reads a string of printable ASCII without escapes.
func (p *fastJSON) str() (string, bool) {
	s, ok := p.strBytes()
	return string(s), ok
}

func (p *fastJSON) strBytes() ([]byte, bool) {
	if !p.eat('"') {
		return nil, false
	}
	start := p.i
	for p.i < len(p.b) && p.b[p.i] != '"' {
		if c := p.b[p.i]; c < 0x20 || c >= 0x7f || c == '\\' {
			return nil, false
		}
		p.i++
	}
	if p.i >= len(p.b) {
		return nil, false
	}
	p.i++
	return p.b[start : p.i-1], true
}

// time reads an RFC 3339 string with time.Time's own JSON decoding, as
// encoding/json does.
func (p *fastJSON) time(t *time.Time) bool {
	p.ws()
	start := p.i
	if _, ok := p.strBytes(); !ok {
		return false
	}
	return t.UnmarshalJSON(p.b[start:p.i]) == nil
}

func (p *fastJSON) bool() (bool, bool) {
	p.ws()
	for _, lit := range [...]string{"true", "false"} {
		if len(p.b)-p.i >= len(lit) && string(p.b[p.i:p.i+len(lit)]) == lit {
			p.i += len(lit)
			return lit == "true", true
		}
	}
	return false, false
}

// object returns the extent of the object that starts here: braces and
// brackets balanced, strings without escapes. It does not check what is
// inside; the histogram decoder does.
func (p *fastJSON) object() ([]byte, bool) {
	p.ws()
	start, depth := p.i, 0
	for p.i < len(p.b) {
		switch c := p.b[p.i]; c {
		case '{', '[':
			depth++
		case '}', ']':
			depth--
		case '"':
			if _, ok := p.strBytes(); !ok {
				return nil, false
			}
			continue
		}
		p.i++
		if depth == 0 {
			break
		}
	}
	if depth != 0 || p.i == start || p.b[start] != '{' {
		return nil, false
	}
	return p.b[start:p.i], true
}
