//go:build linux

package edge

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	rtmetrics "runtime/metrics"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/sys/unix"

	"github.com/meridian-metrics/meridian/broker/certfile"
	"github.com/meridian-metrics/meridian/integration/wait"
)

// The subscriber load benchmark runs its WebSocket clients in a child
// process (this test binary, re-executed as TestHelperSubscribers), so
// that the edge's memory and CPU are measured without the clients'.

const (
	helperURL = "EDGE_HELPER_URL"
	helperN   = "EDGE_HELPER_N"
	helperCA  = "EDGE_HELPER_CA" // PEM certificate to trust for wss
)

// benchLimits lifts admission limits for load from one address.
func benchLimits(c Config) Config {
	c.MaxConnsPerAddr, c.MaxHandshakesPerAddr = 1<<30, 1<<30
	c.UpgradesPerSecond, c.UpgradeBurst = 1e9, 1<<30
	return c
}

// TestHelperSubscribers is the client process of BenchmarkSubscribers: it
// opens N WebSocket connections with the default subscription, reads
// everything they receive, prints "ready" once all are open, and exits
// when its stdin closes.
func TestHelperSubscribers(t *testing.T) {
	url := os.Getenv(helperURL)
	if url == "" {
		t.Skip("client process for BenchmarkSubscribers")
	}
	n, _ := strconv.Atoi(os.Getenv(helperN))
	var frames atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	conns := make(chan io.Closer, n)
	var d ws.Dialer
	if ca := os.Getenv(helperCA); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		d.TLSConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	for range n {
		sem <- struct{}{}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		conn, br, _, err := d.Dial(ctx, url)
		cancel()
		<-sem
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		conns <- conn
		r := io.Reader(conn)
		if br != nil {
			r = io.MultiReader(br, conn)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				h, err := ws.ReadHeader(r)
				if err != nil {
					return
				}
				if _, err := io.CopyN(io.Discard, r, h.Length); err != nil {
					return
				}
				frames.Add(1)
			}
		}()
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	close(conns)
	for c := range conns {
		c.Close()
	}
	wg.Wait()
	fmt.Println("frames", frames.Load())
}

// BenchmarkSubscribers connects EDGE_BENCH_SUBSCRIBERS (default 2000)
// subscribers at the default 1 s interval from a child process while
// snapshots arrive every second, and reports the edge's memory per
// subscriber, CPU per delivery, deliveries per CPU-second and the
// tick-to-wire p99 (tick_lag_seconds). Run with -benchtime=1x. The tls
// sub-benchmark serves the same load over wss (the relay path of tls.go):
// compare its figures with plain's from the same run.
func BenchmarkSubscribers(b *testing.B) {
	b.Run("plain", func(b *testing.B) { benchSubscribers(b, false) })
	b.Run("tls", func(b *testing.B) { benchSubscribers(b, true) })
}

