package natsauth

import (
	"fmt"

	"github.com/meridian-metrics/meridian/broker/aggregator"
	"github.com/meridian-metrics/meridian/proto"
)

// Role is what an identity does in a Meridian cluster.
type Role string

// The roles. A gateway (or a collector, which publishes the same reports)
// may publish only its own report subject; an edge may only read snapshots
// and history; an aggregator reads reports and publishes snapshots and
// rollups and keeps its streams and buckets; only the operator may
// administer JetStream at large (delete or purge streams, anything else).
const (
	RoleGateway    Role = "gateway"
	RoleEdge       Role = "edge"
	RoleAggregator Role = "aggregator"
	RoleOperator   Role = "operator"
)

// InboxPrefix is the reply-subject prefix a role's connection must use
// (nats.CustomInboxPrefix): each role may subscribe to its own inboxes only,
// so that no role reads the replies of another.
func InboxPrefix(r Role) string {
	switch r {
	case RoleEdge, RoleAggregator:
		return "_INBOX_" + string(r)
	}
	return "" // the default, _INBOX: gateways subscribe to nothing; the operator to everything
}

// Permissions are NATS publish and subscribe permissions. An empty allow
// list with a deny of ">" allows nothing.
type Permissions struct {
	PublishAllow   []string
	PublishDeny    []string
	SubscribeAllow []string
	SubscribeDeny  []string
}

// GatewayPermissions lets a gateway instance publish its own reports and
// nothing else. An empty instance gives a region credential, for replicas
// whose instance names are not known in advance (a scaled container
// service): it may publish the reports of any instance of that region only.
func GatewayPermissions(region, instance string) (Permissions, error) {
	if err := proto.ValidateToken("region", region); err != nil {
		return Permissions{}, fmt.Errorf("gateway permissions: %w", err)
	}
	subject := proto.ReportSubjectPrefix + "." + region + ".*"
	if instance != "" {
		if err := proto.ValidateToken("instance", instance); err != nil {
			return Permissions{}, fmt.Errorf("gateway permissions: %w", err)
		}
		subject = proto.ReportSubject(region, instance)
	}
	return Permissions{PublishAllow: []string{subject}, SubscribeDeny: []string{">"}}, nil
}

// jsAPI is the JetStream API subject prefix.
const jsAPI = "$JS.API."

// readStream is what reading a stream takes: its info, single messages
// (direct and API), and ordered consumers (create, fetch, delete). No
// create, update, purge or delete of the stream.
func readStream(stream string) []string {
	return []string{
		jsAPI + "STREAM.INFO." + stream,
		jsAPI + "STREAM.MSG.GET." + stream,
		jsAPI + "DIRECT.GET." + stream,
		jsAPI + "DIRECT.GET." + stream + ".>",
		jsAPI + "CONSUMER.CREATE." + stream,
		jsAPI + "CONSUMER.CREATE." + stream + ".>",
		jsAPI + "CONSUMER.INFO." + stream + ".*",
		jsAPI + "CONSUMER.DELETE." + stream + ".*",
		jsAPI + "CONSUMER.MSG.NEXT." + stream + ".*",
	}
}

// keepStream adds creating and updating the stream to reading it.
func keepStream(stream string) []string {
	return append(readStream(stream), jsAPI+"STREAM.CREATE."+stream, jsAPI+"STREAM.UPDATE."+stream)
}

// EdgePermissions lets an edge read live snapshots and the history and
// rollup streams, and announce which instance scopes its clients follow;
// it publishes nothing else.
func EdgePermissions() Permissions {
	pub := []string{proto.InterestSubject, jsAPI + "INFO"}
	pub = append(pub, readStream(proto.HistoryStream)...)
	pub = append(pub, readStream(proto.RollupStream)...)
	return Permissions{
		PublishAllow:   pub,
		SubscribeAllow: []string{proto.SnapshotSubjectAll, InboxPrefix(RoleEdge) + ".>"},
	}
}

// AggregatorPermissions lets an aggregator read reports, publish snapshots
// (live, and refilled into the history after a JetStream outage) and rollups, keep the history and rollup streams, and hold the leader
// lease and merge-state buckets. It may not publish reports, nor delete or
// purge any stream.
func AggregatorPermissions() Permissions {
	pub := []string{proto.SnapshotSubjectAll, proto.RefillSubjectAll, proto.RollupSubjectAll, jsAPI + "INFO"}
	for _, s := range []string{proto.HistoryStream, proto.RollupStream} {
		pub = append(pub, keepStream(s)...)
	}
	for _, b := range []string{aggregator.LeaseBucket, aggregator.StateBucket} {
		pub = append(pub, keepStream("KV_"+b)...)
		pub = append(pub, "$KV."+b+".>")
	}
	return Permissions{
		PublishAllow: pub,
		SubscribeAllow: []string{
			proto.ReportSubjectAll, proto.SnapshotSubjectAll, proto.RollupSubjectAll, proto.InterestSubject,
			InboxPrefix(RoleAggregator) + ".>",
		},
	}
}

// OperatorPermissions allow everything: the operator administers streams
// (purge, delete, restore) and inspects any subject.
func OperatorPermissions() Permissions {
	return Permissions{PublishAllow: []string{">"}, SubscribeAllow: []string{">"}}
}
