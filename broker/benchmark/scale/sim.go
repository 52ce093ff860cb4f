package scale

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/proto"
)

// slots is how many publish slots a second is cut into: instance i reports
// in slot i%slots, so N instances spread evenly over the second as real
// gateways (which start at random moments) do.
const slots = 100

// Simulator plays N gateway instances across regions, each publishing a real
// proto.Report with growing cumulative counters every second on its own
// subject, and keeps the exact sum of what it published, which is what the
// cluster snapshot must show once the reports are merged.
//
// Run owns its worker goroutines and joins them before it returns.
type Simulator struct {
	conns   []*nats.Conn
	regions []string
	workers []*simWorker
	start   time.Time
	// shapes are the latency histograms' shapes (nil: reports carry
	// none), of histBuckets buckets each.
	shapes      []histShape
	histBuckets int
}

// simWorker owns a share of the instances (i ≡ w mod workers) and
// publishes them on one connection.
type simWorker struct {
	nc     *nats.Conn
	insts  []simInstance
	shapes []histShape
	// hist is the scratch histogram every report of the worker encodes.
	hist proto.Histogram
	// regions are its exact sums per region, by region index.
	regions []regionSums
	// Read by the harness while the worker runs.
	published atomic.Int64 // reports published
	bytes     atomic.Int64 // report bytes published
	total     atomic.Uint64
	success   atomic.Uint64
	errs      atomic.Uint64
	failed    atomic.Int64 // encode or publish errors
}

// regionSums are a worker's figures of one region, read by the harness
// while it runs.
type regionSums struct {
	reports, total, success, errs atomic.Uint64
}

type simInstance struct {
	report proto.Report
	region int // index in Simulator.regions
	slot   int
	mult   uint64         // rate multiplier, 1 to 5
	shape  int            // index in Simulator.shapes
	step   uint64         // requests per second
	sent   proto.Counters // counters of the last report NATS accepted
}

// NewSimulator prepares n instances in the given regions (round robin),
// published by workers goroutines, worker w on conns[w mod len(conns)];
// bootID tells this run's instances apart from any earlier run's. With
// histBuckets > 0 every report carries a latency histogram of that many
// occupied buckets (see newHistShapes), and an instance serves its shape's
// requests per second (a few hundred) times 1 to 5; with 0, none, and 1 to
// 5 requests a second.
func NewSimulator(conns []*nats.Conn, n int, regions []string, workers int, bootID string, histBuckets int) *Simulator {
	s := &Simulator{conns: conns, regions: regions, start: time.Now().UTC(), histBuckets: max(histBuckets, 0)}
	s.shapes = newHistShapes(histBuckets)
	for w := 0; w < workers; w++ {
		s.workers = append(s.workers, &simWorker{nc: conns[w%len(conns)], regions: make([]regionSums, len(regions)), shapes: s.shapes})
	}
	for i := 0; i < n; i++ {
		region := regions[i%len(regions)]
		inst := simInstance{slot: i % slots, mult: uint64(1 + i%5), region: i % len(regions)}
		inst.step = inst.mult
		if s.shapes != nil {
			inst.shape = i % len(s.shapes)
			inst.step = inst.mult * s.shapes[inst.shape].count
		}
		inst.report = proto.Report{
			Version: proto.ReportVersion, Instance: InstanceName(region, i), Region: region,
			BootID: bootID, StartTime: s.start, Interval: time.Second,
		}
		inst.report.LatencyBuckets = make([]uint64, proto.NumLatencyBuckets)
		w := s.workers[i%workers]
		w.insts = append(w.insts, inst)
	}
	return s
}

// InstanceName is the name of simulated instance i of region.
func InstanceName(region string, i int) string {
	return "sim-" + region + "-" + strconv.Itoa(i)
}

// Run publishes every instance's report once a second, in its slot, until
// ctx ends, then flushes the connection.
func (s *Simulator) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, w := range s.workers {
		wg.Go(func() { w.run(ctx) })
	}
	wg.Wait()
	fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, nc := range s.conns {
		if err := nc.FlushWithContext(fctx); err != nil {
			return fmt.Errorf("flush simulated reports: %w", err)
		}
	}
	return nil
}

