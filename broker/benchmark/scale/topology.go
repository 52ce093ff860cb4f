package scale

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/meridian-metrics/meridian/broker/aggregator"
)

// The tiers of the Sharding contract (aggregator.TierRegion and
// aggregator.TierCluster on a branch that has them): written out here so
// that the harness builds the sharded command lines whether or not this
// binary's aggregator knows them yet.
const (
	tierRegion  = "region"
	tierCluster = "cluster"
)

// group is a set of aggregators that are one HA unit: the single tier, a
// region shard or the cluster tier. One of its processes leads.
type group struct {
	Name string
	// Tier is "" for the single tier (no --tier flag: today's behaviour),
	// else tierRegion or tierCluster.
	Tier string
	// Regions are the regions whose reports the group merges: all of them
	// for the single tier, the shard's own for a region shard, none for the
	// cluster tier (it merges region snapshots).
	Regions []string
	aggs    []*proc
}

// planGroups deals the regions over cfg.Shards region shards (round robin)
// and adds the cluster tier; without shards it is the single tier.
func planGroups(cfg Config, regions []string) []*group {
	if cfg.Shards == 0 {
		return []*group{{Name: "aggregator", Regions: regions}}
	}
	gs := make([]*group, 0, cfg.Shards+1)
	for j := range cfg.Shards {
		gs = append(gs, &group{Name: "shard-" + strconv.Itoa(j+1), Tier: tierRegion})
	}
	for i, r := range regions {
		gs[i%cfg.Shards].Regions = append(gs[i%cfg.Shards].Regions, r)
	}
	return append(gs, &group{Name: "cluster-tier", Tier: tierCluster})
}

// procName names aggregator i (from 0) of g. The single tier keeps the
// names it always had.
func (g *group) procName(i int) string {
	if g.Tier == "" {
		return "aggregator-" + strconv.Itoa(i+1)
	}
	return g.Name + "-" + strconv.Itoa(i+1)
}

// aggregatorArgs is the command line of aggregator i of g, connected to
// natsURL and serving /metrics on listen.
func aggregatorArgs(cfg Config, g *group, i int, natsURL, listen string) []string {
	args := []string{"aggregator", "--nats-url", natsURL, "--listen", listen, "--id", "scale-" + g.procName(i)}
	switch g.Tier {
	case tierRegion:
		args = append(args, "--tier", tierRegion, "--regions", strings.Join(g.Regions, ","))
	case tierCluster:
		args = append(args, "--tier", tierCluster)
	}
	if cfg.InstanceSnapshots != "" {
		args = append(args, "--instance-snapshots", cfg.InstanceSnapshots)
	}
	if cfg.Instances > aggregator.DefaultMaxInstances {
		// The cap guards a deployment; here N is the point.
		args = append(args, "--max-instances", strconv.Itoa(cfg.Instances))
	}
	if cfg.NATSNodes > 1 {
		r := strconv.Itoa(cfg.NATSNodes)
		args = append(args, "--history-replicas", r, "--state-replicas", r, "--rollup-replicas", r)
	}
	return args
}

// natsNode is one NATS server of the run.
type natsNode struct {
	*proc
	url string // client URL
	mon string // monitoring host:port (/varz)
}

// natsPorts are the addresses one NATS node is told up front.
type natsPorts struct{ client, cluster, mon, admin string }

// natsArgs is the command line of node i of nodes, storing under dir.
func natsArgs(nodes []natsPorts, i int, dir string) ([]string, error) {
	n := nodes[i]
	_, monPort, err := net.SplitHostPort(n.mon)
	if err != nil {
		return nil, fmt.Errorf("monitor address: %w", err)
	}
	name := "scale-nats"
	if len(nodes) > 1 {
		name += "-" + strconv.Itoa(i+1)
	}
	args := []string{"nats", "--listen", n.client, "--data-dir", dir + "/" + name, "--name", name,
		"--monitor-port", monPort, "--metrics-listen", n.admin, "--lame-duck", "0s"}
	if len(nodes) > 1 {
		var routes []string
		for j, o := range nodes {
			if j != i {
				routes = append(routes, "nats-route://"+o.cluster)
			}
		}
		args = append(args, "--cluster-name", "scale", "--cluster-listen", n.cluster, "--routes", strings.Join(routes, ","))
	}
	return args, nil
}