func benchSubscribers(b *testing.B, secure bool) {
	n := 2000
	if v, err := strconv.Atoi(os.Getenv("EDGE_BENCH_SUBSCRIBERS")); err == nil && v > 0 {
		n = v
	}
	cfg := benchLimits(Config{HeartbeatInterval: DefaultHeartbeatInterval, PingInterval: DefaultPingInterval})
	var caFile string
	if secure {
		dir := b.TempDir()
		caFile = filepath.Join(dir, "edge.crt")
		if _, err := certfile.WriteSelfSigned(caFile, filepath.Join(dir, "edge.key"), "127.0.0.1"); err != nil {
			b.Fatal(err)
		}
		r, err := certfile.New(caFile, filepath.Join(dir, "edge.key"), nil)
		if err != nil {
			b.Fatal(err)
		}
		cfg.TLS = r.ServerConfig()
	}
	te := startEdge(b, cfg)
	if secure {
		te.url = "wss://" + te.Addr().String() + wsPath
	}
	stop := make(chan struct{})
	var pubWG sync.WaitGroup
	pubWG.Add(1)
	go func() { // the aggregator: one cluster snapshot per second
		defer pubWG.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for i := uint64(1); ; i++ {
			te.publish(snap(time.Now(), i))
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	defer func() {
		close(stop)
		pubWG.Wait()
	}()
	wait.For(b, 10*time.Second, "first snapshot", func() bool { return te.scopes.cluster.latest.Load() != nil })

	before := memInUse()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperSubscribers$", "-test.v")
	cmd.Env = append(os.Environ(), helperURL+"="+te.url, helperN+"="+strconv.Itoa(n), helperCA+"="+caFile)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Wait()
	}()
	lines := bufio.NewScanner(stdout)
	for lines.Scan() && lines.Text() != "ready" {
	}
	wait.For(b, 10*time.Second, "all subscribers registered", func() bool { return te.Edge.reg.len() == n })
	time.Sleep(2 * time.Second) // let every connection reach its steady state (first tick passed)
	after := memInUse()

	// Steady state: 5 s of deliveries.
	sent0, lag0 := testutil.ToFloat64(te.m.msgsSent), histogramOf(te.m.tickLag)
	if path := os.Getenv("EDGE_BENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		_ = pprof.StartCPUProfile(f)
	}
	cpu0, wall0 := cpuTime(), time.Now()
	time.Sleep(5 * time.Second)
	cpu, wall := cpuTime()-cpu0, time.Since(wall0)
	pprof.StopCPUProfile()
	sent, lag := testutil.ToFloat64(te.m.msgsSent)-sent0, histogramOf(te.m.tickLag)
	for b.Loop() {
	}
	if os.Getenv("EDGE_BENCH_MEMDETAIL") != "" {
		b.Logf("before %+v\nafter  %+v", before.ms, after.ms)
	}
	b.ReportMetric(float64(after.heap-before.heap)/float64(n), "heap-B/sub")
	b.ReportMetric(float64(after.total-before.total)/float64(n), "inuse-B/sub")
	b.ReportMetric(sent/wall.Seconds(), "deliveries/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/sent, "cpu-ns/delivery")
	b.ReportMetric(sent/cpu.Seconds(), "deliveries/cpu-s")
	b.ReportMetric(quantile(lag0, lag, 0.99)*1000, "tick-lag-p99-ms")
	b.ReportMetric(quantile(lag0, lag, 0.50)*1000, "tick-lag-p50-ms")
}

type memSample struct {
	heap, total uint64
	ms          string
}

// memInUse is the live heap and everything the runtime holds for the
// program (heap, stacks, runtime metadata incl. netpoll descriptors) after
// a full collection.
func memInUse() memSample {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	samples := []rtmetrics.Sample{{Name: "/memory/classes/other:bytes"}, {Name: "/memory/classes/metadata/other:bytes"}}
	rtmetrics.Read(samples)
	return memSample{
		ms: fmt.Sprintf("heap %d stack %d mspan %d mcache %d other %d (other %d, metadata/other %d) buckhash %d gcsys %d objects %d",
			m.HeapAlloc, m.StackInuse, m.MSpanInuse, m.MCacheInuse, m.OtherSys,
			samples[0].Value.Uint64(), samples[1].Value.Uint64(), m.BuckHashSys, m.GCSys, m.HeapObjects),
		heap:  m.HeapAlloc,
		total: m.HeapAlloc + m.StackInuse + m.MSpanInuse + m.MCacheInuse + m.OtherSys + m.BuckHashSys,
	}
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func histogramOf(h prometheus.Histogram) *dto.Histogram {
	var m dto.Metric
	_ = h.Write(&m)
	return m.GetHistogram()
}

// quantile estimates quantile q of the observations between two snapshots
// of a histogram, interpolating linearly within the bucket.
func quantile(from, to *dto.Histogram, q float64) float64 {
	total := float64(to.GetSampleCount() - from.GetSampleCount())
	if total == 0 {
		return 0
	}
	rank, lower, prevCum := q*total, 0.0, 0.0
	for i, bk := range to.GetBucket() {
		cum := float64(bk.GetCumulativeCount() - from.GetBucket()[i].GetCumulativeCount())
		if cum >= rank {
			inBucket := cum - prevCum
			if inBucket == 0 {
				return bk.GetUpperBound()
			}
			return lower + (bk.GetUpperBound()-lower)*(rank-prevCum)/inBucket
		}
		lower, prevCum = bk.GetUpperBound(), cum
	}
	return lower
}
