package collector

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// Entry is one request read from an access log: its final status and how
// long the gateway took to answer it.
type Entry struct {
	Status   int
	Duration time.Duration
}

// ErrUnparseable is wrapped by every error a LineParser returns for a line it
// cannot read; callers count such lines and carry on.
var ErrUnparseable = errors.New("unparseable access-log line")

// LineParser reads one access-log line (without its newline). It must be
// safe for use by one goroutine at a time and must not retain line.
type LineParser interface {
	ParseLine(line []byte) (Entry, error)
}

// Built-in log format names, for LogFormat.Name and `--log-format`.
const (
	FormatNginxJSON     = "nginx-json"     // log_format ... escape=json '{"status":"$status","request_time":"$request_time"}'
	FormatNginxCombined = "nginx-combined" // the combined format with $request_time appended
	FormatApache        = "apache"         // common or combined format with %D (microseconds) appended
	FormatHAProxy       = "haproxy"        // HAProxy's HTTP log format (option httplog): %ST and %Ta
	FormatCaddy         = "caddy"          // Caddy's JSON access log
	FormatJSON          = "json"           // any JSON lines: StatusField, DurationField, DurationUnit
	FormatRegex         = "regex"          // any text lines: Regex with (?P<status>) and (?P<duration>)
)

// LogFormats lists the format names NewLineParser accepts.
var LogFormats = []string{FormatNginxJSON, FormatNginxCombined, FormatApache, FormatHAProxy, FormatCaddy, FormatJSON, FormatRegex}

// LogFormat selects and configures a LineParser. Only the configurable
// formats (json, regex) read the other fields.
type LogFormat struct {
	Name string
	// Regex (format regex) must have the named groups status and duration.
	Regex string
	// StatusField and DurationField (format json) name top-level fields;
	// the status may be a number or a string, the duration a number or a
	// numeric string. Defaults "status" and "duration".
	StatusField   string
	DurationField string
	// DurationUnit is the unit of the duration for json and regex: s, ms,
	// us or ns. Default s.
	DurationUnit string
}

// NewLineParser builds the parser for f.
func NewLineParser(f LogFormat) (LineParser, error) {
	switch f.Name {
	case FormatNginxJSON:
		return &jsonParser{status: "status", duration: "request_time", unit: time.Second}, nil
	case FormatCaddy:
		// Caddy 2 writes "status" as a number and "duration" as seconds
		// (its default duration_format).
		return &jsonParser{status: "status", duration: "duration", unit: time.Second}, nil
	case FormatNginxCombined:
		return clfParser{unit: time.Second}, nil
	case FormatApache:
		return clfParser{unit: time.Microsecond}, nil
	case FormatHAProxy:
		return haproxyParser{}, nil
	case FormatJSON:
		unit, err := parseUnit(f.DurationUnit)
		if err != nil {
			return nil, err
		}
		p := &jsonParser{status: f.StatusField, duration: f.DurationField, unit: unit}
		if p.status == "" {
			p.status = "status"
		}
		if p.duration == "" {
			p.duration = "duration"
		}
		return p, nil
	case FormatRegex:
		unit, err := parseUnit(f.DurationUnit)
		if err != nil {
			return nil, err
		}
		re, err := regexp.Compile(f.Regex)
		if err != nil {
			return nil, fmt.Errorf("log format regex: %w", err)
		}
		p := regexParser{re: re, unit: unit, status: re.SubexpIndex("status"), duration: re.SubexpIndex("duration")}
		if p.status < 0 || p.duration < 0 {
			return nil, fmt.Errorf("log format regex %q: needs the named groups (?P<status>...) and (?P<duration>...)", f.Regex)
		}
		return p, nil
	default:
		return nil, fmt.Errorf("log format %q: want one of %v", f.Name, LogFormats)
	}
}

func parseUnit(s string) (time.Duration, error) {
	switch s {
	case "", "s":
		return time.Second, nil
	case "ms":
		return time.Millisecond, nil
	case "us", "µs":
		return time.Microsecond, nil
	case "ns":
		return time.Nanosecond, nil
	default:
		return 0, fmt.Errorf("duration unit %q: want s, ms, us or ns", s)
	}
}

