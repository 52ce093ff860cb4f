//go:build linux

package benchmark

import (
	"strings"
	"testing"
	"time"
)

func TestParseStatusKB(t *testing.T) {
	const status = "Name:\tx\nVmPeak:\t  999 kB\nVmRSS:\t   1234 kB\nRssAnon:\t 1000 kB\nRssFile:\t  234 kB\nThreads:\t3\n"
	tests := []struct {
		status, key string
		want        uint64
		wantErr     string
	}{
		{status, "VmRSS", 1234 << 10, ""},
		{status, "RssFile", 234 << 10, ""},
		{"Name:\tx\n", "VmRSS", 0, "no VmRSS"},
		{"VmRSS:\t12 MB\n", "VmRSS", 0, "parse VmRSS"},
		{"RssFile:\tlots kB\n", "RssFile", 0, "parse RssFile"},
	}
	for _, tt := range tests {
		got, err := parseStatusKB([]byte(tt.status), tt.key)
		if got != tt.want || (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("parseStatusKB(%q, %s) = %d, %v; want %d, %q", tt.status, tt.key, got, err, tt.want, tt.wantErr)
		}
	}
	if n, err := parseStatusValue([]byte(status), "Threads"); n != 3 || err != nil {
		t.Errorf("parseStatusValue(Threads) = %d, %v; want 3", n, err)
	}
	if _, err := parseStatusValue([]byte("Threads:\t3 kB\n"), "Threads"); err == nil {
		t.Error("parseStatusValue took a value with a unit")
	}
	m, err := readProcMemory()
	if err != nil || m.rss < 1<<20 || m.file == 0 || m.anon == 0 || m.file+m.anon > m.rss || m.threads < 1 {
		t.Errorf("readProcMemory() = %+v, %v", m, err)
	}
}

func TestParseProcStat(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice
	stat := "cpu  100 5 50 9000 40 3 2 1 7 8\ncpu0 50 2 25 4500 20 1 1 0 0 0\n"
	got, err := parseProcStat([]byte(stat))
	want := machineCPU{Busy: 160 * time.Second / userHZ, Steal: time.Second / userHZ}
	if got != want || err != nil {
		t.Errorf("parseProcStat = %+v, %v; want %+v (idle, iowait and guest time excluded, steal apart)", got, err, want)
	}
	for _, bad := range []string{"", "intr 1 2 3\n", "cpu 1 2 x 4 5\n"} {
		if _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("parseProcStat(%q) accepted", bad)
		}
	}
}