func (w *simWorker) run(ctx context.Context) {
	slotLen := time.Second / slots
	// Instances sorted by slot: they were appended in index order, and
	// i%slots cycles, so bucket them once.
	bySlot := make([][]int, slots)
	for j := range w.insts {
		bySlot[w.insts[j].slot] = append(bySlot[w.insts[j].slot], j)
	}
	next := time.Now().Truncate(slotLen).Add(slotLen)
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		now := time.Now()
		// Catch up on every slot that came due, so that an overloaded
		// worker publishes late rather than skipping instances.
		for !next.After(now) && ctx.Err() == nil {
			slot := int(next.UnixNano()/int64(slotLen)) % slots
			for _, j := range bySlot[slot] {
				w.publish(&w.insts[j], now)
			}
			next = next.Add(slotLen)
		}
		timer.Reset(time.Until(next))
	}
}

// publish advances one instance by a second of traffic and publishes its
// report. The exact sums move to the counters of the last report NATS
// accepted: a report that failed is carried by the next one, which holds the
// cumulative counters.
func (w *simWorker) publish(inst *simInstance, now time.Time) {
	data, err := w.encode(inst, now)
	r := &inst.report
	if err == nil {
		err = w.nc.Publish(proto.ReportSubject(r.Region, r.Instance), data)
	}
	if err != nil {
		w.failed.Add(1)
		return
	}
	w.published.Add(1)
	w.bytes.Add(int64(len(data)))
	dt, ds, de := r.RequestsTotal-inst.sent.RequestsTotal, r.RequestsSuccess-inst.sent.RequestsSuccess, r.RequestsError-inst.sent.RequestsError
	w.total.Add(dt)
	w.success.Add(ds)
	w.errs.Add(de)
	rs := &w.regions[inst.region]
	rs.reports.Add(1)
	rs.total.Add(dt)
	rs.success.Add(ds)
	rs.errs.Add(de)
	inst.sent.RequestsTotal, inst.sent.RequestsSuccess, inst.sent.RequestsError = r.RequestsTotal, r.RequestsSuccess, r.RequestsError
}

// encode advances one instance by a second of traffic and returns its
// report's wire form.
func (w *simWorker) encode(inst *simInstance, now time.Time) ([]byte, error) {
	r := &inst.report
	r.Seq++
	r.Time = now.UTC()
	errs := inst.step / 5 * (inst.mult / 5) // instances of multiplier 5 fail a fifth of their requests
	r.RequestsTotal += inst.step
	r.RequestsError += errs
	r.RequestsSuccess += inst.step - errs
	r.DurationCount += inst.step
	r.ActiveConnections = int64(inst.mult)
	if w.shapes == nil {
		r.DurationSumNanos += inst.step * uint64(simLatency)
		r.LatencyBuckets[proto.LatencyBucket(simLatency)] += inst.step
		return r.Encode()
	}
	sh := &w.shapes[inst.shape]
	r.DurationSumNanos += inst.mult * sh.sumNs
	for b, c := range sh.coarse {
		r.LatencyBuckets[b] += inst.mult * c
	}
	w.hist.Buckets = sh.cumulative(w.hist.Buckets, r.Seq, inst.mult)
	// The histogram is appended to the encoded report rather than
	// marshalled with it: encoding/json re-scans a Marshaler's output,
	// which made a report four times as dear and starved the simulator
	// at 100k instances. It is valid by construction (the tests decode it).
	data, err := r.Encode()
	if err != nil {
		return nil, err
	}
	data = append(data[:len(data)-1], `,"latency_hist":`...)
	return append(w.hist.AppendJSON(data), '}'), nil
}

// simLatency is every simulated request's duration when the reports carry
// no histogram.
const simLatency = 2 * time.Millisecond

// SimTotals are the simulator's running figures.
type SimTotals struct {
	Reports, Bytes, Failed int64
	// Requests are the sums of the last published reports' counters.
	Total, Success, Errors uint64
	// Regions are the same per region (Reports and the sums).
	Regions map[string]RegionTotals
}

// RegionTotals are the published reports and exact sums of one region.
type RegionTotals struct {
	Reports                uint64
	Total, Success, Errors uint64
}

// Totals sums the workers' figures.
func (s *Simulator) Totals() SimTotals {
	t := SimTotals{Regions: make(map[string]RegionTotals, len(s.regions))}
	for i, name := range s.regions {
		var r RegionTotals
		for _, w := range s.workers {
			rs := &w.regions[i]
			r.Reports += rs.reports.Load()
			r.Total += rs.total.Load()
			r.Success += rs.success.Load()
			r.Errors += rs.errs.Load()
		}
		t.Regions[name] = r
	}
	for _, w := range s.workers {
		t.Reports += w.published.Load()
		t.Bytes += w.bytes.Load()
		t.Failed += w.failed.Load()
		t.Total += w.total.Load()
		t.Success += w.success.Load()
		t.Errors += w.errs.Load()
	}
	return t
}
