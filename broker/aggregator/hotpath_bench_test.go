package aggregator

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/proto"
)

// The hot path at scale: the per-second tick, the per-report decode and
// merge, and the memory per tracked instance, at 1k to 100k instances whose
// reports carry realistic histograms. Compare figures of one run only (the
// VM is shared); scripts/bench-hotpath prints the ratios.

// fleetRPS is each simulated instance's request rate.
const fleetRPS = 100

// cumulativeHists is one gateway's cumulative histogram at each of steps
// seconds at fleetRPS: log-normal around 40 ms (p99 ≈ 250 ms) and 1 %
// around 1.5 s, after warm seconds of the same traffic. About 80 buckets
// change per second; a one-minute histogram holds about 450.
func cumulativeHists(seed uint64, warm, steps int) []proto.Histogram {
	r := rand.New(rand.NewPCG(seed, seed))
	var d proto.DenseHist
	serve := func(n int) {
		for range n {
			ms := math.Exp(math.Log(40) + 0.8*r.NormFloat64())
			if r.IntN(100) == 0 {
				ms = math.Exp(math.Log(1500) + 0.3*r.NormFloat64())
			}
			d.Observe(time.Duration(ms * 1e6))
		}
	}
	serve(warm * fleetRPS)
	out := make([]proto.Histogram, steps)
	for i := range out {
		serve(fleetRPS)
		out[i] = d.AppendSparse(nil)
	}
	return out
}

// simFleet is n simulated instances in 10 regions sharing one sequence of
// cumulative histograms, each at its own phase in it; an instance that runs
// off the end of the sequence restarts (a new boot counts in full).
type simFleet struct {
	hists []proto.Histogram
	hjson [][]byte // hists in wire form
	insts []simInst
	// clone makes every report own its histogram, as decoding does; off,
	// reports share the sequence's (cheaper to set up).
	clone bool
}

type simInst struct {
	name, region string
	subject      string
	boot         int
	seq          uint64
	phase        int
}

func newSimFleet(n int) *simFleet {
	f := &simFleet{hists: cumulativeHists(3, 60, 64), insts: make([]simInst, n)}
	for _, h := range f.hists {
		f.hjson = append(f.hjson, h.AppendJSON(nil))
	}
	for i := range f.insts {
		in := &f.insts[i]
		in.name, in.region = fmt.Sprintf("gw-%06d", i), fmt.Sprintf("region-%d", i%10)
		in.subject = proto.ReportSubject(in.region, in.name)
		in.phase = i % 32
	}
	return f
}

// next advances instance i by one report and returns the index of its
// cumulative histogram.
func (f *simFleet) next(i int) (in *simInst, k int) {
	in = &f.insts[i]
	in.seq++
	k = in.phase + int(in.seq) - 1
	in.boot = k / len(f.hists)
	return in, k % len(f.hists)
}

func (f *simFleet) report(i int, at time.Time) proto.Report {
	in, k := f.next(i)
	h := &f.hists[k]
	if f.clone {
		c := h.Clone()
		h = &c
	}
	n := h.Count()
	r := rp{inst: in.name, region: in.region, boot: "b" + strconv.Itoa(in.boot), seq: in.seq, total: n, errs: n / 50}.report(at)
	r.DurationSumNanos, r.DurationCount = n*uint64(45*time.Millisecond), n
	r.ActiveConnections = 4
	r.LatencyHistogram = h
	return r
}

// appendReportJSON appends instance i's next report in wire form, as a
// gateway encodes it.
func (f *simFleet) appendReportJSON(dst []byte, i int, at time.Time) ([]byte, string) {
	in, k := f.next(i)
	n := f.hists[k].Count()
	num := func(key string, v uint64) {
		dst = append(dst, `,"`...)
		dst = append(dst, key...)
		dst = append(dst, `":`...)
		dst = strconv.AppendUint(dst, v, 10)
	}
	dst = append(dst, `{"v":1,"instance":"`...)
	dst = append(dst, in.name...)
	dst = append(dst, `","region":"`...)
	dst = append(dst, in.region...)
	dst = append(dst, `","boot_id":"b`...)
	dst = strconv.AppendInt(dst, int64(in.boot), 10)
	dst = append(dst, '"')
	num("seq", in.seq)
	dst = append(dst, `,"time":"`...)
	dst = at.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","start_time":"2025-03-01T11:00:00Z","interval_ns":1000000000`...)
	num("requests_total", n)
	num("requests_success", n-n/50)
	num("requests_error", n/50)
	num("duration_sum_ns", n*uint64(45*time.Millisecond))
	num("duration_count", n)
	dst = append(dst, `,"latency_buckets":[`...)
	for j := range proto.NumLatencyBuckets {
		if j > 0 {
			dst = append(dst, ',')
		}
		var c uint64
		if j == 3 {
			c = n
		}
		dst = strconv.AppendUint(dst, c, 10)
	}
	dst = append(dst, `],"latency_hist":`...)
	dst = append(dst, f.hjson[k]...)
	dst = append(dst, `,"active_connections":4}`...)
	return dst, in.subject
}

// fill applies one report of every instance at now.
func (f *simFleet) fill(m *Merger, now time.Time) {
	for i := range f.insts {
		if o := m.Apply(f.report(i, now), now); o == OutcomeRejected {
			panic(fmt.Sprintf("rejected: %v", m.LastRejection()))
		}
	}
}

