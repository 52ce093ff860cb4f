package natsauth_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/meridian-metrics/meridian/broker/aggregator"
	"github.com/meridian-metrics/meridian/broker/history"
	"github.com/meridian-metrics/meridian/broker/natsauth"
	"github.com/meridian-metrics/meridian/broker/natsnode"
	"github.com/meridian-metrics/meridian/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// secureNode generates secrets (gateway us/gw-1 per instance, region eu) and
// starts a node enforcing them with TLS.
func secureNode(t *testing.T, verifyClients bool) (*natsnode.Node, string) {
	t.Helper()
	dir := t.TempDir()
	if _, err := natsauth.Generate(natsauth.Spec{
		Dir: dir, ClientCerts: true,
		Gateways: []natsauth.Gateway{{Region: "us", Instance: "gw-1"}, {Region: "eu"}},
	}); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, natsnode.Config{
		Port: -1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		AuthConfig: filepath.Join(dir, natsauth.AuthConfigFile),
		TLSCert:    filepath.Join(dir, natsauth.ServerCertFile), TLSKey: filepath.Join(dir, natsauth.ServerKeyFile),
		TLSCA: filepath.Join(dir, natsauth.CAFile), VerifyClients: verifyClients,
	})
	return n, dir
}

// startNode starts a node storing under t.TempDir() and stops it when the
// test ends.
func startNode(t *testing.T, cfg natsnode.Config) *natsnode.Node {
	t.Helper()
	cfg.StoreDir = t.TempDir()
	n, err := natsnode.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.Shutdown(ctx)
	})
	return n
}

// client is a connection and the asynchronous errors the server sent it.
type client struct {
	*nats.Conn
	errs chan error
}

// dial connects as identity id ("" for anonymous) over TLS.
func dial(t *testing.T, n *natsnode.Node, dir, id string, extra ...nats.Option) (*client, error) {
	t.Helper()
	c := &client{errs: make(chan error, 16)}
	opts := []nats.Option{
		nats.RootCAs(filepath.Join(dir, natsauth.CAFile)),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case c.errs <- err:
			default:
			}
		}),
	}
	if id != "" {
		o, err := nats.NkeyOptionFromSeed(filepath.Join(dir, id+".nk"))
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, o)
		if p := natsauth.InboxPrefix(natsauth.Role(strings.SplitN(id, ".", 2)[0])); p != "" {
			opts = append(opts, nats.CustomInboxPrefix(p))
		}
	}
	nc, err := nats.Connect(n.ClientURL(), append(opts, extra...)...)
	if err != nil {
		return nil, err
	}
	t.Cleanup(nc.Close)
	c.Conn = nc
	return c, nil
}

func mustDial(t *testing.T, n *natsnode.Node, dir, id string, extra ...nats.Option) *client {
	t.Helper()
	c, err := dial(t, n, dir, id, extra...)
	if err != nil {
		t.Fatalf("connect as %s: %v", id, err)
	}
	return c
}

// wantViolation waits for the server's permissions violation on subject.
func (c *client) wantViolation(t *testing.T, subject string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case err := <-c.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), subject) {
				return
			}
		case <-deadline:
			t.Fatalf("no permissions violation for %q", subject)
		}
	}
}

func testReport(region, instance string, seq, total uint64) []byte {
	r := proto.Report{
		Version: proto.ReportVersion, Instance: instance, Region: region, BootID: "boot-1", Seq: seq,
		Time: time.Now(), StartTime: time.Now().Add(-time.Minute), Interval: time.Second,
		Counters: proto.Counters{RequestsTotal: total, RequestsSuccess: total, LatencyBuckets: make([]uint64, proto.NumLatencyBuckets)},
	}
	data, err := r.Encode()
	if err != nil {
		panic(err)
	}
	return data
}

func TestAnonymousAndPlainClientsAreRefused(t *testing.T) {
	n, dir := secureNode(t, false)
	if _, err := dial(t, n, dir, ""); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("anonymous client: %v, want an authorization violation", err)
	}
	// A forged identity: a valid NKey the server does not list.
	forged := filepath.Join(t.TempDir(), "forged.nk")
	if err := os.WriteFile(forged, []byte("SUAGIEYODKBBTUMOB666Z5KA4FCWAZV7HWSGRHOD7MK6UM5IYLWLACH7DQ\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, err := nats.NkeyOptionFromSeed(forged)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nats.Connect(n.ClientURL(), o, nats.RootCAs(filepath.Join(dir, natsauth.CAFile))); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("unlisted nkey: %v, want an authorization violation", err)
	}
	// Without TLS the server does not talk at all.
	if nc, err := nats.Connect(n.ClientURL(), nats.Timeout(5*time.Second)); err == nil {
		nc.Close()
		t.Fatal("a plain-text client connected to a TLS server")
	}
	// Control: the real identity gets in.
	mustDial(t, n, dir, "edge")
}

func TestMutualTLSRefusesClientsWithoutCertificate(t *testing.T) {
	n, dir := secureNode(t, true)
	if _, err := dial(t, n, dir, "edge"); err == nil {
		t.Fatal("a client without certificate connected to a server requiring mutual TLS")
	}
	mustDial(t, n, dir, "edge", nats.ClientCert(filepath.Join(dir, "edge.pem"), filepath.Join(dir, "edge-key.pem")))
}

