package benchmark

import (
	"fmt"
	"runtime/metrics"
	"strings"
)

// Idle memory is sampled after runtime.GC and debug.FreeOSMemory at three
// kinds of moments: cold (the server up, nothing ever connected), warm
// (Config.Warmup subscribers connected, got their ticks and left) and at
// every point of the sweep. Per subscriber, the headline figure is the
// marginal cost, (RSS at N − warm RSS) / N: what one more idle subscriber
// costs an edge that has served connections before. The cold figure,
// (RSS at N − cold RSS) / N, also carries the one-off cost of the first
// connections (the binary's code pages they run first, threads the runtime
// starts under load, metadata of a heap that grew), which shrinks per
// subscriber as N grows; it is reported beside it, as is the slope between
// points, so that a reader can judge. The warm-up's subscribers leave
// behind at most their share of capacity in maps that never shrink, which
// is why the warm-up is kept well below the sweep's first point.

// memClasses is the Go runtime's account of its memory, from
// runtime/metrics' /memory/classes, grouped as the report shows it.
type memClasses struct {
	HeapObjects uint64 `json:"heap_objects"` // live objects (and dead ones not yet swept)
	HeapUnused  uint64 `json:"heap_unused"`  // free slots in spans in use: fragmentation
	HeapFree    uint64 `json:"heap_free"`    // free pages not yet returned to the OS
	Stacks      uint64 `json:"stacks"`       // goroutine stacks and threads' g0 and signal stacks
	Metadata    uint64 `json:"metadata"`     // span, cache, GC and arena metadata
	Other       uint64 `json:"other"`        // profiling buckets and the runtime's other uses
	Threads     int    `json:"threads"`      // OS threads; the runtime never ends one
}

var memClassNames = []string{
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/stacks:bytes",
	"/memory/classes/os-stacks:bytes",
	"/memory/classes/metadata/mcache/inuse:bytes",
	"/memory/classes/metadata/mcache/free:bytes",
	"/memory/classes/metadata/mspan/inuse:bytes",
	"/memory/classes/metadata/mspan/free:bytes",
	"/memory/classes/metadata/other:bytes",
	"/memory/classes/profiling/buckets:bytes",
	"/memory/classes/other:bytes",
}

// readMemClasses reads the runtime's memory classes; threads is from
// /proc/self/status.
func readMemClasses(threads int) memClasses {
	s := make([]metrics.Sample, len(memClassNames))
	for i, n := range memClassNames {
		s[i].Name = n
	}
	metrics.Read(s)
	v := func(i int) uint64 {
		if s[i].Value.Kind() != metrics.KindUint64 {
			return 0 // not in this Go release
		}
		return s[i].Value.Uint64()
	}
	return memClasses{
		HeapObjects: v(0),
		HeapUnused:  v(1),
		HeapFree:    v(2),
		Stacks:      v(3) + v(4),
		Metadata:    v(5) + v(6) + v(7) + v(8) + v(9),
		Other:       v(10) + v(11),
		Threads:     threads,
	}
}

// MemoryPoint is the idle memory with Subscribers connected, after GC. Per
// subscriber figures are over the warm sample (see above) unless named
// cold.
type MemoryPoint struct {
	Subscribers int    `json:"subscribers"`
	RSSBytes    uint64 `json:"rss_bytes"`
	// BytesPerSubscriber: (VmRSS − warm VmRSS) / Subscribers.
	BytesPerSubscriber float64 `json:"bytes_per_subscriber"`
	// ColdBytesPerSubscriber: (VmRSS − cold VmRSS) / Subscribers.
	ColdBytesPerSubscriber float64 `json:"cold_bytes_per_subscriber"`
	// HeldBytesPerSubscriber: (VmRSS before the forced collection − warm
	// VmRSS) / Subscribers: what the server holds on its own, garbage
	// and free memory the runtime has not returned yet included.
	HeldBytesPerSubscriber float64 `json:"held_bytes_per_subscriber"`
	// SlopeBytesPerSubscriber: VmRSS growth since the previous point (the
	// warm sample for the first) per subscriber added.
	SlopeBytesPerSubscriber float64 `json:"slope_bytes_per_subscriber"`
	// Where the growth over warm is, per subscriber: anonymous and file
	// RSS, then the runtime's classes of the anonymous part.
	AnonBytesPerSubscriber     float64 `json:"anon_bytes_per_subscriber"`
	FileBytesPerSubscriber     float64 `json:"file_bytes_per_subscriber"`
	HeapObjectsPerSubscriber   float64 `json:"heap_objects_bytes_per_subscriber"`
	HeapUnusedPerSubscriber    float64 `json:"heap_unused_bytes_per_subscriber"`
	StackBytesPerSubscriber    float64 `json:"stack_bytes_per_subscriber"`
	MetadataBytesPerSubscriber float64 `json:"metadata_bytes_per_subscriber"`
	// Threads is the server's OS threads at this point.
	Threads int `json:"threads"`
}

