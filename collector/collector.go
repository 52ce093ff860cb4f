package collector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meridian-metrics/meridian/broker/service"
	"github.com/meridian-metrics/meridian/proto"
)

// Source counts one gateway instance's requests for a Collector: a LogSource,
// a SyslogSource or a ScrapeSource.
type Source interface {
	// Run counts until ctx ends, then returns nil.
	Run(ctx context.Context) error
	// Read returns the cumulative counters and, read together with them,
	// the source's state to checkpoint.
	Read() (proto.Counters, json.RawMessage)
	// Restore, called before Run, resumes from a checkpoint.
	Restore(counters proto.Counters, state json.RawMessage) error
}

// ActiveFunc reads the gateway's current in-flight connections from where it
// exposes them (nginx stub_status, a metrics endpoint).
type ActiveFunc func(ctx context.Context) (int64, error)

// CollectorConfig configures a Collector. Zero fields take the documented
// defaults.
type CollectorConfig struct {
	// NATS, Region, Instance, Interval, Now and Logger are the Publisher's.
	NATS     *nats.Conn
	Region   string
	Instance string
	Interval time.Duration
	Now      func() time.Time
	Logger   *slog.Logger
	// Source counts the requests. Required.
	Source Source
	// Active, if set, is polled every Interval for active_connections,
	// replacing whatever the Source reports.
	Active ActiveFunc
	// CheckpointPath is where the checkpoint lives. Empty: none, and every
	// start is a new boot (a log source then starts at the end of the log).
	CheckpointPath string
	// Registerer, if set, receives the collector's metrics, named
	// <Namespace>_collector_*. Default DefaultNamespace.
	Registerer prometheus.Registerer
	Namespace  string
	// OnPublish is the Publisher's.
	OnPublish func(err error)
}

// Collector publishes a Source's counters exactly as the gateway publishes
// its own: same report, subject, boot id, sequence and final report. With a
// checkpoint it survives its own restarts (kill -9 included) without losing
// or double counting a request: the checkpoint is made durable before every
// report, and a restart resumes its boot, sequence, counters and position.
//
// Concurrency: Run once (service.ErrRunning, service.ErrClosed otherwise);
// Shutdown may be called from any goroutine, any number of times.
type Collector struct {
	cfg    CollectorConfig
	log    *slog.Logger
	pcfg   Config // for the Publisher of a new boot
	pubMu  sync.Mutex
	pub    *Publisher
	active atomic.Int64
	hasAct atomic.Bool

	cpMu    sync.Mutex
	pending json.RawMessage // the source state read with the report being built

	life service.Lifecycle
}

// DefaultNamespace prefixes the collector's metric names.
const DefaultNamespace = "meridian"

// Validate reports the first value in c that no default repairs; the
// Publisher's own fields are checked by New.
func (c CollectorConfig) Validate() error {
	switch {
	case c.Source == nil:
		return errors.New("source is required")
	case c.Interval < 0:
		return errors.New("interval must not be negative")
	}
	return nil
}

// withDefaults fills zero fields; call it after Validate.
func (c CollectorConfig) withDefaults() CollectorConfig {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Namespace == "" {
		c.Namespace = DefaultNamespace
	}
	return c
}

// NewCollector loads the checkpoint (if any), restores the source from it
// and builds the publisher that resumes its boot.
func NewCollector(cfg CollectorConfig) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new collector: %w", err)
	}
	cfg = cfg.withDefaults()
	c := &Collector{cfg: cfg, log: cfg.Logger.With("component", "collect")}
	pcfg := Config{
		NATS: cfg.NATS, Region: cfg.Region, Instance: cfg.Instance, Interval: cfg.Interval,
		Now: cfg.Now, Logger: cfg.Logger, Source: c.read, OnPublish: cfg.OnPublish,
	}
	if cfg.CheckpointPath != "" {
		cp, err := loadCheckpoint(cfg.CheckpointPath)
		if err != nil {
			return nil, fmt.Errorf("new collector: %w", err)
		}
		if cp != nil {
			if cp.Region != cfg.Region || cp.Instance != cfg.Instance {
				return nil, fmt.Errorf("new collector: checkpoint %s belongs to %s/%s, not %s/%s",
					cfg.CheckpointPath, cp.Region, cp.Instance, cfg.Region, cfg.Instance)
			}
			if err := cfg.Source.Restore(cp.Counters, cp.Source); err != nil {
				return nil, fmt.Errorf("new collector: %w", err)
			}
			pcfg.BootID, pcfg.ResumeSeq, pcfg.StartTime = cp.BootID, cp.Seq, cp.StartTime
			c.log.Info("resuming from checkpoint", "boot_id", cp.BootID, "seq", cp.Seq,
				"requests_total", cp.Counters.RequestsTotal)
		}
		pcfg.BeforePublish = c.checkpoint
	}
	pub, err := New(pcfg)
	if err != nil {
		return nil, fmt.Errorf("new collector: %w", err)
	}
	c.pub = pub
	c.pcfg = pcfg
	c.pcfg.BootID, c.pcfg.ResumeSeq, c.pcfg.StartTime = "", 0, time.Time{}
	if cfg.Registerer != nil {
		if err := c.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("new collector: register metrics: %w", err)
		}
	}
	return c, nil
}

// BootID is the boot the collector publishes under now.
func (c *Collector) BootID() string { return c.publisher().BootID() }

func (c *Collector) publisher() *Publisher {
	c.pubMu.Lock()
	defer c.pubMu.Unlock()
	return c.pub
}

// BootResetter is implemented by sources whose counters can restart from
// zero under the collector (a scraped gateway restarting). Resets signals
// one; the collector then publishes the final report of the current boot,
// calls NewBoot, and publishes the source's new counters under a new boot
// id, exactly as a restarted gateway of Meridian's own does.
type BootResetter interface {
	Resets() <-chan struct{}
	// NewBoot switches the source to the counters of its new boot.
	NewBoot()
}

