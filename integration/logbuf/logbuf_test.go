package logbuf_test

import (
	"log/slog"
	"sync"
	"testing"

	"github.com/meridian-metrics/meridian/integration/logbuf"
)

func TestBufferCountsAndDecodesConcurrentWrites(t *testing.T) {
	var buf logbuf.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { log.Info("slow consumer", "n", i) })
	}
	wg.Wait()
	buf.Write([]byte("not json slow consumer\n"))
	if n := buf.Count("slow consumer"); n != 9 {
		t.Errorf("Count = %d, want 9", n)
	}
	recs := buf.Records("slow consumer")
	if len(recs) != 8 {
		t.Fatalf("Records = %d, want the 8 JSON lines", len(recs))
	}
	for _, r := range recs {
		if r["msg"] != "slow consumer" {
			t.Errorf("record %v", r)
		}
	}
}
