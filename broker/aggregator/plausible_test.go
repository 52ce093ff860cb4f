package aggregator

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/meridian-metrics/meridian/proto"
)

// plausibleStep applies r at t0+at seconds and wants the outcome and, when
// rejected, the reason.
type plausibleStep struct {
	at   time.Duration
	r    rp
	want Outcome
	why  Reject
}

func runPlausible(t *testing.T, cfg MergerConfig, steps []plausibleStep) *Merger {
	t.Helper()
	m := NewMerger(cfg)
	for i, s := range steps {
		now := t0.Add(s.at)
		got := m.Apply(s.r.report(now), now)
		if got != s.want || (got == OutcomeRejected && m.LastRejection() != s.why) {
			t.Fatalf("step %d (%+v): %v (%v), want %v (%v)", i, s.r, got, m.LastRejection(), s.want, s.why)
		}
		m.Snapshots(now)
	}
	return m
}

func clusterTotal(m *Merger, at time.Time) uint64 {
	s, _ := find(m.Snapshots(at), "cluster")
	return s.RequestsTotal
}

// Each rule: a forged or buggy report is rejected with its reason, changes
// nothing, and the instance's next sane report counts exactly.
func TestImplausibleReportsAreRejectedAndInstancesRecover(t *testing.T) {
	s := time.Second
	a := func(seq, total uint64) rp { return rp{inst: "a", region: "eu", boot: "b1", seq: seq, total: total} }
	tests := []struct {
		name  string
		steps []plausibleStep
		total uint64 // cluster requests_total at the end
	}{
		{"counter jump in one interval", []plausibleStep{
			{0, a(1, 100), OutcomeNewInstance, 0},
			{1 * s, a(2, 200), OutcomeApplied, 0},
			{2 * s, a(3, 200+20_000_000), OutcomeRejected, RejectCounterJump}, // 2e7 in 1s (+10s slack) > 1e6/s
			{3 * s, a(3, 300), OutcomeApplied, 0},                             // the real report 3: sane again
			{4 * s, a(4, 400), OutcomeApplied, 0},
		}, 400},
		{"one report to 2^64-1 neither counts nor freezes the merge", []plausibleStep{
			{0, a(1, 100), OutcomeNewInstance, 0},
			{1 * s, rp{inst: "x", region: "eu", boot: "evil", seq: 1, total: math.MaxUint64 - 1}, OutcomeRejected, RejectCounterJump},
			{2 * s, a(2, 200), OutcomeApplied, 0},
			{3 * s, rp{inst: "b", region: "us", boot: "b1", seq: 1, total: 50}, OutcomeNewInstance, 0},
		}, 250},
		{"a seq far ahead does not make the real reports duplicates", []plausibleStep{
			{0, a(1, 100), OutcomeNewInstance, 0},
			{1 * s, a(1<<62, 100), OutcomeRejected, RejectSeqGap},
			{2 * s, a(2, 200), OutcomeApplied, 0},
			{3 * s, a(3, 300), OutcomeApplied, 0},
		}, 300},
		{"a first report beyond what its uptime allows", []plausibleStep{
			{0, rp{inst: "n", region: "eu", boot: "b1", seq: 1, total: 1e9, start: t0.Add(-time.Minute)}, OutcomeRejected, RejectCounterJump},
			{0, rp{inst: "n", region: "eu", boot: "b1", seq: 1, total: 1e9, start: t0.Add(-time.Hour)}, OutcomeNewInstance, 0},
		}, 1e9},
		{"a new boot beyond what the time since the last report allows", []plausibleStep{
			{0, a(1, 100), OutcomeNewInstance, 0},
			{1 * s, rp{inst: "a", region: "eu", boot: "b2", seq: 1, total: 1e9}, OutcomeRejected, RejectCounterJump},
			{2 * s, a(2, 200), OutcomeApplied, 0}, // the real boot goes on counting
			{3 * s, rp{inst: "a", region: "eu", boot: "b2", seq: 1, total: 5}, OutcomeResetBoot, 0},
		}, 205},
		{"a boot that starts in the future", []plausibleStep{
			{0, rp{inst: "f", region: "eu", boot: "b1", seq: 1, total: 1, start: t0.Add(time.Hour)}, OutcomeRejected, RejectFutureStart},
			{0, rp{inst: "f", region: "eu", boot: "b1", seq: 1, total: 1, start: t0.Add(10 * time.Second)}, OutcomeNewInstance, 0},
		}, 1},
		{"a first report with a seq its uptime cannot explain", []plausibleStep{
			{0, rp{inst: "q", region: "eu", boot: "b1", seq: 1 << 40, total: 1}, OutcomeRejected, RejectSeqGap},
		}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := runPlausible(t, MergerConfig{}, tc.steps)
			at := t0.Add(tc.steps[len(tc.steps)-1].at)
			if got := clusterTotal(m, at); got != tc.total {
				t.Fatalf("cluster total %d, want %d", got, tc.total)
			}
			checkInvariants(t, m, m.Snapshots(at))
		})
	}
}