func unparseable(format string, args ...any) error {
	return fmt.Errorf(format+": %w", append(args, ErrUnparseable)...)
}

// parseStatus reads an HTTP status: three digits, or HAProxy's -1 for a
// request that got no response (counted as an error, like any status
// outside 100–599).
func parseStatus(b []byte) (int, error) {
	if string(b) == "-1" {
		return -1, nil
	}
	if len(b) != 3 {
		return 0, unparseable("status %.20q is not three digits", b)
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, unparseable("status %.20q is not three digits", b)
		}
		n = n*10 + int(c-'0')
	}
	return n, nil
}

// maxDuration bounds parsed durations (a day) so that arithmetic on them
// cannot overflow and a garbled field cannot dominate the sum.
const maxDuration = 24 * time.Hour

// parseDuration reads a non-negative decimal number of unit exactly, without
// going through floating point: "0.005" seconds is exactly 5ms. Digits below
// a nanosecond are dropped. "-" (nginx, Apache: no value) and HAProxy's
// negative timers (aborted before the timer stopped) read as zero.
func parseDuration(b []byte, unit time.Duration) (time.Duration, error) {
	if len(b) == 0 {
		return 0, unparseable("empty duration")
	}
	if b[0] == '-' {
		if len(b) == 1 {
			return 0, nil
		}
		if _, err := parseDuration(b[1:], unit); err != nil {
			return 0, err
		}
		return 0, nil
	}
	var whole, frac int64
	scale := int64(unit)
	seenDot, digits := false, 0
	for _, c := range b {
		switch {
		case c == '.' && !seenDot:
			seenDot = true
		case c >= '0' && c <= '9':
			digits++
			if !seenDot {
				whole = whole*10 + int64(c-'0')
				if whole > int64(maxDuration/unit) {
					return 0, unparseable("duration %.30q is over %s", b, maxDuration)
				}
			} else if scale >= 10 {
				scale /= 10
				frac += int64(c-'0') * scale
			}
		default:
			return 0, unparseable("duration %.30q is not a decimal number", b)
		}
	}
	if digits == 0 {
		return 0, unparseable("duration %.30q has no digits", b)
	}
	d := time.Duration(whole)*unit + time.Duration(frac)
	if d > maxDuration {
		return 0, unparseable("duration %.30q is over %s", b, maxDuration)
	}
	return d, nil
}

// jsonParser reads one JSON object per line.
type jsonParser struct {
	status, duration string
	unit             time.Duration
	fields           map[string]json.RawMessage // reused between lines
}

func (p *jsonParser) ParseLine(line []byte) (Entry, error) {
	clear(p.fields)
	if p.fields == nil {
		p.fields = make(map[string]json.RawMessage, 16)
	}
	if err := json.Unmarshal(line, &p.fields); err != nil {
		return Entry{}, unparseable("json: %v", err)
	}
	st, ok := p.fields[p.status]
	if !ok {
		return Entry{}, unparseable("json: no %q field", p.status)
	}
	status, err := parseStatus(unquoteJSON(st))
	if err != nil {
		return Entry{}, err
	}
	du, ok := p.fields[p.duration]
	if !ok {
		return Entry{}, unparseable("json: no %q field", p.duration)
	}
	d, err := parseDuration(unquoteJSON(du), p.unit)
	if err != nil {
		return Entry{}, err
	}
	return Entry{Status: status, Duration: d}, nil
}

// unquoteJSON strips the quotes of a JSON string holding a plain number or
// "-" (what nginx writes for $status and $request_time); anything needing
// unescaping is not a number and fails later.
func unquoteJSON(v json.RawMessage) []byte {
	v = bytes.TrimSpace(v)
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return v[1 : len(v)-1]
	}
	if bytes.ContainsAny(v, "eE") { // 1e-3: json.Number, not a decimal we read exactly
		if f, err := strconv.ParseFloat(string(v), 64); err == nil && f >= 0 {
			return strconv.AppendFloat(nil, f, 'f', -1, 64)
		}
	}
	return v
}

