package collector_test

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/broker/natsnode/natstest"
	"github.com/meridian-metrics/meridian/broker/service"
	"github.com/meridian-metrics/meridian/collector"
	"github.com/meridian-metrics/meridian/gateway"
	"github.com/meridian-metrics/meridian/integration/wait"
	"github.com/meridian-metrics/meridian/proto"
)

// runCollector runs a Collector over a log file until the returned stop is
// called (graceful: final report).
func runCollector(t *testing.T, nc *nats.Conn, logPath, cpPath string) (*collector.Collector, func()) {
	t.Helper()
	p, _ := collector.NewLineParser(collector.LogFormat{Name: collector.FormatNginxCombined})
	src, err := collector.NewLogSource(collector.LogConfig{
		Path: logPath, Parser: p, Recorder: new(gateway.Recorder), FromStart: true,
		PollInterval: 5 * time.Millisecond, Logger: quietLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	col, err := collector.NewCollector(collector.CollectorConfig{
		NATS: nc, Region: "eu", Instance: "nginx-1", Interval: 10 * time.Millisecond,
		Source: src, CheckpointPath: cpPath, Logger: quietLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- col.Run(context.Background()) }()
	var stopped bool
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := col.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := col.Shutdown(ctx); err != nil { // idempotent
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return col, stop
}

// TestCollectorCheckpointIsNeverBehindAPublishedReport checks the crash
// contract: every report published carries counters no higher than the
// checkpoint on disk at that moment, and a restarted collector resumes the
// boot with a higher sequence and the same counters.
func TestCollectorCheckpointIsNeverBehindAPublishedReport(t *testing.T) {
	_, nc := natstest.StartTest(t)
	dir := t.TempDir()
	logPath, cpPath := filepath.Join(dir, "access.log"), filepath.Join(dir, "cp.json")
	w := openLog(t, logPath)
	sub, err := nc.SubscribeSync(proto.ReportSubject("eu", "nginx-1"))
	if err != nil {
		t.Fatal(err)
	}
	col, stop := runCollector(t, nc, logPath, cpPath)
	boot := col.BootID()

	var last proto.Report
	for written := 0; written < 200; written += 20 {
		w.write(200, 15)
		w.write(502, 5)
		for last.RequestsTotal < uint64(written+20) {
			msg, err := sub.NextMsg(10 * time.Second)
			if err != nil {
				t.Fatalf("waiting for %d requests (last %d): %v", written+20, last.RequestsTotal, err)
			}
			r, err := proto.DecodeReport(msg.Data)
			if err != nil {
				t.Fatal(err)
			}
			cp := readCheckpoint(t, cpPath)
			if cp.Seq < r.Seq || cp.Counters.RequestsTotal < r.RequestsTotal {
				t.Fatalf("report seq %d with %d requests is ahead of the checkpoint (seq %d, %d requests)",
					r.Seq, r.RequestsTotal, cp.Seq, cp.Counters.RequestsTotal)
			}
			last = r
		}
	}
	stop()
	final := readCheckpoint(t, cpPath)
	if final.Counters.RequestsTotal != 200 || final.Counters.RequestsError != 50 {
		t.Fatalf("final checkpoint counts %d requests, %d errors; want 200 and 50", final.Counters.RequestsTotal, final.Counters.RequestsError)
	}

	stale := cpPath + ".tmp-123" // what a kill -9 while saving leaves
	if err := os.WriteFile(stale, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	col2, _ := runCollector(t, nc, logPath, cpPath)
	if _, err := os.Stat(stale); err == nil {
		t.Error("a stale temporary checkpoint was left behind")
	}
	if col2.BootID() != boot {
		t.Fatalf("restart started boot %s, want the checkpointed %s", col2.BootID(), boot)
	}
	msg, err := nextOfBoot(t, sub, boot, final.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if msg.RequestsTotal != 200 {
		t.Fatalf("resumed report counts %d requests, want 200", msg.RequestsTotal)
	}
}

func nextOfBoot(t *testing.T, sub *nats.Subscription, boot string, after uint64) (proto.Report, error) {
	t.Helper()
	for {
		msg, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			return proto.Report{}, err
		}
		r, err := proto.DecodeReport(msg.Data)
		if err != nil {
			return proto.Report{}, err
		}
		if r.Seq > after {
			if r.BootID != boot {
				t.Fatalf("report after the restart has boot %s", r.BootID)
			}
			return r, nil
		}
	}
}

func readCheckpoint(t *testing.T, path string) collector.Checkpoint {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cp collector.Checkpoint
	if err := json.Unmarshal(data, &cp); err != nil {
		t.Fatalf("checkpoint %q: %v", data, err)
	}
	return cp
}

func TestCollectorRefusesAForeignOrBrokenCheckpoint(t *testing.T) {
	_, nc := natstest.StartTest(t)
	dir := t.TempDir()
	p, _ := collector.NewLineParser(collector.LogFormat{Name: collector.FormatNginxJSON})
	for name, content := range map[string]string{
		"another instance": `{"v":1,"region":"eu","instance":"other","boot_id":"b","seq":3,"counters":{"latency_buckets":[0,0,0,0,0,0,0,0,0,0,0,0]}}`,
		"truncated":        `{"v":1,"region":"eu"`,
		"future version":   `{"v":9,"region":"eu","instance":"nginx-1","boot_id":"b","seq":3}`,
		"inconsistent":     `{"v":1,"region":"eu","instance":"nginx-1","boot_id":"b","seq":3,"counters":{"requests_total":5,"latency_buckets":[0,0,0,0,0,0,0,0,0,0,0,0]}}`,
	} {
		cp := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := os.WriteFile(cp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		src, _ := collector.NewLogSource(collector.LogConfig{Path: filepath.Join(dir, "log"), Parser: p, Recorder: new(gateway.Recorder)})
		if _, err := collector.NewCollector(collector.CollectorConfig{
			NATS: nc, Region: "eu", Instance: "nginx-1", Source: src, CheckpointPath: cp, Logger: quietLog(),
		}); err == nil {
			t.Errorf("%s checkpoint accepted", name)
		}
	}
}

func TestSyslogSourceOverUDP(t *testing.T) {
	p, _ := collector.NewLineParser(collector.LogFormat{Name: collector.FormatHAProxy})
	src, err := collector.NewSyslogSource(collector.SyslogConfig{
		Listen: "udp://127.0.0.1:0", Parser: p, Recorder: new(gateway.Recorder), Logger: quietLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	c, err := net.Dial("udp", src.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, msg := range []string{
		"<134>Dec  3 13:00:00 haproxy[7]: 127.0.0.1:40000 [03/Dec/2026:13:00:00.123] fe be/s1 0/0/0/1/12 200 212 - - ---- 1/1/0/0/0 0/0 \"GET / HTTP/1.1\"\n",
		"<134>Dec  3 13:00:00 haproxy[7]: 127.0.0.1:40001 [03/Dec/2026:13:00:00.124] fe be/s1 0/0/0/1/30 503 212 - - ---- 1/1/0/0/0 0/0 \"GET / HTTP/1.1\"",
		"<133>Dec  3 13:00:00 haproxy[7]: Proxy fe started.",
	} {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 10*time.Second, "the three datagrams to be read", func() bool {
		return src.Stats().Parsed.Load()+src.Stats().Unparseable.Load() == 3
	})
	got, _ := src.Read()
	if got.RequestsSuccess != 1 || got.RequestsError != 1 || got.DurationSumNanos != uint64(42*time.Millisecond) {
		t.Fatalf("counters %+v, want one success, one error, 42ms in all", got)
	}
	if src.Stats().Unparseable.Load() != 1 {
		t.Fatalf("unparseable = %d, want 1", src.Stats().Unparseable.Load())
	}
}

func TestConfigsRejectBadValues(t *testing.T) {
	p, _ := collector.NewLineParser(collector.LogFormat{Name: collector.FormatCaddy})
	rec := new(gateway.Recorder)
	m, _ := collector.Profile("kairos")
	for name, err := range map[string]error{
		"log without path":          collector.LogConfig{Parser: p, Recorder: rec}.Validate(),
		"log without parser":        collector.LogConfig{Path: "x", Recorder: rec}.Validate(),
		"log negative poll":         collector.LogConfig{Path: "x", Parser: p, Recorder: rec, PollInterval: -1}.Validate(),
		"log negative rotate wait":  collector.LogConfig{Path: "x", Parser: p, Recorder: rec, RotateWait: -1}.Validate(),
		"log negative max line":     collector.LogConfig{Path: "x", Parser: p, Recorder: rec, MaxLineBytes: -1}.Validate(),
		"syslog tcp":                collector.SyslogConfig{Listen: "tcp://127.0.0.1:1", Parser: p, Recorder: rec}.Validate(),
		"syslog without recorder":   collector.SyslogConfig{Listen: "udp://127.0.0.1:0", Parser: p}.Validate(),
		"scrape without URL":        collector.ScrapeConfig{Mapping: m}.Validate(),
		"scrape negative interval":  collector.ScrapeConfig{URL: "http://x", Mapping: m, Interval: -1}.Validate(),
		"scrape empty mapping":      collector.ScrapeConfig{URL: "http://x"}.Validate(),
		"collector without source":  collector.CollectorConfig{}.Validate(),
		"collector negative period": collector.CollectorConfig{Source: &collector.ScrapeSource{}, Interval: -1}.Validate(),
	} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestCollectorShutdownBeforeRun(t *testing.T) {
	_, nc := natstest.StartTest(t)
	m, _ := collector.Profile("kairos")
	src, _ := collector.NewScrapeSource(collector.ScrapeConfig{URL: "http://127.0.0.1:1/metrics", Mapping: m})
	col, err := collector.NewCollector(collector.CollectorConfig{NATS: nc, Region: "eu", Instance: "k-1", Source: src, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if err := col.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := col.Run(context.Background()); !errors.Is(err, service.ErrClosed) {
		t.Fatalf("Run after Shutdown = %v, want service.ErrClosed", err)
	}
}
