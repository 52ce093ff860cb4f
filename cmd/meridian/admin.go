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
	)
}

// readyCheck says whether a role can do its job, and if not, why.
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

// allReady is ready when every check is.
func allReady(checks ...readyCheck) readyCheck {
	return func() (string, bool) {
		for _, c := range checks {
			if reason, ok := c(); !ok {
				return reason, false
			}
		}
		return "", true
	}
}

// adminMux serves /metrics, /healthz and /readyz.
func adminMux(reg *prometheus.Registry, ready readyCheck) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: false}))
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

// serveHTTP serves h on addr until ctx ends, then shuts down gracefully.
func serveHTTP(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	return serveListener(ctx, ln, h, log)
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

// Admin endpoints (/metrics, /healthz, /readyz) listen on loopback unless
// configured otherwise: metrics reveal traffic and topology, so exposing
// them is a deliberate choice (containers pass ":<port>").
const (
	DefaultGatewayAdminListen = "127.0.0.1:9101"
	DefaultAggregatorListen   = "127.0.0.1:9102"
	DefaultNATSMetricsListen  = "127.0.0.1:7777"
)
