package main

import (
	"github.com/urfave/cli/v2"

	"github.com/meridian-metrics/meridian/gateway/demo"
)

type upstreamConfig struct {
	Listen string
}

func upstreamCommand() *cli.Command {
	var cfg upstreamConfig
	return &cli.Command{
		Name:  "upstream",
		Usage: "run the demo upstream service that gateways proxy to (for demos and drills)",
		Description: "Answers every path with a small JSON body after 5–40 ms. ?status=NNN answers with that status,\n" +
			"?delay=25ms with that latency (at most 10s).",
		Flags: bindEnv([]cli.Flag{
			&cli.StringFlag{Name: "listen", Value: ":9000", Usage: "listen address", Destination: &cfg.Listen},
		}),
		Action: func(c *cli.Context) error {
			log, err := newLogger(c)
			if err != nil {
				return err
			}
			ln, err := listenFlag("listen", cfg.Listen)
			if err != nil {
				return err
			}
			return serveListener(c.Context, ln, demo.Handler(demo.Config{}), log.With("role", "upstream"))
		},
	}
}
