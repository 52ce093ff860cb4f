//go:build linux

package benchmark

import (
	"strings"
	"testing"
	"time"
)

func TestParseVmRSS(t *testing.T) {
	tests := []struct {
		status  string
		want    uint64
		wantErr string
	}{
		{"Name:\tx\nVmPeak:\t  999 kB\nVmRSS:\t   1234 kB\nThreads:\t3\n", 1234 << 10, ""},
		{"Name:\tx\n", 0, "no VmRSS"},
		{"VmRSS:\t12 MB\n", 0, "parse VmRSS"},
		{"VmRSS:\tlots kB\n", 0, "parse VmRSS"},
	}
	for _, tt := range tests {
		got, err := parseVmRSS([]byte(tt.status))
		if got != tt.want || (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("parseVmRSS(%q) = %d, %v; want %d, %q", tt.status, got, err, tt.want, tt.wantErr)
		}
	}
	if rss, err := rssBytes(); err != nil || rss < 1<<20 {
		t.Errorf("rssBytes() = %d, %v", rss, err)
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
