package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Default admin addresses (/metrics, /healthz, /readyz) of the roles whose
// main port serves something else. They differ so that one of each role
// can share a host; a second process of the same role needs its own. They
// are on loopback: metrics reveal traffic and topology, so exposing them is
// a deliberate choice (containers pass ":<port>").
const (
	defaultGatewayAdminListen    = "127.0.0.1:9101"
	defaultAggregatorAdminListen = "127.0.0.1:9102"
	defaultNATSMetricsListen     = "127.0.0.1:7777"
	defaultEdgeAdminListen       = "127.0.0.1:9103"
)

// portsNote is the line of a role's --help naming the ports it binds.
func portsNote(ports string) string {
	return "Binds " + ports + ".\nA second process of the same role on one host needs other ports; a taken port\n" +
		"ends the process with exit code 1 before it serves anything."
}

// newRegistry is a process's own registry: Go runtime and process figures
// plus whatever the roles register. Nothing uses the global registry.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// registerNATSClient exports a role's NATS client connection state, so
// Prometheus can alert on a process cut off from NATS (which otherwise looks
// like silence).
func registerNATSClient(reg prometheus.Registerer, namespace, client string, nc *nats.Conn) {
	labels := prometheus.Labels{"client": client}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Subsystem: "nats_client", Name: "connected", ConstLabels: labels,
			Help: "1 while this process's NATS client connection is up.",
		}, func() float64 {
			if nc.IsConnected() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "nats_client", Name: "reconnects_total", ConstLabels: labels,
			Help: "Times this process's NATS client reconnected.",
		}, func() float64 { return float64(nc.Stats().Reconnects) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "nats_client", Name: "slow_consumer_events_total", ConstLabels: labels,
			Help: "Times one of this process's NATS subscriptions fell behind and the client dropped messages for it (logged once a minute per subscription).",
		}, countSlowConsumers(nc)),
	)
}

// readyCheck says whether a role can do its job, and if not, why: the
// signature of every role's Ready method.
type readyCheck func() (reason string, ok bool)

// natsReady is ready while the connection is up.
func natsReady(nc *nats.Conn) readyCheck {
	return func() (string, bool) {
		if !nc.IsConnected() {
			return "not connected to NATS (" + nc.Status().String() + ")", false
		}
		return "", true
	}
}

// metricsMux serves /metrics. The edge serves it beside its own /healthz
// and /readyz, which answer from Edge.Ready.
func metricsMux(reg *prometheus.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: false}))
	return mux
}

// adminMux serves /metrics, /healthz and /readyz.
func adminMux(reg *prometheus.Registry, ready readyCheck) *http.ServeMux {
	mux := metricsMux(reg)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if reason, ok := ready(); !ok {
			http.Error(w, "not ready: "+reason, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// listenFlag binds the address a flag names. Roles bind every port before
// they start anything, so that a taken port ends the process (exit 1)
// before it serves or publishes.
func listenFlag(flag, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", flag, err)
	}
	return ln, nil
}

// serveListener serves h on ln until ctx ends, then shuts down gracefully.
func serveListener(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("http listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