// TestForgedReportsAndSnapshotsAreRefused publishes from the attacker's side:
// a gateway's credentials for another instance or region, for snapshots;
// an edge's for snapshots. The aggregator's subscription sees only what was
// allowed, which proves the refusals are NATS', not a lost message.
func TestForgedReportsAndSnapshotsAreRefused(t *testing.T) {
	n, dir := secureNode(t, false)
	agg := mustDial(t, n, dir, "aggregator")
	reports, err := agg.SubscribeSync(proto.ReportSubjectAll)
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := agg.SubscribeSync(proto.SnapshotSubjectAll)
	if err != nil {
		t.Fatal(err)
	}
	if err := agg.Flush(); err != nil {
		t.Fatal(err)
	}
	gw := mustDial(t, n, dir, "gateway.us.gw-1")
	region := mustDial(t, n, dir, "gateway.eu")
	edge := mustDial(t, n, dir, "edge")
	forged := []struct {
		who     *client
		subject string
	}{
		{gw, proto.ReportSubject("us", "gw-2")},                // another instance
		{gw, proto.ReportSubject("eu", "gw-1")},                // another region
		{region, proto.ReportSubject("us", "x")},               // a region credential, other region
		{gw, proto.SnapshotSubject(proto.ClusterScope())},      // a gateway forging a snapshot
		{edge, proto.SnapshotSubject(proto.ClusterScope())},    // an edge forging a snapshot
		{edge, proto.ReportSubject("us", "gw-1")},              // an edge forging a report
		{agg, proto.ReportSubject("us", "gw-1")},               // an aggregator forging a report
		{region, proto.RollupSubject(proto.RegionScope("eu"))}, // a gateway forging a rollup
	}
	for _, f := range forged {
		if err := f.who.Publish(f.subject, testReport("us", "gw-2", 1, 1<<60)); err != nil {
			t.Fatal(err)
		}
		f.who.wantViolation(t, f.subject)
	}
	// Controls, published after the forgeries: allowed subjects arrive, and
	// they are the first and only messages on each subscription.
	if err := gw.Publish(proto.ReportSubject("us", "gw-1"), testReport("us", "gw-1", 1, 5)); err != nil {
		t.Fatal(err)
	}
	if err := region.Publish(proto.ReportSubject("eu", "any"), testReport("eu", "any", 1, 6)); err != nil {
		t.Fatal(err)
	}
	if err := agg.Publish(proto.SnapshotSubject(proto.ClusterScope()), []byte("from the aggregator")); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{proto.ReportSubject("us", "gw-1"): true, proto.ReportSubject("eu", "any"): true}
	for range 2 {
		m, err := reports.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("report subscription: %v", err)
		}
		if !want[m.Subject] {
			t.Fatalf("report subscription got %s, want only the allowed subjects", m.Subject)
		}
		delete(want, m.Subject)
	}
	if m, err := snaps.NextMsg(10 * time.Second); err != nil || string(m.Data) != "from the aggregator" {
		t.Fatalf("snapshot subscription: %v %v, want only the aggregator's", m, err)
	}
	// A gateway may not even listen.
	if _, err := gw.SubscribeSync(proto.SnapshotSubjectAll); err == nil {
		gw.wantViolation(t, proto.SnapshotSubjectAll)
	}
}

// TestOnlyTheOperatorAdministersStreams: an edge and an aggregator can
// neither purge nor delete the history stream, nor overwrite the leader
// lease from an edge; the operator can.
func TestOnlyTheOperatorAdministersStreams(t *testing.T) {
	n, dir := secureNode(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	jsOf := func(c *client) jetstream.JetStream {
		js, err := jetstream.New(c.Conn)
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	agg := jsOf(mustDial(t, n, dir, "aggregator"))
	if _, err := history.EnsureStream(ctx, agg, history.StreamConfig{}); err != nil {
		t.Fatalf("aggregator ensures the history stream: %v", err)
	}
	short, scancel := context.WithTimeout(ctx, 3*time.Second)
	defer scancel()
	for _, who := range []string{"edge", "aggregator", "gateway.eu"} {
		js := jsOf(mustDial(t, n, dir, who))
		if err := js.DeleteStream(short, proto.HistoryStream); err == nil {
			t.Errorf("%s deleted the history stream", who)
		}
		if _, err := js.CreateKeyValue(short, jetstream.KeyValueConfig{Bucket: "EVIL"}); err == nil {
			t.Errorf("%s created a bucket", who)
		}
	}
	edgeNC := mustDial(t, n, dir, "edge")
	if err := edgeNC.Publish("$JS.API.STREAM.PURGE."+proto.HistoryStream, nil); err != nil {
		t.Fatal(err)
	}
	edgeNC.wantViolation(t, "$JS.API.STREAM.PURGE."+proto.HistoryStream)
	if err := edgeNC.Publish("$KV."+aggregator.LeaseBucket+".leader", []byte("edge")); err != nil {
		t.Fatal(err)
	}
	edgeNC.wantViolation(t, "$KV."+aggregator.LeaseBucket)
	if err := jsOf(mustDial(t, n, dir, "operator")).DeleteStream(ctx, proto.HistoryStream); err != nil {
		t.Fatalf("operator deletes the history stream: %v", err)
	}
}
