// Command meridian is Meridian's single binary: every role (gateway,
// aggregator, edge, NATS node), the all-in-one `meridian dev`, and the tools
// (`watch`, `loadgen`). Each subcommand lives in its own file; every flag can
// also be set through the environment as MERIDIAN_<FLAG> (dashes become
// underscores, e.g. --nats-url ↔ MERIDIAN_NATS_URL).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the CLI and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := newApp(stdout, stderr)
	if err := app.RunContext(ctx, args); err != nil {
		fmt.Fprintf(stderr, "meridian: %v\n", err)
		if ec, ok := err.(cli.ExitCoder); ok && ec.ExitCode() != 0 {
			return ec.ExitCode()
		}
		return 1
	}
	return 0
}

func newApp(stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:  "meridian",
		Usage: "clustered real-time metrics broker: gateways → NATS → aggregators → edges → /ws/metrics",
		Description: "Gateways count their own traffic and publish it to NATS; aggregators merge it into\n" +
			"cluster-wide snapshots kept in JetStream; edges stream them to WebSocket clients speaking\n" +
			"the Kairos /ws/metrics protocol. Start with `meridian dev`.",
		Writer:    stdout,
		ErrWriter: stderr,
		Flags:     bindEnv(logFlags()),
		// Reject bad global flags before any command starts work.
		Before: func(c *cli.Context) error {
			_, err := newLogger(c)
			return err
		},
		Commands: []*cli.Command{
			devCommand(),
			gatewayCommand(),
			collectCommand(),
			aggregatorCommand(),
			edgeCommand(),
			natsCommand(),
			secretsCommand(),
			watchCommand(),
			loadgenCommand(),
			upstreamCommand(),
			healthcheckCommand(),
			benchCommand(),
			tokenCommand(),
			edgeSecretsCommand(),
		},
		// Errors are printed once, by run.
		ExitErrHandler: func(*cli.Context, error) {},
	}
}
