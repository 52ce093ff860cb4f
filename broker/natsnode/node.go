// Package natsnode runs an embedded NATS server with JetStream, for
// `meridian dev`, `meridian nats` and tests.
//
// A Node is started once and shut down once; Shutdown is idempotent and safe
// to call from any goroutine. The embedded server never installs signal
// handlers and never exits the process: start failures (JetStream included)
// come back as errors from Start.
package natsnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/meridian-metrics/meridian/broker/service"
)

// Defaults for zero Config fields.
const (
	DefaultHost         = "127.0.0.1"
	DefaultPort         = 4222
	DefaultReadyTimeout = 10 * time.Second
	// DefaultNamespace prefixes the Collector's metric names in Meridian.
	DefaultNamespace = "meridian"
	// DefaultURL is where clients find a Node with the default host and
	// port.
	DefaultURL = nats.DefaultURL
)

// Config configures a Node. Zero fields take the documented defaults.
type Config struct {
	// Name is the server name, unique within a cluster. Default: generated.
	Name string
	// Host and Port are the client listen address. Default DefaultHost and
	// DefaultPort; Port -1 picks a free port (tests).
	Host string
	Port int
	// DontListen serves in-process clients only (see Node.Connect).
	DontListen bool
	// StoreDir is where JetStream keeps its data. Required unless
	// DisableJetStream is set.
	StoreDir         string
	DisableJetStream bool
	// ClusterName, ClusterHost/ClusterPort and Routes make the server a member
	// of a NATS cluster; empty ClusterName means standalone.
	ClusterName string
	ClusterHost string
	ClusterPort int
	Routes      []string
	// MonitorPort serves NATS' own HTTP monitoring (/varz, /jsz) when > 0.
	MonitorPort int
	// LameDuck is how long Shutdown spends in lame-duck mode, letting clients
	// move to other cluster members before the server stops. Default 0: stop
	// at once (fine for a single dev node).
	LameDuck time.Duration
	// ReadyTimeout bounds Start. Default DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// Logger receives the server's log. Default: slog.Default().
	Logger *slog.Logger

	// AuthConfig is a NATS configuration file whose authorization block
	// (users, nkeys, token) is loaded, e.g. one written by natsauth; empty
	// lets any client in. Only that block is used: listen addresses, TLS
	// and cluster settings come from this Config.
	AuthConfig string
	// TLSCert and TLSKey serve TLS on the client port and, in a cluster, on
	// the route port. TLSCA verifies peers: route peers always (whose
	// certificate must name a host of the route URLs), clients when
	// VerifyClients is set (mutual TLS).
	TLSCert, TLSKey, TLSCA string
	VerifyClients          bool
}

// Node is an embedded NATS server.
type Node struct {
	cfg      Config
	ns       *server.Server
	logger   *serverLogger
	stopOnce sync.Once
}

// Validate reports the first problem with cfg that no default repairs.
// Port may be -1 (a free port); other numbers must not be negative.
func (c Config) Validate() error {
	if !c.DisableJetStream && c.StoreDir == "" {
		return errors.New("StoreDir is required with JetStream")
	}
	if c.Port < -1 {
		return fmt.Errorf("Port %d: want -1 (any free port), 0 (default) or a port number", c.Port)
	}
	return service.First(
		service.NonNegative("ClusterPort", c.ClusterPort),
		service.NonNegative("MonitorPort", c.MonitorPort),
		service.NonNegative("LameDuck", c.LameDuck),
		service.NonNegative("ReadyTimeout", c.ReadyTimeout),
		c.validateSecurity(),
	)
}

