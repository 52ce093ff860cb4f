package leader

import (
	"testing"
	"time"
)

// Leading is checked before every protected write, so it must stay cheap.
func BenchmarkLeading(b *testing.B) {
	e := &Elector{cfg: Config{Now: time.Now}}
	e.cur.Store(&lease{until: time.Now().Add(time.Hour)})
	b.ReportAllocs()
	for b.Loop() {
		if !e.Leading() {
			b.Fatal("not leading")
		}
	}
}