// A gateway whose sequence really jumped (a bug) and then reports steadily
// from there is followed for RecoverAfter, then accepted with everything it
// counted meanwhile: nothing is lost. A single forged report in between
// restarts the wait; a real report of the old sequence ends it.
func TestSeqJumpIsAcceptedAfterRecoverAfter(t *testing.T) {
	const jump = 1_000_000
	m := NewMerger(MergerConfig{})
	apply := func(at time.Duration, seq, total uint64) (Outcome, Reject) {
		now := t0.Add(at)
		out := m.Apply(rp{inst: "a", region: "eu", boot: "b1", seq: seq, total: total}.report(now), now)
		return out, m.LastRejection()
	}
	if out, _ := apply(0, 1, 10); out != OutcomeNewInstance {
		t.Fatal(out)
	}
	var i time.Duration
	for i = 1; i <= 10; i++ { // 10 reports over 9 s: still followed
		if out, why := apply(i*time.Second, jump+uint64(i), 10+uint64(i)*10); out != OutcomeRejected || why != RejectSeqGap {
			t.Fatalf("report %d of the jumped sequence: %v (%v), want rejected (seq_gap)", i, out, why)
		}
	}
	if out, _ := apply(11*time.Second, jump+11, 120); out != OutcomeApplied {
		t.Fatalf("after RecoverAfter: %v, want applied", out)
	}
	if got := clusterTotal(m, t0.Add(11*time.Second)); got != 120 {
		t.Fatalf("cluster total %d, want 120: what the instance counted while followed", got)
	}
	// A single report far ahead, then the real sequence: the real one
	// applies and the jump is forgotten.
	if out, _ := apply(12*time.Second, 1<<60, 130); out != OutcomeRejected {
		t.Fatal(out)
	}
	if out, _ := apply(13*time.Second, jump+12, 130); out != OutcomeApplied {
		t.Fatalf("real report after a forged one: %v", out)
	}
	if out, _ := apply(30*time.Second, 1<<60+1, 140); out != OutcomeRejected {
		t.Fatalf("a stale suspect was kept: %v", out)
	}
}

func TestCapsOnInstancesAndRegions(t *testing.T) {
	cfg := MergerConfig{MaxInstances: 2, MaxRegions: 2, ForgetAfter: time.Minute}
	m := runPlausible(t, cfg, []plausibleStep{
		{0, rp{inst: "a", region: "eu", boot: "b", seq: 1, total: 1}, OutcomeNewInstance, 0},
		{0, rp{inst: "b", region: "us", boot: "b", seq: 1, total: 1}, OutcomeNewInstance, 0},
		{0, rp{inst: "c", region: "eu", boot: "b", seq: 1, total: 1}, OutcomeRejected, RejectMaxInstances},
		{0, rp{inst: "a", region: "ap", boot: "b", seq: 2, total: 2}, OutcomeRejected, RejectMaxRegions}, // a move to a third region
		{time.Second, rp{inst: "a", region: "eu", boot: "b", seq: 2, total: 2}, OutcomeApplied, 0},       // tracked ones go on
		// b is forgotten after a minute of silence: room for c.
		{2 * time.Minute, rp{inst: "a", region: "eu", boot: "b", seq: 3, total: 3}, OutcomeApplied, 0},
	})
	now := t0.Add(2*time.Minute + time.Second)
	m.Snapshots(now)
	if got := m.Apply(rp{inst: "c", region: "eu", boot: "b", seq: 1, total: 1}.report(now), now); got != OutcomeNewInstance {
		t.Fatalf("after b was forgotten: %v (%v), want new_instance", got, m.LastRejection())
	}
}

func TestMergerConfigRejectsNegatives(t *testing.T) {
	for field, c := range map[string]MergerConfig{
		"MaxInstances": {MaxInstances: -1}, "MaxRegions": {MaxRegions: -1},
		"MaxRequestRate": {MaxRequestRate: -1}, "RecoverAfter": {RecoverAfter: -1},
	} {
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%+v: %v, want an error naming %s", c, err, field)
		}
	}
	if err := (MergerConfig{}).Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestSubjectMatches(t *testing.T) {
	r := &proto.Report{Region: "eu", Instance: "gw-1"}
	for subject, want := range map[string]bool{
		"meridian.report.eu.gw-1":   true,
		"meridian.report.eu.gw-2":   false,
		"meridian.report.us.gw-1":   false,
		"meridian.report.eu.gw-1.x": false,
		"meridian.report.eu":        false,
		"meridian.snapshot.eu.gw-1": false,
	} {
		if got := subjectMatches(subject, r); got != want {
			t.Errorf("%s: %v, want %v", subject, got, want)
		}
	}
	if !strings.HasPrefix(RejectSubject.String(), "subject") || Reject(200).String() != "none" {
		t.Fatal("reason names")
	}
}

// FuzzSubjectMatches: any subject and names; a match means the subject is
// exactly the report subject of those names.
func FuzzSubjectMatches(f *testing.F) {
	f.Add("meridian.report.eu.gw-1", "eu", "gw-1")
	f.Add("meridian.report.eu.gw-1.x", "eu", "gw-1.x")
	f.Add("meridian.report..", "", "")
	f.Add("meridian.report.eu", "eu", "")
	f.Fuzz(func(t *testing.T, subject, region, instance string) {
		r := &proto.Report{Region: region, Instance: instance}
		if subjectMatches(subject, r) && subject != proto.ReportSubject(region, instance) {
			t.Fatalf("%q matched region %q instance %q", subject, region, instance)
		}
	})
}
