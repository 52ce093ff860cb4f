package main

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/urfave/cli/v2"

	"github.com/meridian-metrics/meridian/broker/natsnode"
)

// natsURLFlag is every role's --nats-url.
func natsURLFlag(dest *string) cli.Flag {
	return &cli.StringFlag{Name: "nats-url", Value: natsnode.DefaultURL, Usage: "NATS server URL(s), comma-separated", Destination: dest}
}

// connectNATS opens the client connection a role uses. It never gives up:
// a role started before its NATS server (docker compose) connects when the
// server appears, and reconnects after any outage.
func connectNATS(url, name string, log *slog.Logger) (*nats.Conn, error) {
	nc, err := nats.Connect(url,
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.PingInterval(5*time.Second),
		nats.MaxPingsOutstanding(2),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrl()) }),
		nats.ConnectHandler(func(nc *nats.Conn) { log.Info("nats connected", "url", nc.ConnectedUrl()) }),
		nats.ErrorHandler(newNATSErrorLog(log, time.Now).handle),
	)
	if err != nil {
		return nil, fmt.Errorf("connect to nats %s: %w", url, err)
	}
	return nc, nil
}