var fleetSizes = []int{1_000, 10_000, 100_000}

// BenchmarkTick is the per-second tick at 1k, 10k and 100k instances over
// 10 regions, each reporting 100 requests a second with its histogram, with
// --instance-snapshots on-demand and 10 instances followed (the default), and
// with all: the merge of the second's snapshots and the book's bookkeeping
// of them (rollups), without encoding or publishing. Applying the reports is
// outside the timer (BenchmarkReport).
func BenchmarkTick(b *testing.B) {
	for _, n := range fleetSizes {
		for _, mode := range []InstanceSnapshots{InstanceSnapshotsOnDemand, InstanceSnapshotsAll} {
			b.Run(fmt.Sprintf("n=%d/%v", n, mode), func(b *testing.B) {
				f := newSimFleet(n)
				m := NewMerger(MergerConfig{MaxInstances: n})
				bk := newBook()
				wanted := map[string]struct{}{}
				for i := 0; i < n; i += n / 10 {
					wanted[f.insts[i].name] = struct{}{}
				}
				var buf []proto.Snapshot
				now := t0
				tick := func() {
					buf = benchTick(m, bk, buf, now, mode, wanted)
				}
				for range 12 { // fill the window
					now = now.Add(time.Second)
					f.fill(m, now)
					tick()
				}
				b.ReportAllocs()
				var cpu time.Duration
				for b.Loop() {
					b.StopTimer()
					now = now.Add(time.Second)
					f.fill(m, now)
					runtime.GC() // the fill's garbage is not the tick's
					b.StartTimer()
					start := cpuTime()
					tick()
					cpu += cpuTime() - start
				}
				b.ReportMetric(float64(cpu.Microseconds())/1e3/float64(b.N), "cpu-ms/tick")
				if buf[0].LatencyMs[3] == 0 {
					b.Fatalf("cluster p99 %v", buf[0].LatencyMs[3])
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/1e3/float64(b.N), "ms/tick")
			})
		}
	}
}

// BenchmarkReport is the whole per-report path of the aggregator at 10k and
// 100k instances: onReport on a report as a gateway encodes it (a one-minute
// histogram, about 450 buckets), decode, checks, merge and replay buffer,
// with the election on as by default. Composing the message (a few hundred
// ns) is inside the timer.
func BenchmarkReport(b *testing.B) {
	nc := benchConn(b)
	for _, n := range fleetSizes[1:] {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			a, err := New(Config{NATS: nc, Logger: quiet, Merge: MergerConfig{MaxInstances: n}})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(a.js.CleanupPublisher)
			f := newSimFleet(n)
			now := t0
			a.cfg.Now = func() time.Time { return now }
			msg := &nats.Msg{}
			deliver := func(i int) {
				msg.Data, msg.Subject = f.appendReportJSON(msg.Data[:0], i, now)
				a.onReport(msg)
			}
			for i := range n {
				deliver(i)
			}
			now = now.Add(time.Second)
			a.merger.Snapshots(now)
			b.ReportAllocs()
			i := 0
			cpu := cpuTime()
			for b.Loop() {
				if i%n == 0 {
					now = now.Add(time.Second)
				}
				deliver(i % n)
				i++
			}
			b.StopTimer()
			b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/float64(b.N), "cpu-µs/report")
			if got := a.merger.Len(); got != n {
				b.Fatalf("%d instances tracked, want %d", got, n)
			}
		})
	}
}

// BenchmarkInstanceMemory prints the merger's heap per tracked instance at
// 10k and 100k instances, with and without latency histograms, after a full
// window of reports and ticks (bytes/instance), and what the book keeps per
// instance scope for its rollups (book-bytes/instance); the ns/op is
// meaningless.
func BenchmarkInstanceMemory(b *testing.B) {
	for _, hist := range []bool{false, true} {
		for _, n := range fleetSizes[1:] {
			b.Run(fmt.Sprintf("hist=%v/n=%d", hist, n), func(b *testing.B) {
				var per, bookPer float64
				for b.Loop() {
					f := newSimFleet(n)
					f.clone = true
					before := heapAfterGC()
					m := NewMerger(MergerConfig{MaxInstances: n})
					bk := newBook()
					var buf []proto.Snapshot
					now := t0
					for range 12 {
						now = now.Add(time.Second)
						for i := range f.insts {
							r := f.report(i, now)
							if !hist {
								r.LatencyHistogram = nil
							}
							m.Apply(r, now)
						}
						buf = benchTick(m, bk, buf, now, InstanceSnapshotsOnDemand, nil)
					}
					buf = nil
					total := heapAfterGC() - before
					runtime.KeepAlive(bk)
					bk = nil
					per = float64(heapAfterGC()-before) / float64(n)
					bookPer = float64(total)/float64(n) - per
					runtime.KeepAlive(m)
				}
				b.ReportMetric(per, "bytes/instance")
				b.ReportMetric(bookPer, "book-bytes/instance")
			})
		}
	}
}

func heapAfterGC() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// cpuTime is the CPU time this process used so far, in user and system
// mode, garbage collection included: on a shared VM it counts what the
// code costs, where the wall clock also counts waiting for a core.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
