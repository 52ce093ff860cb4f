package scale

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"time"

	"github.com/meridian-metrics/meridian/broker/service"
)

// Defaults of Config.
const (
	DefaultInstances   = 1000
	DefaultRegions     = 4
	DefaultWarmup      = 5 * time.Second
	DefaultDuration    = 10 * time.Second
	DefaultAggregators = 2
	DefaultPublishers  = 2
	DefaultSettle      = 15 * time.Second
	DefaultReadyWait   = 60 * time.Second
	DefaultNATSNodes   = 1
	// DefaultFollowedInstances is how many instances the subscribers
	// follow besides the cluster and the regions (when there are
	// subscribers).
	DefaultFollowedInstances = 4
	// DefaultPhase is when in each second a subscriber's first snapshot
	// is asked for, which fixes its phase (see Config.Phase).
	DefaultPhase = 400 * time.Millisecond
	// DefaultHistogramBuckets is how many occupied buckets each simulated
	// report's latency histogram has: a gateway serving a few hundred
	// requests a second of a few ms fills a few dozen schema-6 buckets, and
	// their decoding and merging is most of an aggregator's per-report cost.
	DefaultHistogramBuckets = 48
)

// ErrInvalidConfig wraps every Config.Validate error.
var ErrInvalidConfig = errors.New("invalid scale benchmark config")

// Config configures Run. Zero fields take the Default* constants.
type Config struct {
	// Command builds the command line of one Meridian role: Command("nats",
	// "--listen", …) runs `meridian nats --listen …`. Required.
	Command func(args ...string) *exec.Cmd
	// Dir holds the NATS store. Default: a fresh temporary directory,
	// removed at the end.
	Dir string
	// Instances is how many gateway instances are simulated.
	Instances int
	// Regions is how many regions they are spread over (round robin).
	Regions int
	// Warmup is how long the load runs before the measurement window, so
	// that the merge state and the stores have grown to N.
	Warmup time.Duration
	// Duration is the measurement window (at least 3s).
	Duration time.Duration
	// Aggregators is how many aggregator processes run (1 or 2) per
	// group: the single tier, or each region shard and the cluster tier.
	// With two, the leader is killed after the window and the failover
	// measured (in sharded mode one region shard's, then the cluster
	// tier's).
	Aggregators int
	// NATSNodes is 1 (one server) or 3 (a cluster with routes on loopback,
	// the streams and buckets at three replicas, the roles and the
	// simulator's connections spread over the nodes).
	NATSNodes int
	// Shards, when above 0, runs the sharded design of the Sharding
	// contract: that many region-tier groups (`--tier region --regions`,
	// the regions dealt round robin) and a cluster-tier group (`--tier
	// cluster`), each of Aggregators processes. 0 runs the single tier.
	Shards int
	// Subscribers is how many WebSocket clients of the edge follow
	// snapshots every second: subscriber i follows the i-th (mod their
	// number) of the cluster, the regions and FollowedInstances instances.
	Subscribers int
	// FollowedInstances is how many instances the subscribers follow
	// (only with Subscribers > 0; -1 means none).
	FollowedInstances int
	// Phase is the moment in the second at which subscribers connect,
	// which the edge keeps as their phase: each then receives the
	// scope's newest snapshot at that offset after every second, so its
	// delay is Phase when the snapshot was at the edge in time and about
	// a second more when not. It must leave the snapshot time to arrive.
	Phase time.Duration
	// InstanceSnapshots is passed to the aggregators' --instance-snapshots:
	// "on-demand" (their default) or "all" (every instance every second,
	// the design before on-demand). Empty means their default.
	InstanceSnapshots string
	// HistogramBuckets is how many occupied buckets each simulated report's
	// latency histogram has (-1: the reports carry none).
	HistogramBuckets int
	// Publishers is how many goroutines of the harness publish the reports
	// (at least one per NATS node: publisher w uses node w mod NATSNodes).
	Publishers int
	// Settle bounds the wait for the totals to become exact after the load
	// stops and the wait for the first snapshot after a failover.
	Settle time.Duration
	// ReadyWait bounds each child's start.
	ReadyWait time.Duration
	// Output, when set, receives the children's logs.
	Output io.Writer
	// Logger receives the harness's progress. Default: discard.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	service.Default(&c.Instances, DefaultInstances)
	service.Default(&c.Regions, DefaultRegions)
	service.Default(&c.Aggregators, DefaultAggregators)
	service.Default(&c.NATSNodes, DefaultNATSNodes)
	service.Default(&c.Publishers, DefaultPublishers)
	// At least one publisher per NATS node, so that each node carries a
	// share of the reports.
	if c.Publishers > 0 {
		c.Publishers = max(c.Publishers, c.NATSNodes)
	}
	service.Default(&c.FollowedInstances, DefaultFollowedInstances)
	service.Default(&c.Phase, DefaultPhase)
	service.Default(&c.HistogramBuckets, DefaultHistogramBuckets)
	service.Default(&c.Warmup, DefaultWarmup)
	service.Default(&c.Duration, DefaultDuration)
	service.Default(&c.Settle, DefaultSettle)
	service.Default(&c.ReadyWait, DefaultReadyWait)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate checks a Config after defaults.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case c.Command == nil:
		return bad("Command is required")
	case c.Instances < 1 || c.Instances > 1_000_000:
		return bad("instances %d: want 1 to 1000000", c.Instances)
	case c.Regions < 1 || c.Regions > c.Instances:
		return bad("regions %d: want 1 to the number of instances (%d)", c.Regions, c.Instances)
	case c.Aggregators < 1 || c.Aggregators > 2:
		return bad("aggregators %d: want 1 or 2", c.Aggregators)
	case c.Publishers < 1 || c.Publishers > 64:
		return bad("publishers %d: want 1 to 64", c.Publishers)
	case c.Duration < 3*time.Second:
		return bad("duration %s: want at least 3s", c.Duration)
	case c.InstanceSnapshots != "" && c.InstanceSnapshots != "on-demand" && c.InstanceSnapshots != "all":
		return bad("instance snapshots %q: want on-demand or all", c.InstanceSnapshots)
	case c.NATSNodes != 1 && c.NATSNodes != 3:
		return bad("NATS nodes %d: want 1 or 3", c.NATSNodes)
	case c.Shards < 0 || c.Shards > c.Regions:
		return bad("shards %d: want 0 (single tier) to the number of regions (%d)", c.Shards, c.Regions)
	case c.Subscribers < 0 || c.Subscribers > 100_000:
		return bad("subscribers %d: want 0 to 100000", c.Subscribers)
	case c.FollowedInstances < -1 || c.FollowedInstances > c.Instances:
		return bad("followed instances %d: want -1 (none) to the number of instances (%d)", c.FollowedInstances, c.Instances)
	case c.Phase < 100*time.Millisecond || c.Phase > 900*time.Millisecond:
		return bad("phase %s: want 100ms to 900ms", c.Phase)
	case c.HistogramBuckets < -1 || c.HistogramBuckets > MaxHistogramBuckets:
		return bad("histogram buckets %d: want -1 (none) to %d", c.HistogramBuckets, MaxHistogramBuckets)
	case c.Warmup < 0 || c.Settle < 0 || c.ReadyWait < 0:
		return bad("warmup, settle and ready wait must not be negative")
	}
	return nil
}