// memoryPoint computes the point of sample s with n subscribers; prev is
// the previous point's sample (warm for the first).
func memoryPoint(n int, cold, warm, prev, s serverSample) MemoryPoint {
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) }
	p := MemoryPoint{
		Subscribers:                n,
		RSSBytes:                   s.RSSBytes,
		BytesPerSubscriber:         per(s.RSSBytes, warm.RSSBytes),
		ColdBytesPerSubscriber:     per(s.RSSBytes, cold.RSSBytes),
		HeldBytesPerSubscriber:     per(s.HeldRSSBytes, warm.RSSBytes),
		AnonBytesPerSubscriber:     per(s.RSSAnonBytes, warm.RSSAnonBytes),
		FileBytesPerSubscriber:     per(s.RSSFileBytes, warm.RSSFileBytes),
		HeapObjectsPerSubscriber:   per(s.Mem.HeapObjects, warm.Mem.HeapObjects),
		HeapUnusedPerSubscriber:    per(s.Mem.HeapUnused, warm.Mem.HeapUnused),
		StackBytesPerSubscriber:    per(s.Mem.Stacks, warm.Mem.Stacks),
		MetadataBytesPerSubscriber: per(s.Mem.Metadata, warm.Mem.Metadata),
		Threads:                    s.Mem.Threads,
	}
	if added := n - int(prev.Connections); added > 0 {
		p.SlopeBytesPerSubscriber = (float64(s.RSSBytes) - float64(prev.RSSBytes)) / float64(added)
	}
	return p
}

// flatness is the largest over the smallest per-subscriber figure of the
// sweep (1 when it has fewer than two points or a figure is not positive).
func flatness(points []MemoryPoint) float64 {
	if len(points) < 2 {
		return 1
	}
	lo, hi := points[0].BytesPerSubscriber, points[0].BytesPerSubscriber
	for _, p := range points[1:] {
		lo, hi = min(lo, p.BytesPerSubscriber), max(hi, p.BytesPerSubscriber)
	}
	if lo <= 0 {
		return 1
	}
	return hi / lo
}

// writeMemorySweep prints each mode's points side by side.
func writeMemorySweep(b *strings.Builder, r *Report) {
	var modes []*ModeResult
	for _, m := range []*ModeResult{r.Edge, r.Baseline, r.Raw} {
		if m != nil && len(m.Memory) > 0 {
			modes = append(modes, m)
		}
	}
	if len(modes) == 0 {
		return
	}
	fmt.Fprintf(b, "\nidle memory per subscriber: over the server's RSS after %d subscribers connected and left (warm), and over its RSS before any (cold)\n\n",
		modes[0].WarmupSubscribers)
	head := []string{"", ""}
	for _, p := range modes[0].Memory {
		head = append(head, fmt.Sprintf("%d", p.Subscribers))
	}
	t := [][]string{head}
	for _, m := range modes {
		name := modeLabel(m.Mode)
		row := func(label string, f func(MemoryPoint) string) {
			line := []string{name, label}
			name = ""
			for _, p := range m.Memory {
				line = append(line, f(p))
			}
			t = append(t, line)
		}
		row("RSS over warm", func(p MemoryPoint) string { return kib(p.BytesPerSubscriber) })
		row("  slope from the previous point", func(p MemoryPoint) string { return kib(p.SlopeBytesPerSubscriber) })
		row("  anon / binary's pages", func(p MemoryPoint) string {
			return kib(p.AnonBytesPerSubscriber) + " / " + kib(p.FileBytesPerSubscriber)
		})
		row("  heap objects / unused / stacks / metadata", func(p MemoryPoint) string {
			return kib(p.HeapObjectsPerSubscriber) + " / " + kib(p.HeapUnusedPerSubscriber) + " / " +
				kib(p.StackBytesPerSubscriber) + " / " + kib(p.MetadataBytesPerSubscriber)
		})
		row("RSS over cold (raw RSS/N)", func(p MemoryPoint) string { return kib(p.ColdBytesPerSubscriber) })
		row("RSS over warm, no forced GC", func(p MemoryPoint) string { return kib(p.HeldBytesPerSubscriber) })
		row("server threads", func(p MemoryPoint) string { return fmt.Sprintf("%d", p.Threads) })
	}
	writeAligned(b, t)
	for _, m := range modes {
		d := func(f func(memClasses) uint64) string { return mib(int64(f(m.WarmMem)) - int64(f(m.ColdMem))) }
		fmt.Fprintf(b, "%s: one-off cost of the first connections (warm − cold RSS) %s: binary's pages %s, anon %s "+
			"(heap objects %s, unused %s, free %s, stacks %s, metadata %s, other %s); threads %d cold, %d warm\n",
			modeLabel(m.Mode), mib(m.FixedBytes), mib(m.FixedFileBytes), mib(m.FixedAnonBytes),
			d(func(c memClasses) uint64 { return c.HeapObjects }), d(func(c memClasses) uint64 { return c.HeapUnused }),
			d(func(c memClasses) uint64 { return c.HeapFree }), d(func(c memClasses) uint64 { return c.Stacks }),
			d(func(c memClasses) uint64 { return c.Metadata }), d(func(c memClasses) uint64 { return c.Other }),
			m.ColdThreads, m.WarmThreads)
	}
}

// modeLabel is the table's name of a mode.
func modeLabel(m Mode) string {
	if m == ModeNaive {
		return "baseline"
	}
	return string(m)
}

// mib prints a size in MiB, or KiB below one.
func mib(b int64) string {
	if b > -(1<<20) && b < 1<<20 {
		return fmt.Sprintf("%.0f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%.2f MiB", float64(b)/(1<<20))
}
