package collector

import "testing"

// BenchmarkLineParsers measures one line per format: the collector's cost
// per request seen (compare the formats with each other in the same run).
func BenchmarkLineParsers(b *testing.B) {
	for _, tc := range []struct{ name, line string }{
		{FormatNginxCombined, `127.0.0.1 - - [03/Dec/2026:13:00:00 +0000] "GET /api/v1/items?page=2 HTTP/1.1" 200 612 "-" "Mozilla/5.0 (X11; Linux x86_64)" 0.005`},
		{FormatApache, `127.0.0.1 - - [03/Dec/2026:13:00:00 +0000] "GET /api/v1/items HTTP/1.1" 200 2326 1520`},
		{FormatHAProxy, `<134>Dec  3 13:00:00 haproxy[7]: 127.0.0.1:40000 [03/Dec/2026:13:00:00.123] fe be/s1 0/0/0/1/12 200 212 - - ---- 1/1/0/0/0 0/0 "GET / HTTP/1.1"`},
		{FormatNginxJSON, `{"time":"2026-12-03T13:00:00+00:00","remote_addr":"127.0.0.1","request":"GET / HTTP/1.1","status":"200","request_time":"0.005"}`},
		{FormatCaddy, `{"level":"info","ts":1764766800.1,"logger":"http.log.access","msg":"handled request","request":{"remote_ip":"127.0.0.1","method":"GET","uri":"/"},"duration":0.001234567,"size":12,"status":200}`},
	} {
		b.Run(tc.name, func(b *testing.B) {
			p, err := NewLineParser(LogFormat{Name: tc.name})
			if err != nil {
				b.Fatal(err)
			}
			line := []byte(tc.line)
			b.ReportAllocs()
			b.SetBytes(int64(len(line)))
			for b.Loop() {
				if _, err := p.ParseLine(line); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
