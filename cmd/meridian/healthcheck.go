package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/urfave/cli/v2"
)

type healthcheckConfig struct {
	Timeout time.Duration
}

// healthcheckCommand exists for container healthchecks: the image is FROM
// scratch, with no shell or curl, so the binary checks itself.
func healthcheckCommand() *cli.Command {
	var cfg healthcheckConfig
	return &cli.Command{
		Name:      "healthcheck",
		Usage:     "GET a health URL; exit 0 on HTTP 200, 1 otherwise (for container healthchecks)",
		ArgsUsage: "URL",
		Flags: bindEnv([]cli.Flag{
			&cli.DurationFlag{Name: "timeout", Value: 2 * time.Second, Usage: "request timeout", Destination: &cfg.Timeout},
		}),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError("healthcheck takes one URL, e.g. http://127.0.0.1:9102/readyz")
			}
			url := c.Args().First()
			ctx, cancel := context.WithTimeout(c.Context, cfg.Timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return usageError("healthcheck %q: %v", url, err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return cli.Exit(fmt.Sprintf("unhealthy: %v", err), 1)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			if resp.StatusCode != http.StatusOK {
				return cli.Exit(fmt.Sprintf("unhealthy: %s: %s", resp.Status, body), 1)
			}
			return nil
		},
	}
}