// clfParser reads the NCSA common/combined format as nginx and Apache write
// it, with the duration as the last field:
//
//	127.0.0.1 - - [03/Dec/2026:13:00:00 +0000] "GET / HTTP/1.1" 200 612 "-" "curl/8" 0.005
//
// The status is the field after the quoted request line; quotes inside it
// are escaped (nginx writes \x22, Apache \").
type clfParser struct{ unit time.Duration }

func (p clfParser) ParseLine(line []byte) (Entry, error) {
	open := bytes.Index(line, []byte(`] "`))
	if open < 0 {
		return Entry{}, unparseable("no [time] \"request\" in line")
	}
	rest := line[open+3:]
	end := -1
	for i := 0; i < len(rest); i++ {
		if rest[i] == '\\' {
			i++
			continue
		}
		if rest[i] == '"' {
			end = i
			break
		}
	}
	if end < 0 {
		return Entry{}, unparseable("request line is not closed")
	}
	rest = bytes.TrimLeft(rest[end+1:], " ")
	sp := bytes.IndexByte(rest, ' ')
	if sp < 0 {
		return Entry{}, unparseable("no field after the status")
	}
	status, err := parseStatus(rest[:sp])
	if err != nil {
		return Entry{}, err
	}
	last := bytes.TrimRight(line, " \r")
	d, err := parseDuration(last[bytes.LastIndexByte(last, ' ')+1:], p.unit)
	if err != nil {
		return Entry{}, err
	}
	return Entry{Status: status, Duration: d}, nil
}

// haproxyParser reads HAProxy's HTTP log format (option httplog), from a file
// or a syslog message:
//
//	<134>Dec  3 13:00:00 haproxy[7]: 127.0.0.1:40000 [03/Dec/2026:13:00:00.123] fe be/s1 0/0/0/1/1 200 ...
//
// It finds the accept date [%tr]; after it come %ft, %b/%s, the timers
// %TR/%Tw/%Tc/%Tr/%Ta and %ST. %Ta (total active time, ms) is the duration.
type haproxyParser struct{}

func (haproxyParser) ParseLine(line []byte) (Entry, error) {
	var fields [6][]byte
	n, rest := 0, line
	found := false
	for len(rest) > 0 {
		rest = bytes.TrimLeft(rest, " ")
		sp := bytes.IndexByte(rest, ' ')
		var tok []byte
		if sp < 0 {
			tok, rest = rest, nil
		} else {
			tok, rest = rest[:sp], rest[sp:]
		}
		if !found {
			// The accept date: [dd/Mon/yyyy:hh:mm:ss.mmm]
			if len(tok) >= 22 && tok[0] == '[' && tok[len(tok)-1] == ']' && tok[3] == '/' {
				found = true
			}
			continue
		}
		fields[n] = tok
		if n++; n == 4 {
			break
		}
	}
	if n < 4 {
		return Entry{}, unparseable("not an HAProxy HTTP log line")
	}
	status, err := parseStatus(fields[3])
	if err != nil {
		return Entry{}, err
	}
	timers := fields[2]
	slash := bytes.LastIndexByte(timers, '/')
	if slash < 0 || bytes.Count(timers, []byte("/")) != 4 {
		return Entry{}, unparseable("timers %.40q are not TR/Tw/Tc/Tr/Ta", timers)
	}
	d, err := parseDuration(bytes.TrimPrefix(timers[slash+1:], []byte("+")), time.Millisecond)
	if err != nil {
		return Entry{}, err
	}
	return Entry{Status: status, Duration: d}, nil
}

// regexParser is the configurable text format.
type regexParser struct {
	re               *regexp.Regexp
	status, duration int
	unit             time.Duration
}

func (p regexParser) ParseLine(line []byte) (Entry, error) {
	m := p.re.FindSubmatch(line)
	if m == nil {
		return Entry{}, unparseable("line does not match the format's regex")
	}
	status, err := parseStatus(m[p.status])
	if err != nil {
		return Entry{}, err
	}
	d, err := parseDuration(m[p.duration], p.unit)
	if err != nil {
		return Entry{}, err
	}
	return Entry{Status: status, Duration: d}, nil
}
