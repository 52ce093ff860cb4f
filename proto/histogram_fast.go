package proto

import "strconv"

// parseHistFast reads the canonical wire form of a histogram — an object of
// the keys v, schema, zero, over, spans and counts holding plain integers —
// without reflection, about five times faster than encoding/json on a
// report's few hundred numbers. Anything else (other keys, null, floats,
// exponents, leading zeros, escapes, overflow) makes it return false, and the
// caller decodes with encoding/json instead, so the accepted language and
// every error stay encoding/json's. FuzzDecodeHistogram checks that both
// agree whenever this succeeds.
func parseHistFast(data []byte, w *histWire) bool {
	p := fastJSON{b: data}
	if !p.eat('{') {
		return false
	}
	if p.eat('}') {
		return p.end()
	}
	for {
		key, ok := p.key()
		if !ok || !p.eat(':') {
			return false
		}
		switch key {
		case "v", "schema":
			n, ok := p.int()
			if !ok || n != int64(int(n)) {
				return false
			}
			if key == "v" {
				w.Version = int(n)
			} else {
				w.Schema = int(n)
			}
		case "zero", "over":
			n, ok := p.uint()
			if !ok {
				return false
			}
			if key == "zero" {
				w.Zero = n
			} else {
				w.Over = n
			}
		case "spans":
			w.Spans = w.Spans[:0]
			if !p.array(func() bool {
				var sp [2]int64
				ok := p.eat('[')
				ok = ok && p.intInto(&sp[0]) && p.eat(',') && p.intInto(&sp[1]) && p.eat(']')
				w.Spans = append(w.Spans, sp)
				return ok
			}) {
				return false
			}
		case "counts":
			w.Counts = w.Counts[:0]
			if !p.array(func() bool {
				n, ok := p.uint()
				w.Counts = append(w.Counts, n)
				return ok
			}) {
				return false
			}
		default:
			return false
		}
		if p.eat(',') {
			continue
		}
		return p.eat('}') && p.end()
	}
}

// fastJSON is a cursor over JSON bytes for parseHistFast.
type fastJSON struct {
	b []byte
	i int
}

func (p *fastJSON) ws() {
	for p.i < len(p.b) && (p.b[p.i] == ' ' || p.b[p.i] == '\t' || p.b[p.i] == '\n' || p.b[p.i] == '\r') {
		p.i++
	}
}

// eat skips white space and c; it reports whether c was there.
func (p *fastJSON) eat(c byte) bool {
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *fastJSON) end() bool {
	p.ws()
	return p.i == len(p.b)
}

// key reads a string of plain ASCII letters and underscores (no escapes).
func (p *fastJSON) key() (string, bool) {
	if !p.eat('"') {
		return "", false
	}
	start := p.i
	for p.i < len(p.b) && (p.b[p.i] >= 'a' && p.b[p.i] <= 'z' || p.b[p.i] == '_') {
		p.i++
	}
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return "", false
	}
	p.i++
	return string(p.b[start : p.i-1]), true
}

// digits returns the next run of an optional minus and decimal digits in
// JSON's integer form (no leading zeros, no fraction or exponent after it).
func (p *fastJSON) digits() ([]byte, bool) {
	p.ws()
	start := p.i
	if p.i < len(p.b) && p.b[p.i] == '-' {
		p.i++
	}
	first := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	n := p.i - first
	if n == 0 || n > 1 && p.b[first] == '0' {
		return nil, false
	}
	if p.i < len(p.b) && (p.b[p.i] == '.' || p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		return nil, false
	}
	return p.b[start:p.i], true
}

func (p *fastJSON) int() (int64, bool) {
	d, ok := p.digits()
	if !ok {
		return 0, false
	}
	if len(d) <= 18 { // cannot overflow
		neg := d[0] == '-'
		if neg {
			d = d[1:]
		}
		n := int64(decimal(d))
		if neg {
			n = -n
		}
		return n, true
	}
	n, err := strconv.ParseInt(string(d), 10, 64)
	return n, err == nil
}

// decimal is the value of at most 19 decimal digits.
func decimal(d []byte) uint64 {
	var n uint64
	for _, c := range d {
		n = n*10 + uint64(c-'0')
	}
	return n
}

func (p *fastJSON) intInto(dst *int64) bool {
	n, ok := p.int()
	*dst = n
	return ok
}

func (p *fastJSON) uint() (uint64, bool) {
	d, ok := p.digits()
	if !ok || len(d) > 0 && d[0] == '-' {
		return 0, false
	}
	if len(d) <= 19 { // cannot overflow
		return decimal(d), true
	}
	n, err := strconv.ParseUint(string(d), 10, 64)
	return n, err == nil
}

// array reads [elem, elem, ...] calling elem for each element.
func (p *fastJSON) array(elem func() bool) bool {
	if !p.eat('[') {
		return false
	}
	if p.eat(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if p.eat(',') {
			continue
		}
		return p.eat(']')
	}
}