// read is the Publisher's Source: the source's counters with the polled
// gauge, keeping the source state for checkpoint.
func (c *Collector) read() proto.Counters {
	counters, state := c.cfg.Source.Read()
	if c.hasAct.Load() {
		counters.ActiveConnections = c.active.Load()
	}
	c.cpMu.Lock()
	c.pending = state
	c.cpMu.Unlock()
	return counters
}

// checkpoint is the Publisher's BeforePublish: the report about to be sent
// and the source state read with its counters become durable first.
func (c *Collector) checkpoint(r *proto.Report) error {
	c.cpMu.Lock()
	state := c.pending
	c.cpMu.Unlock()
	return saveCheckpoint(c.cfg.CheckpointPath, &Checkpoint{
		Region: r.Region, Instance: r.Instance, BootID: r.BootID, Seq: r.Seq,
		StartTime: r.StartTime, Counters: r.Counters, Source: state,
	})
}

// Run counts and publishes until ctx ends or Shutdown is called, then
// publishes the final report and returns.
func (c *Collector) Run(ctx context.Context) error {
	ctx, err := c.life.Start(ctx)
	if err != nil {
		return err
	}
	defer c.life.Exit()

	var wg sync.WaitGroup
	srcCtx, stopSource := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSource()
	wg.Go(func() {
		if err := c.cfg.Source.Run(srcCtx); err != nil {
			c.log.Error("source stopped", "err", err)
		}
	})
	if c.cfg.Active != nil {
		wg.Go(func() { c.pollActive(srcCtx) })
	}
	var resets <-chan struct{}
	br, _ := c.cfg.Source.(BootResetter)
	if br != nil {
		resets = br.Resets()
	}
	for {
		pub := c.publisher()
		pubCtx, stopPub := context.WithCancel(context.WithoutCancel(ctx))
		pubDone := make(chan struct{})
		go func() {
			defer close(pubDone)
			_ = pub.Run(pubCtx)
		}()
		c.log.Info("collector running", "boot_id", pub.BootID(), "subject", pub.Subject())
		reset := false
		select {
		case <-ctx.Done():
		case <-resets:
			reset = true
		}
		if !reset {
			// The source stops first, so the final report carries
			// everything it counted and nothing changes after it.
			stopSource()
			wg.Wait()
		}
		stopPub()
		<-pubDone
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DefaultFlushTimeout)
		err := pub.Flush(fctx)
		cancel()
		if !reset {
			if err != nil {
				return fmt.Errorf("publish final report: %w", err)
			}
			break
		}
		if err != nil {
			c.log.Warn("publishing the final report of the boot before the gateway's restart", "err", err)
		}
		br.NewBoot()
		next, err := New(c.pcfg)
		if err != nil { // the same configuration as the first: cannot fail
			stopSource()
			wg.Wait()
			return fmt.Errorf("start a new boot: %w", err)
		}
		c.pubMu.Lock()
		c.pub = next
		c.pubMu.Unlock()
		c.log.Info("the gateway's counters restarted: publishing them under a new boot", "boot_id", next.BootID())
	}
	counters, _ := c.cfg.Source.Read()
	c.log.Info("collector stopped", "requests_total", counters.RequestsTotal, "requests_error", counters.RequestsError)
	return nil
}

// Shutdown stops Run (final report included) and waits for it, or for ctx.
// Called before Run, it only closes the collector: Run then returns
// service.ErrClosed.
func (c *Collector) Shutdown(ctx context.Context) error {
	if !c.life.Stop() {
		return nil
	}
	if err := c.life.Wait(ctx); err != nil {
		return fmt.Errorf("shut down collector: %w", err)
	}
	return nil
}

func (c *Collector) pollActive(ctx context.Context) {
	ticker := time.NewTicker(c.publisher().Interval())
	defer ticker.Stop()
	failing := false
	for {
		actx, cancel := context.WithTimeout(ctx, c.publisher().Interval())
		v, err := c.cfg.Active(actx)
		cancel()
		switch {
		case err == nil:
			c.active.Store(max(v, 0))
			c.hasAct.Store(true)
			if failing {
				c.log.Info("reading active connections recovered")
				failing = false
			}
		case ctx.Err() == nil && !failing:
			c.log.Warn("reading active connections", "err", err)
			failing = true
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// statsSource is implemented by sources that count lines.
type statsSource interface{ Stats() *LineStats }

func (c *Collector) register(reg prometheus.Registerer) error {
	s, ok := c.cfg.Source.(statsSource)
	if !ok {
		return nil
	}
	st := s.Stats()
	ns := c.cfg.Namespace
	for _, m := range []struct {
		name, help string
		v          *atomic.Uint64
		labels     prometheus.Labels
	}{
		{"lines_total", "Access-log lines read, by result: parsed (counted as a request) or unparseable (skipped).", &st.Parsed, prometheus.Labels{"result": "parsed"}},
		{"lines_total", "Access-log lines read, by result: parsed (counted as a request) or unparseable (skipped).", &st.Unparseable, prometheus.Labels{"result": "unparseable"}},
		{"log_rotations_total", "Access-log rotations (rename or copytruncate) followed.", &st.Rotations, nil},
		{"log_files_lost_total", "Checkpointed access logs gone at restart (rotated and removed): their unread lines were not counted.", &st.Lost, nil},
	} {
		v := m.v
		if err := reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "collector", Name: m.name, Help: m.help, ConstLabels: m.labels,
		}, func() float64 { return float64(v.Load()) })); err != nil {
			return err
		}
	}
	return nil
}
