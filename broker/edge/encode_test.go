package edge

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/meridian-metrics/meridian/proto"
)

// Every form a snapshot is asked for — more than fit inline, from many
// goroutines at once — is encoded once, stays byte for byte what a fresh
// encoding gives, and is the same bytes on every later request.
func TestSnapFramesOncePerForm(t *testing.T) {
	s := snap(time.Now(), 123456)
	sf := newSnapFrames(s)
	forms := 3 * inlineForms
	sets := make([]proto.MetricSet, 0, forms)
	for set := proto.MetricSet(1); len(sets) < forms && set <= proto.AllMetrics; set++ {
		sets = append(sets, set)
	}
	if len(sets) <= inlineForms {
		t.Fatalf("only %d forms, want more than the %d inline", len(sets), inlineForms)
	}

	got := make([][][]byte, 8)
	var wg sync.WaitGroup
	for g := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[g] = make([][]byte, len(sets))
			for i := range sets {
				// Each goroutine walks the forms from a different start.
				k := (i + g*5) % len(sets)
				got[g][k] = sf.frame(sets[k])
			}
		}()
	}
	wg.Wait()

	for k, set := range sets {
		want, _ := encodeSnapshotFrame(nil, &s, set)
		first := sf.frame(set)
		if !bytes.Equal(first, want) {
			t.Fatalf("form %b: %q, want %q", set, first, want)
		}
		for g := range got {
			if &got[g][k][0] != &first[0] || len(got[g][k]) != len(first) {
				t.Errorf("form %b: goroutine %d got other bytes than the cached frame", set, g)
			}
		}
		h, err := ws.ReadHeader(bytes.NewReader(first))
		if err != nil || h.OpCode != ws.OpText || !h.Fin || int(h.Length) != len(first)-frameHeaderLen(int(h.Length)) {
			t.Errorf("form %b: header %+v (%v)", set, h, err)
		}
	}
	if n := int(sf.forms.Load().n.Load()); n != inlineForms {
		t.Errorf("%d inline forms, want %d", n, inlineForms)
	}
	if n := len(sf.forms.Load().more); n != len(sets)-inlineForms {
		t.Errorf("%d forms beyond the inline ones, want %d", n, len(sets)-inlineForms)
	}
	if got, want := sf.frame(0), sf.frame(proto.GuideMetrics); &got[0] != &want[0] {
		t.Error("the empty set is not the guide's form")
	}
}

// A delivery looks its frame up without allocating, inline or beyond.
func TestSnapFramesLookupAllocs(t *testing.T) {
	sf := newSnapFrames(snap(time.Now(), 1))
	for set := proto.MetricSet(1); set <= inlineForms+2; set++ {
		sf.frame(set)
	}
	for _, set := range []proto.MetricSet{1, inlineForms + 2} {
		if a := testing.AllocsPerRun(100, func() { sf.frame(set) }); a != 0 {
			t.Errorf("form %b: %v allocations per lookup, want 0", set, a)
		}
	}
}
