package collector

import (
	"errors"
	"testing"
	"time"
)

func TestLineParsers(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name   string
		format LogFormat
		line   string
		want   Entry
		bad    bool
	}{
		{"nginx json", LogFormat{Name: FormatNginxJSON}, `{"time":"2026-12-03T13:00:00+00:00","status":"404","request_time":"0.005"}`, Entry{404, 5 * ms}, false},
		{"nginx json no duration value", LogFormat{Name: FormatNginxJSON}, `{"status":"200","request_time":"-"}`, Entry{200, 0}, false},
		{"nginx json missing status", LogFormat{Name: FormatNginxJSON}, `{"request_time":"0.005"}`, Entry{}, true},
		{"nginx json not json", LogFormat{Name: FormatNginxJSON}, `status=200`, Entry{}, true},
		{"nginx combined", LogFormat{Name: FormatNginxCombined},
			`127.0.0.1 - - [03/Dec/2026:13:00:00 +0000] "GET /a?status=500 HTTP/1.1" 500 21 "-" "Go-http-client/1.1" 1.234`, Entry{500, 1234 * ms}, false},
		{"nginx combined escaped quote in request", LogFormat{Name: FormatNginxCombined},
			`::1 - bob [03/Dec/2026:13:00:00 +0000] "GET /\x22x\" HTTP/1.1" 302 0 "-" "a \"b\"" 0.000`, Entry{302, 0}, false},
		{"nginx combined without request_time", LogFormat{Name: FormatNginxCombined},
			`127.0.0.1 - - [03/Dec/2026:13:00:00 +0000] "GET / HTTP/1.1" 200 21 "-" "curl"`, Entry{}, true},
		{"apache common + %D", LogFormat{Name: FormatApache},
			`127.0.0.1 - - [03/Dec/2026:13:00:00 +0000] "GET / HTTP/1.1" 200 2326 1520`, Entry{200, 1520 * time.Microsecond}, false},
		{"apache bytes dash", LogFormat{Name: FormatApache},
			`127.0.0.1 - - [03/Dec/2026:13:00:00 +0000] "GET / HTTP/1.1" 304 - 77`, Entry{304, 77 * time.Microsecond}, false},
		{"apache status not a number", LogFormat{Name: FormatApache},
			`127.0.0.1 - - [03/Dec/2026:13:00:00 +0000] "GET / HTTP/1.1" 2x0 - 77`, Entry{}, true},
		{"haproxy syslog 3164", LogFormat{Name: FormatHAProxy},
			`<134>Dec  3 13:00:00 haproxy[7]: 127.0.0.1:40000 [03/Dec/2026:13:00:00.123] fe be/s1 0/0/0/1/12 503 212 - - ---- 1/1/0/0/0 0/0 "GET / HTTP/1.1"`, Entry{503, 12 * ms}, false},
		{"haproxy 5424", LogFormat{Name: FormatHAProxy},
			`<134>1 2026-12-03T13:00:00.123Z host haproxy 7 - - 127.0.0.1:40000 [03/Dec/2026:13:00:00.123] fe be/s1 0/0/0/1/+3 200 212 - - ---- 1/1/0/0/0 0/0 "GET / HTTP/1.1"`, Entry{200, 3 * ms}, false},
		{"haproxy aborted", LogFormat{Name: FormatHAProxy},
			`127.0.0.1:40000 [03/Dec/2026:13:00:00.123] fe be/<NOSRV> -1/-1/-1/-1/-1 -1 0 - - CR-- 1/1/0/0/0 0/0 "<BADREQ>"`, Entry{-1, 0}, false},
		{"haproxy tcp log", LogFormat{Name: FormatHAProxy},
			`127.0.0.1:40000 [03/Dec/2026:13:00:00.123] fe be/s1 0/0/5 212 -- 1/1/0/0/0 0/0`, Entry{}, true},
		{"caddy", LogFormat{Name: FormatCaddy},
			`{"level":"info","ts":1764766800.1,"logger":"http.log.access","msg":"handled request","request":{"method":"GET"},"duration":0.001234567891,"size":12,"status":200}`, Entry{200, 1234567 * time.Nanosecond}, false},
		{"caddy exponent duration", LogFormat{Name: FormatCaddy}, `{"status":500,"duration":1.5e-05}`, Entry{500, 15 * time.Microsecond}, false},
		{"json custom", LogFormat{Name: FormatJSON, StatusField: "code", DurationField: "ms", DurationUnit: "ms"}, `{"code":201,"ms":"17"}`, Entry{201, 17 * ms}, false},
		{"regex", LogFormat{Name: FormatRegex, Regex: `code=(?P<status>\d+) took=(?P<duration>[\d.]+)`, DurationUnit: "us"}, `x code=418 took=250.5 y`, Entry{418, 250500 * time.Nanosecond}, false},
		{"regex no match", LogFormat{Name: FormatRegex, Regex: `code=(?P<status>\d+) took=(?P<duration>[\d.]+)`}, `nothing`, Entry{}, true},
		{"negative duration text", LogFormat{Name: FormatNginxJSON}, `{"status":"200","request_time":"-x"}`, Entry{}, true},
		{"duration over a day", LogFormat{Name: FormatNginxJSON}, `{"status":"200","request_time":"99999999999"}`, Entry{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewLineParser(tc.format)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.ParseLine([]byte(tc.line))
			if tc.bad {
				if !errors.Is(err, ErrUnparseable) {
					t.Fatalf("ParseLine = %+v, %v; want an error wrapping ErrUnparseable", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseLine = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestNewLineParserRejectsBadFormats(t *testing.T) {
	for _, f := range []LogFormat{
		{Name: "w3c"},
		{Name: FormatRegex, Regex: `(?P<status>\d+)`},
		{Name: FormatRegex, Regex: `(`},
		{Name: FormatJSON, DurationUnit: "fortnights"},
	} {
		if _, err := NewLineParser(f); err == nil {
			t.Errorf("NewLineParser(%+v) accepted", f)
		}
	}
}

// FuzzLineParsers feeds every built-in format arbitrary lines: an error is
// fine, a panic or an out-of-range entry is not.
func FuzzLineParsers(f *testing.F) {
	for _, seed := range []string{
		`{"status":"404","request_time":"0.005"}`,
		`127.0.0.1 - - [03/Dec/2026:13:00:00 +0000] "GET / HTTP/1.1" 500 21 "-" "x" 1.234`,
		`127.0.0.1:40000 [03/Dec/2026:13:00:00.123] fe be/s1 0/0/0/1/12 503 212 - - ---- 1/1/0/0/0 0/0 "GET / HTTP/1.1"`,
		`{"status":200,"duration":1.5e-05}`,
		`] "\`, `[03/Dec/2026:13:00:00.123] a b 1/2/3/4/5`, `{"status":"-1","request_time":"-"}`,
	} {
		f.Add(seed)
	}
	var parsers []LineParser
	for _, name := range LogFormats {
		p, err := NewLineParser(LogFormat{Name: name, Regex: `(?P<status>\S+) (?P<duration>\S+)`})
		if err != nil {
			f.Fatal(err)
		}
		parsers = append(parsers, p)
	}
	f.Fuzz(func(t *testing.T, line string) {
		for _, p := range parsers {
			e, err := p.ParseLine([]byte(line))
			if err != nil {
				if !errors.Is(err, ErrUnparseable) {
					t.Fatalf("error %v does not wrap ErrUnparseable", err)
				}
				continue
			}
			if e.Duration < 0 || e.Duration > maxDuration || e.Status != -1 && (e.Status < 0 || e.Status > 999) {
				t.Fatalf("%q parsed to out-of-range %+v", line, e)
			}
		}
	})
}