// withDefaults fills zero fields; call it after Validate.
func (c Config) withDefaults() Config {
	if c.Host == "" {
		c.Host = DefaultHost
	}
	if c.Port == 0 {
		c.Port = DefaultPort
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// New validates cfg and builds the server without starting it.
func New(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new nats node: %w", err)
	}
	cfg = cfg.withDefaults()
	opts, err := buildOptions(&cfg)
	if err != nil {
		return nil, fmt.Errorf("new nats node: %w", err)
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("new nats node: %w", err)
	}
	l := &serverLogger{log: cfg.Logger.With("component", "nats")}
	ns.SetLoggerV2(l, false, false, false)
	return &Node{cfg: cfg, ns: ns, logger: l}, nil
}

// buildOptions turns a validated Config into fresh server options: the
// server keeps and mutates the value it is given, so every server and every
// reload gets its own.
func buildOptions(cfg *Config) (*server.Options, error) {
	// A fresh Options per server: the server keeps and mutates it.
	opts := &server.Options{
		ServerName:          cfg.Name,
		Host:                cfg.Host,
		Port:                cfg.Port,
		DontListen:          cfg.DontListen,
		NoSigs:              true,
		JetStream:           !cfg.DisableJetStream,
		StoreDir:            cfg.StoreDir,
		HTTPHost:            cfg.Host,
		HTTPPort:            cfg.MonitorPort,
		LameDuckDuration:    cfg.LameDuck,
		LameDuckGracePeriod: cfg.LameDuck / 2,
		MaxPayload:          1 << 20,
	}
	if cfg.MonitorPort <= 0 {
		opts.HTTPPort = 0
		opts.HTTPHost = ""
	}
	if cfg.ClusterName != "" {
		opts.Cluster.Name = cfg.ClusterName
		opts.Cluster.Host = cfg.ClusterHost
		if opts.Cluster.Host == "" {
			opts.Cluster.Host = cfg.Host
		}
		opts.Cluster.Port = cfg.ClusterPort
		if len(cfg.Routes) > 0 {
			routes := ""
			for i, r := range cfg.Routes {
				if i > 0 {
					routes += ","
				}
				routes += r
			}
			opts.Routes = server.RoutesFromStr(routes)
			if len(opts.Routes) != len(cfg.Routes) {
				return nil, fmt.Errorf("parse routes %q", cfg.Routes)
			}
		}
	}
	if err := secure(opts, cfg); err != nil {
		return nil, err
	}
	return opts, nil
}

// Start starts the server and waits until it accepts clients and, unless
// disabled, JetStream is up.
func (n *Node) Start(ctx context.Context) error {
	n.ns.Start()
	deadline := n.cfg.ReadyTimeout
	if d, ok := ctx.Deadline(); ok && time.Until(d) < deadline {
		deadline = time.Until(d)
	}
	if !n.ns.ReadyForConnections(deadline) {
		n.Shutdown(context.Background())
		if err := n.logger.fatal(); err != nil {
			return fmt.Errorf("start nats server: %w", err)
		}
		return fmt.Errorf("start nats server: not ready for connections after %s", deadline)
	}
	if err := n.logger.fatal(); err != nil {
		n.Shutdown(context.Background())
		return fmt.Errorf("start nats server: %w", err)
	}
	if !n.cfg.DisableJetStream && !n.ns.JetStreamEnabled() {
		n.Shutdown(context.Background())
		return errors.New("start nats server: JetStream did not start")
	}
	return nil
}

// ClientURL is the URL clients connect to ("" with DontListen).
func (n *Node) ClientURL() string {
	if n.cfg.DontListen {
		return ""
	}
	addr := n.ns.Addr()
	if addr == nil {
		return ""
	}
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return "nats://" + addr.String()
	}
	return "nats://" + net.JoinHostPort(n.cfg.Host, strconv.Itoa(tcp.Port))
}

// Connect opens an in-process client connection (no TCP), which works with
// DontListen too.
func (n *Node) Connect(opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.InProcessServer(n.ns)}, opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("connect in-process: %w", err)
	}
	return nc, nil
}

// Ready reports whether the server accepts clients and, unless disabled,
// runs JetStream; the reason says what is missing.
func (n *Node) Ready() (reason string, ok bool) {
	switch {
	case !n.ns.Running():
		return "server not running", false
	case !n.cfg.DisableJetStream && !n.ns.JetStreamEnabled():
		return "JetStream not running", false
	case n.cfg.ClusterName != "" && len(n.cfg.Routes) > 0 && n.ns.NumRoutes() == 0:
		return "no cluster route connected", false
	}
	return "", true
}

// Server exposes the embedded server, e.g. for its statistics.
func (n *Node) Server() *server.Server { return n.ns }

// Shutdown stops the server, in lame-duck mode first when configured and the
// server listens. It waits for the server to stop or ctx to end.
func (n *Node) Shutdown(ctx context.Context) error {
	n.stopOnce.Do(func() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			if n.cfg.LameDuck > 0 && !n.cfg.DontListen && n.ns.Running() {
				n.ns.LameDuckShutdown()
			} else {
				n.ns.Shutdown()
			}
			n.ns.WaitForShutdown()
		}()
		select {
		case <-done:
		case <-ctx.Done():
		}
	})
	return nil
}

// serverLogger adapts the server's logger to slog and turns Fatalf into an
// error that Start reports, instead of os.Exit.
type serverLogger struct {
	log *slog.Logger
	mu  sync.Mutex
	err error
}

func (l *serverLogger) fatal() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

func (l *serverLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Debugf(format string, v ...any)  {}
func (l *serverLogger) Tracef(format string, v ...any)  {}
func (l *serverLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg)
	l.mu.Lock()
	if l.err == nil {
		l.err = errors.New(msg)
	}
	l.mu.Unlock()
}