// freeAddrs returns n loopback addresses with ports that were free a
// moment ago.
func freeAddrs(n int) ([]string, error) {
	out := make([]string, n)
	for i := range out {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		out[i] = a
	}
	return out, nil
}

// startNATS starts cfg.NATSNodes servers (a cluster when more than one) and
// waits until each is ready, which for a cluster node means its routes are
// up.
func (c *cluster) startNATS(ctx context.Context, cfg Config, dir string) error {
	ports := make([]natsPorts, cfg.NATSNodes)
	for i := range ports {
		a, err := freeAddrs(4)
		if err != nil {
			return err
		}
		ports[i] = natsPorts{client: a[0], cluster: a[1], mon: a[2], admin: a[3]}
	}
	for i := range ports {
		args, err := natsArgs(ports, i, dir)
		if err != nil {
			return err
		}
		name := "nats"
		if cfg.NATSNodes > 1 {
			name = "nats-" + strconv.Itoa(i+1)
		}
		p, err := startProc(name, cfg.Command(args...), ports[i].admin, cfg.Output)
		if err != nil {
			return err
		}
		c.procs = append(c.procs, p)
		c.nodes = append(c.nodes, natsNode{proc: p, url: "nats://" + ports[i].client, mon: ports[i].mon})
	}
	for _, n := range c.nodes {
		if err := n.waitReady(ctx, cfg.ReadyWait); err != nil {
			return err
		}
	}
	if len(c.nodes) == 1 {
		return nil
	}
	// A node is ready once its routes are up; JetStream elects its meta
	// leader after that. Streams and buckets asked for in between are
	// retried by the aggregators, but the run starts from a settled
	// cluster, as a deployment's steady state does.
	var missing string
	err := waitFor(ctx, cfg.ReadyWait, func() bool {
		for _, n := range c.nodes {
			leader, err := readMetaLeader(ctx, n.mon)
			if err != nil || leader == "" {
				missing = fmt.Sprintf("%s: meta leader %q, %v", n.name, leader, err)
				return false
			}
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("wait for the JetStream meta leader (%s): %w", missing, err)
	}
	return nil
}

// startAggregators starts every group's aggregators, spreading them over
// the NATS nodes, and waits until each is ready. The k-th aggregator
// started uses node k mod nodes, so with three nodes and two aggregators
// the edge (started next) gets a node of its own.
func (c *cluster) startAggregators(ctx context.Context, cfg Config) error {
	k := 0
	for _, g := range c.groups {
		for i := range cfg.Aggregators {
			addr, err := freeAddr()
			if err != nil {
				return err
			}
			args := aggregatorArgs(cfg, g, i, c.nodeFor(k).url, addr)
			k++
			p, err := startProc(g.procName(i), cfg.Command(args...), addr, cfg.Output)
			if err != nil {
				return err
			}
			c.procs = append(c.procs, p)
			g.aggs = append(g.aggs, p)
		}
	}
	for _, g := range c.groups {
		for _, p := range g.aggs {
			if err := p.waitReady(ctx, cfg.ReadyWait); err != nil {
				return err
			}
		}
	}
	c.edgeNode = k
	return nil
}

func (c *cluster) nodeFor(k int) natsNode { return c.nodes[k%len(c.nodes)] }

// startEdge starts the edge: anonymous, with /metrics on its WebSocket port
// (no admin listener) — a measurement on loopback, not a deployment — and
// with the per-address limits raised above the harness's own subscribers,
// which all come from one address. It serves /readyz on its WebSocket
// port and is ready once it has a live snapshot, which Run waits for.
func (c *cluster) startEdge(cfg Config) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	c.edgeAddr = addr
	c.edge, err = startProc("edge", cfg.Command(edgeArgs(cfg, c.nodeFor(c.edgeNode).url, addr)...), addr, cfg.Output)
	if err != nil {
		return err
	}
	c.procs = append(c.procs, c.edge)
	return nil
}

func edgeArgs(cfg Config, natsURL, listen string) []string {
	args := []string{"edge", "--nats-url", natsURL, "--listen", listen, "--anonymous", "--admin-listen", ""}
	if cfg.Subscribers > 0 {
		many := strconv.Itoa(cfg.Subscribers + 64)
		args = append(args, "--max-conns-per-addr", many, "--max-handshakes-per-addr", many,
			"--upgrades-per-second", many, "--upgrade-burst", many,
			"--lookups-per-second", many, "--lookup-burst", many)
	}
	return args
}
